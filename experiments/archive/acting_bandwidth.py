"""Why CartPole acting over 256 vmapped seeds stays far from 20x one seed's steps per second on this
CPU (``lktd experiment bench``, cartpole rows): every seed acts on its own Q network, so each
vmapped step reads all the seeds' weights, and that read is bounded by memory bandwidth.

Measures, in one process, compiled first, best of 5:
- the LKTD learner's greedy Q forward alone (no environment, no random draws), 1/16/256 seeds
  vmapped, each seed its own network, 2000 sequential steps per seed;
- the bench's acting + environment rows (``cartpole_acting``) at the same seed counts;
- this core's streaming bandwidth: a jitted sum over a float32 array the size of 256 seeds'
  networks, repeated (the best case: the weights stay in cache if they can).
Writes a Markdown report (default ``experiments/archive/results/acting_bandwidth.md``).

    .venv/bin/python experiments/archive/acting_bandwidth.py
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lktd_ppl.nets import mlp_apply
from lktd_ppl.study.bench_scale import cartpole_acting, cartpole_spec
from lktd_ppl.training import make_learner

STEPS = 2000
SEEDS = (1, 16, 256)
OUT = Path(__file__).resolve().parent / "results" / "acting_bandwidth.md"


def best_of(fn, arg, repeats: int = 5) -> float:
    jax.block_until_ready(fn(arg))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t)
    return min(times)


def forward_only(learner, obs_dim: int):
    """keys -> sums: STEPS greedy forwards per seed, each step's input the last output's sum."""

    def one(key):
        state = learner.init(key)

        def step(x, _):
            q = learner.q_values(state, 0, x[None])[0]
            return x * 0.99 + 0.01 * jnp.sum(q), None

        return jax.lax.scan(step, jnp.ones(obs_dim), None, length=STEPS)[0]

    return jax.jit(jax.vmap(one))


def forward_unravelled(learner, obs_dim: int, hidden: tuple[int, ...] = (64, 64), actions: int = 2):
    """As :func:`forward_only`, with the flat weight vector cut into layers once, before the loop
    (the sites ravel in name order: W0, W1, W2, b0, b1, b2), and ``nets.mlp_apply`` in the loop."""
    sizes = [obs_dim, *hidden, actions]
    shapes = [(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)] + [
        (b,) for b in sizes[1:]
    ]

    def one(key):
        theta = learner.init(key).position[0]
        parts, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(theta[start : start + size].reshape(shape))
            start += size
        layers = list(zip(parts[:3], parts[3:], strict=True))

        def step(x, _):
            q = mlp_apply(layers, x[None])[0]
            return x * 0.99 + 0.01 * jnp.sum(q), None

        return jax.lax.scan(step, jnp.ones(obs_dim), None, length=STEPS)[0]

    return jax.jit(jax.vmap(one))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    spec = cartpole_spec(1000, 1)
    learner = make_learner(spec)
    floats = int(np.size(learner.init(jax.random.key(0)).position))  # the Q network's weights
    obs_dim = spec.control.task.obs_dim
    fwd = forward_only(learner, obs_dim)
    cut = forward_unravelled(learner, obs_dim)
    keys = jax.random.split(jax.random.key(1), 3)
    same = np.allclose(fwd(keys), cut(keys), rtol=1e-5)
    rows = {}
    for k in SEEDS:
        keys = jax.random.split(jax.random.key(1), k)
        t_fwd = best_of(fwd, keys) / STEPS
        t_cut = best_of(cut, keys) / STEPS
        t_act = best_of(cartpole_acting(STEPS), keys) / STEPS
        rows[k] = (t_fwd, t_cut, t_act)
    big = jnp.ones(SEEDS[-1] * floats, jnp.float32)
    reps = 200
    summed = jax.jit(lambda a: jax.lax.fori_loop(0, reps, lambda i, s: s + jnp.sum(a * i), 0.0))
    bandwidth = big.nbytes * reps / best_of(summed, big)
    lines = [
        "# CartPole acting over vmapped seeds: the memory-bandwidth bound",
        "",
        "Command: `.venv/bin/python experiments/archive/acting_bandwidth.py`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}; "
        f"{jax.devices()[0].device_kind}, float32; best of 5 after compilation",
        "",
        f"Q-network weights per seed (the LKTD CartPole learner, [64, 64]): {floats:,} floats "
        f"({floats * 4 / 1e3:.1f} kB); 256 seeds: {256 * floats * 4 / 1e6:.2f} MB read per step.",
        f"Streaming sum over {big.nbytes / 1e6:.2f} MB: {bandwidth / 1e9:.1f} GB/s.",
        "",
        "Columns: us per vmapped step (x one seed: steps/s per seed over one seed's). "
        "**learner's forward**: `learner.q_values` (the model's `q` site from the flat weights) "
        "alone; **cut once**: the same network with the flat weights cut into layers before "
        f"the loop (same values: {same}); **acting + env**: the bench's acting row.",
        "",
        "| seeds | learner's forward | x one seed | cut once | x one seed | "
        "acting + env | x one seed |",
        "|---|---|---|---|---|---|---|",
    ]
    f1, c1, a1 = rows[SEEDS[0]]
    for k, (f, c, a) in rows.items():
        lines.append(
            f"| {k} | {f * 1e6:.1f} | {k * f1 / f:.2f} | {c * 1e6:.1f} | {k * c1 / c:.2f} | "
            f"{a * 1e6:.1f} | {k * a1 / a:.2f} |"
        )
    bound = bandwidth / (256 * floats * 4)  # vmapped steps/s if only the weight reads cost
    lines += [
        "",
        f"Bound from the bandwidth alone: {bound:.3g} vmapped steps/s at 256 seeds, "
        f"{256 * bound:.3g} env steps/s, {256 * bound * a1:.2f}x one seed's acting + env "
        "(the target asks for 20x).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
