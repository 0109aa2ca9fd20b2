"""Speed of the divergence guard: a harness from before it (a git revision) against this checkout's,
in one process, calls interleaved, compilation excluded (a warm-up call each).

    python experiments/bench_divergence_overhead.py escape 50000 6 --algo lktd --base 148da72
    python experiments/bench_divergence_overhead.py control 20000 6 --algo dqn --base 148da72
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl import config, training

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"escape": "lktd_ppl/agents/harness.py", "control": "lktd_ppl/agents/control.py"}


def old_module(task: str, rev: str):
    """The harness module of ``task`` as it was at git revision ``rev``."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{MODULES[task]}"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"{task}_base.py"
    path.write_bytes(text)
    spec = importlib.util.spec_from_file_location(f"{task}_base", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=sorted(MODULES))
    p.add_argument("steps", type=int)
    p.add_argument("reps", type=int)
    p.add_argument("--algo", default="lktd")
    p.add_argument("--base", default="148da72", help="a revision from before the guard")
    a = p.parse_args()
    base = old_module(a.task, a.base)
    if a.task == "escape":
        from lktd_ppl.agents import harness as new

        spec = config.build_spec(algo=a.algo, steps=a.steps, seeds=1)
        learner = training.make_learner(spec)
        fns = {
            "before": base.make_train(spec.escape, learner),
            "guard": new.make_train(spec.escape, learner),
        }
    else:
        from lktd_ppl.agents import control as new

        sets = ["control.eval_every=5000"]
        spec = config.build_spec(algo=a.algo, env="CartPole-v1", steps=a.steps, sets=sets)
        learner = training.make_learner(spec)
        fns = {
            "before": base.make_control_train(spec.control, learner),
            "guard": new.make_control_train(spec.control, learner),
        }
    keys = jnp.stack([jax.random.key(0)])
    for f in fns.values():
        f(keys, progress=False)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(a.reps):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f(keys, progress=False)["state"])
            times[k].append(time.perf_counter() - t)
    for k, v in times.items():
        print(
            f"{a.task} {a.algo} {a.steps} steps, {k}: min {min(v):.3f} s, median {np.median(v):.3f} s"
        )
    b, g = times["before"], times["guard"]
    print(
        f"ratio guard/before: min {min(g) / min(b):.3f}, median {np.median(g) / np.median(b):.3f}"
    )


if __name__ == "__main__":
    main()
