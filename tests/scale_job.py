"""A tiny run for tests/test_scale.py, in a subprocess: ``python tests/scale_job.py OUT.npz ALGO
ENV DEVICES`` runs the plain path and the seeds split over DEVICES forced host devices in one
process, and saves both runs' per-seed arrays (``plain *`` and ``split *``)."""

from __future__ import annotations

import sys

import numpy as np

from lktd_ppl import scale

SEEDS = 4
ESCAPE = ["escape.window=500", "escape.evals_per_window=2", "escape.sample_size=20"]
ESCAPE += ["escape.train_start=200", "escape.buffer_size=200", "escape.batch_size=20"]
CONTROL = ["control.eval_every=500", "control.train_start=200", "control.buffer_size=200"]
CONTROL += ["control.batch_size=20", "control.eval_episodes=2", "control.best_eval_episodes=2"]


def main(out: str, algo: str, env: str, devices: int) -> None:
    scale.force_host_devices(devices)
    import jax

    from lktd_ppl import training
    from lktd_ppl.config import build_spec

    sets = [*(ESCAPE if env == "escape" else CONTROL), "hidden=8"]
    spec = build_spec(algo=algo, env=env, steps=1000, seeds=SEEDS, sets=sets)
    keys = jax.numpy.stack([jax.random.key(s) for s in spec.seed_list])
    saved = {}
    for name, n in (("plain", None), ("split", devices)):
        res = training.make_train(spec, devices=n)(keys, progress=False)
        saved.update({f"{name} {k}": v for k, v in scale.per_seed_arrays(res).items()})
    np.savez(out, **saved)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
