"""The chains of a seed split over 2 forced host devices, for tests/test_scale.py, in a
subprocess: ``python tests/chain_job.py OUT.npz [run]``.  Saves, for 30 training stages of 4 LKTD
chains on random minibatches, every stage's parameters from one device (``plain``) and from the
split update applied to the same state (``split``); with ``run``, the metrics and parameters of a
short escape run with the chains split (``run_*``) instead."""

from __future__ import annotations

import sys

import numpy as np

from lktd_ppl import scale

STAGES = 30
SETS = ["num_chains=4"]


def stages(out: str) -> None:
    import jax
    import jax.numpy as jnp

    from lktd_ppl import training
    from lktd_ppl.config import build_spec
    from lktd_ppl.study.bench import pick, rl_batches

    batches = rl_batches(100)
    updates = {}
    for n in (1, 2):
        spec = build_spec(algo="lktd", preset="paper", sets=[*SETS, f"chain_devices={n}"])
        learner = training.make_learner(spec)
        updates[n] = jax.jit(learner.update)
    state = learner.init(jax.random.key(3))
    plain, split = [], []
    for i in range(STAGES):
        batch = {**pick(batches, i % 16), "stage": jnp.int32(i)}
        key = jax.random.fold_in(jax.random.key(5), i)
        nxt = updates[1](key, state, batch)
        plain.append(np.asarray(nxt.position))
        split.append(np.asarray(updates[2](key, state, batch).position))
        state = nxt
    np.savez(out, plain=np.stack(plain), split=np.stack(split))


def run(out: str) -> None:
    import jax

    from lktd_ppl import training
    from lktd_ppl.config import build_spec

    escape = ["escape.window=300", "escape.evals_per_window=1", "escape.sample_size=20"]
    escape += ["escape.train_start=100", "escape.buffer_size=200", "escape.batch_size=20"]
    spec = build_spec(algo="lktd", preset="paper", steps=600, sets=[*SETS, *escape])
    spec_split = build_spec(
        algo="lktd", preset="paper", steps=600, sets=[*SETS, "chain_devices=2", *escape]
    )
    saved = {}
    for name, s in (("plain", spec), ("split", spec_split)):
        res = training.make_train(s)(jax.random.key(0)[None], progress=False)
        saved[f"{name}_mse"] = res["metrics"]["mse"]
        saved[f"{name}_position"] = np.asarray(res["state"].learner.position)
    np.savez(out, **saved)


if __name__ == "__main__":
    scale.force_host_devices(2)
    (run if sys.argv[2:] == ["run"] else stages)(sys.argv[1])
