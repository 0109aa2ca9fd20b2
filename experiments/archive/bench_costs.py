"""Cost of one update / training stage for every method, in one run so the ratios hold.

    .venv/bin/python experiments/bench_costs.py [--hidden 32 32] [--hidden2 64 64] [--out FILE]
        [--only lktd sgld sghmc dqn]

Old against new: run it alternately with ``PYTHONPATH=<worktree of the old code>`` and without
(see ``experiments/results/bench_costs.md``).

For each network size: every learner's ``update`` (one training stage: for LKTD, SGLD and SGHMC the
Gibbs draw / kappa = 5 inner steps; for the DQN family one gradient update; for KOVA one EKF step)
timed inside a jitted ``lax.scan``, each update on a fresh minibatch of 100 (cycled from NUM_BATCHES
pre-drawn ones: with one fixed minibatch XLA hoists loop-invariant work such as the DQN target
network's forward pass out of the loop), repeats interleaved, median; the LKTD family's
per-inner-step cost is the stage divided by kappa.  Memory: the bytes of each
learner's state (parameters, optimiser, target network, KOVA's p x p covariance).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


NUM_BATCHES = 64


def batch(n: int = 100, key: jax.Array | None = None) -> dict:
    k = jax.random.split(jax.random.key(0) if key is None else key, 6)
    return {
        "obs": jax.random.uniform(k[0], (n, 2)),
        "action": jax.random.randint(k[1], (n,), 0, 4),
        "reward": -1.0 + 0.1 * jax.random.normal(k[2], (n,)),
        "next_obs": jax.random.uniform(k[3], (n, 2)),
        "next_action": jax.random.randint(k[4], (n,), 0, 4),
        "terminated": jnp.zeros(n),
        "next_mask": jnp.ones((n, 4), jnp.int8),
        "boot_mask": jnp.ones((n, 10), jnp.int8),
        "stage": jnp.int32(100),
    }


def batches(n: int = 100) -> dict:
    """NUM_BATCHES minibatches stacked on a leading axis (one stage index)."""
    keys = jax.random.split(jax.random.key(0), NUM_BATCHES)
    stacked = jax.vmap(lambda k: batch(n, k))(keys)
    return {**stacked, "stage": jnp.int32(100)}


def pick(bs: dict, i: jax.Array) -> dict:
    return {k: (v if k == "stage" else v[i % NUM_BATCHES]) for k, v in bs.items()}


def model_with_hidden(hidden: tuple[int, ...], folder: Path) -> str:
    """A copy of models/mlp_q.py (of the code under test) with another HIDDEN (how a user changes
    the network)."""
    import lktd_ppl

    src = (Path(lktd_ppl.__file__).resolve().parents[1] / "models" / "mlp_q.py").read_text()
    path = folder / f"mlp_q_{'x'.join(map(str, hidden))}.py"
    path.write_text(src.replace("HIDDEN = (32, 32)", f"HIDDEN = {hidden!r}"))
    return f"{path}:sarsa_spike_slab"


def learners(hidden: tuple[int, ...], folder: Path) -> dict:
    from lktd_ppl.agents.bootdqn import BootDQNConfig, make_bootdqn_learner
    from lktd_ppl.agents.dqn import DQNConfig, make_dqn_learner
    from lktd_ppl.agents.harness import EscapeConfig
    from lktd_ppl.agents.kova import KOVAConfig, make_kova_learner
    from lktd_ppl.agents.lktd import LKTDAgentConfig, lktd_learner
    from lktd_ppl.agents.qrdqn import QRDQNConfig, make_qrdqn_learner
    from lktd_ppl.filter import SamplerConfig
    from lktd_ppl.presets import preset

    model = model_with_hidden(hidden, folder)
    # the LKTD family in its default (consistent) mode: the paper preset's sampler, compat off
    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    paper = {k: v for k, v in preset("paper", "lktd").items() if k in fields}
    sampler = SamplerConfig(**{**paper, "compat": False})
    escape = EscapeConfig(batch_size=100)
    out = {}
    for method in ("lktd", "sgld", "sghmc"):
        config = LKTDAgentConfig(model=model, method=method, sampler=sampler, num_chains=1)
        out[method] = lktd_learner(config, escape)
    out["dqn"] = make_dqn_learner(DQNConfig(hidden=hidden))
    out["bootdqn"] = make_bootdqn_learner(BootDQNConfig(hidden=hidden))
    out["qrdqn"] = make_qrdqn_learner(QRDQNConfig(hidden=hidden))
    out["kova"] = make_kova_learner(KOVAConfig(hidden=hidden))
    return out


def time_updates(learner, b: dict, reps: int) -> tuple[float, int]:
    state = learner.init(jax.random.key(1))
    nbytes = sum(x.nbytes for x in jax.tree.leaves(state))

    @jax.jit
    def run(s, key):
        def body(s, xs):
            k, i = xs
            return learner.update(k, s, pick(b, i)), None

        return jax.lax.scan(body, s, (jax.random.split(key, reps), jnp.arange(reps)))[0]

    jax.block_until_ready(run(state, jax.random.key(2)))
    return run, state, nbytes


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--hidden2", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    ap.add_argument("--only", nargs="+", help="time only these methods (lktd is always timed)")
    args = ap.parse_args()
    b = batches()
    lines = [
        f"machine: {platform.machine()}, jax {jax.__version__} ({jax.devices()[0].platform}); "
        "batch 100; median of interleaved repeats",
        "",
        "| network | method | per stage (ms) | per inner step (ms) | vs LKTD inner step | state memory |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in (tuple(args.hidden), tuple(args.hidden2)):
            ls = learners(hidden, Path(tmp))
            if args.only:
                ls = {k: v for k, v in ls.items() if k in {"lktd", *args.only}}
            runs = {}
            for name, learner in ls.items():
                reps = 3 if name == "kova" else 1000
                runs[name] = (*time_updates(learner, b, reps), reps)
            times = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, (run, state, _, reps) in runs.items():
                    t = time.perf_counter()
                    jax.block_until_ready(run(state, jax.random.key(3)))
                    times[name].append((time.perf_counter() - t) / reps)
            med = {k: float(np.median(v)) for k, v in times.items()}
            inner = med["lktd"] / 5
            for name in runs:
                per_inner = med[name] / 5 if name in ("lktd", "sgld", "sghmc") else None
                mem = runs[name][2]
                lines.append(
                    f"| {list(hidden)} | {name} | {med[name] * 1e3:.3f} | "
                    f"{'-' if per_inner is None else f'{per_inner * 1e3:.3f}'} | "
                    f"{med[name] / inner:.1f}x | {mem / 1e6:.2f} MB |"
                )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
