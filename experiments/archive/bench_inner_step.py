"""Benchmark: one LKTD inner step against one Adam DQN update, same network and batch, same run.

All are timed inside a jitted ``lax.scan`` of many steps (as they run in the agents), so Python
dispatch is excluded; repeats are interleaved and the median is reported.  Every update gets a fresh
minibatch (cycled from NUM_BATCHES pre-drawn ones) and DQN's target network is a real carry, synced
every TARGET_PERIOD updates: with one fixed batch XLA hoists the target network's forward pass out
of the loop (it is loop-invariant), which would time a DQN update without its third forward pass.
Rows:

- lktd_stage / kappa: one LKTD training stage (one forward pass serving the Gibbs draw of xi and
  the first inner step, then kappa = 5 inner steps) divided by kappa, with the noise drawn for 50
  stages at once (as ``lktd_ppl.sample`` does) and passed in: the hand-written explicit-noise
  form of the moves;
- lktd_stage_key / kappa: the same with each stage given its own key (as the RL agents run it):
  the product path, BlackJAX's SGLD drawing with ``jax.random.normal`` from fast keys;
- lktd_inner_step: one inner step alone, from its own key (keys split beforehand; the step splits
  it once more for the analysis noise);
- dqn_adam_update: one DQN update (double-DQN target from a target network, Adam), written with
  the same network code as the LKTD model (``lktd_ppl.nets``: fused first layer, output layer
  evaluated at the chosen action where one action is needed), so the ratio compares algorithms;
- dqn_plain_matmuls: the same DQN update with ``x @ w + b`` layers and the full output table (for
  reference: what the network code saves).

    .venv/bin/python experiments/bench_inner_step.py [--hidden 32 32] [--batch 100] [--steps 2000]

Settings (named): N = 10 000, eps0 = 1e-5, alpha = 0.9, kappa = 5, default (consistent) mode.
Old against new: run it alternately with ``PYTHONPATH=<worktree of the old code>`` and without
(see ``experiments/results/bench_inner_step.md``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lktd_ppl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shipped models/ folder
from lktd_ppl.filter import LKTDState, SamplerConfig, inner_step, lktd
from lktd_ppl.nets import mlp_apply, mlp_apply_at, take_action
from lktd_ppl.rng import standard_normal


def rl_batch(n: int, key: jax.Array, num_actions: int = 4) -> dict:
    k = jax.random.split(key, 6)
    return {
        "obs": jax.random.uniform(k[0], (n, 2)),
        "action": jax.random.randint(k[1], (n,), 0, num_actions),
        "reward": -1.0 + 0.1 * jax.random.normal(k[2], (n,)),
        "next_obs": jax.random.uniform(k[3], (n, 2)),
        "next_action": jax.random.randint(k[4], (n,), 0, num_actions),
        "terminated": jnp.zeros(n),
        "next_mask": jnp.ones((n, num_actions), jnp.int8),
        "stage": jnp.int32(100),
    }


NUM_BATCHES = 64  # distinct minibatches, cycled
TARGET_PERIOD = 100  # DQN target-network sync interval (updates)


def rl_batches(n: int, key: jax.Array, count: int = NUM_BATCHES) -> dict:
    """``count`` minibatches stacked on a leading axis (the stage index is shared)."""
    stacked = jax.vmap(lambda k: rl_batch(n, k))(jax.random.split(key, count))
    return {**stacked, "stage": jnp.int32(100)}


def pick(batches: dict, i: jax.Array) -> dict:
    """The ``i``-th minibatch (cyclically) of a stack made by :func:`rl_batches`."""
    j = i % NUM_BATCHES
    return {k: (v if k == "stage" else v[j]) for k, v in batches.items()}


def init_mlp(key, sizes):
    params = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        key, sub = jax.random.split(key)
        params.append((0.1 * jax.random.normal(sub, (a, b)), jnp.zeros(b)))
    return params


def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2500, help="steps per timed scan")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--prior", choices=["spike_slab", "gaussian"], default="spike_slab")
    args = ap.parse_args()
    hidden = tuple(args.hidden)
    batch = rl_batch(args.batch, jax.random.key(0))
    batches = rl_batches(args.batch, jax.random.key(10))

    # --- LKTD inner step on the paper's model (models/mlp_q.py: SARSA, spike-and-slab prior)
    import models.mlp_q as mlp_q  # the shipped model file, with HIDDEN overridden for --hidden

    mlp_q.HIDDEN = hidden
    model = getattr(mlp_q, f"sarsa_{args.prior}")
    ssm = lktd_ppl.from_numpyro(model, batch)
    cfg = SamplerConfig(
        pseudo_population=10_000.0, step_size=1e-5, alpha=0.9, kappa=5, compat=False
    )
    state0 = LKTDState(0.1 * jax.random.normal(jax.random.key(1), (ssm.p,)), batch["reward"])
    kernel = lktd(ssm, cfg)

    block = 50  # stages whose noise is drawn at once, as lktd_ppl.sample and the agents do

    @jax.jit
    def lktd_stages_key(state, key):  # as the agents run it: each stage draws from its own key
        def stage(s, xs):
            key_t, t = xs
            return kernel.step(key_t, s, pick(batches, t))[0], None

        num_stages = max(1, args.steps // cfg.kappa)
        xs = (jax.random.split(key, num_stages), jnp.arange(num_stages))
        s, _ = jax.lax.scan(stage, state, xs)
        return s

    @jax.jit
    def lktd_stages(state, key):  # as lktd_ppl.sample runs it: noise for `block` stages at once
        def run_block(s, xs):
            key_b, b = xs
            z = standard_normal(key_b, (block, kernel.noise_size))

            def stage(s, xs):
                z_t, t = xs
                return kernel.step(None, s, pick(batches, t), z_t)[0], None

            s, _ = jax.lax.scan(stage, s, (z, b * block + jnp.arange(block)))
            return s, None

        num_blocks = max(1, args.steps // (cfg.kappa * block))
        keys = jax.random.split(key, num_blocks)
        s, _ = jax.lax.scan(run_block, state, (keys, jnp.arange(num_blocks)))
        return s

    @jax.jit
    def lktd_run(state, key):
        def body(s, xs):
            key_k, i = xs
            return inner_step(ssm, cfg, s, pick(batches, i), cfg.step_size, key=key_k), None

        xs = (jax.random.split(key, args.steps), jnp.arange(args.steps))
        s, _ = jax.lax.scan(body, state, xs)
        return s

    # --- DQN: Adam, double-DQN target over legal actions from a target network
    sizes = [2, *hidden, 4]
    params0 = init_mlp(jax.random.key(2), sizes)
    opt = optax.adam(1e-3)
    opt0 = opt.init(params0)

    def make_dqn_loss(q_at, q_all):
        def loss(params, target, b):
            q = q_at(params, b["obs"], b["action"])
            q_next_online = jnp.where(b["next_mask"] > 0, q_all(params, b["next_obs"]), -jnp.inf)
            a_star = jnp.argmax(q_next_online, axis=-1)
            q_next = q_at(target, b["next_obs"], a_star)
            y = b["reward"] + 0.9 * (1.0 - b["terminated"]) * jax.lax.stop_gradient(q_next)
            return jnp.mean((q - y) ** 2)

        return loss

    dqn_loss = make_dqn_loss(mlp_apply_at, mlp_apply)
    plain_loss = make_dqn_loss(lambda p, x, a: take_action(mlp(p, x), a), mlp)

    def make_dqn_run(loss):
        @jax.jit
        def run(carry, key):
            def body(c, i):
                params, target, opt_state = c
                grads = jax.grad(loss)(params, target, pick(batches, i))
                updates, opt_state = opt.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                target = optax.periodic_update(params, target, i + 1, TARGET_PERIOD)
                return (params, target, opt_state), None

            c, _ = jax.lax.scan(body, carry, jnp.arange(args.steps))
            return c

        return run

    runs = {
        "lktd_stage/kappa": (lktd_stages, state0),
        "lktd_stage_key/kappa": (lktd_stages_key, state0),
        "lktd_inner_step": (lktd_run, state0),
        "dqn_adam_update": (make_dqn_run(dqn_loss), (params0, params0, opt0)),
        "dqn_plain_matmuls": (make_dqn_run(plain_loss), (params0, params0, opt0)),
    }
    for fn, init in runs.values():  # compile
        jax.block_until_ready(fn(init, jax.random.key(3)))
    times = {name: [] for name in runs}
    for r in range(args.repeats):
        for name, (fn, init) in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(init, jax.random.key(r)))
            times[name].append((time.perf_counter() - t) / args.steps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
        f"jax {jax.__version__}; network {list(hidden)} (p = {ssm.p}), batch {args.batch}"
    )
    for k, v in med.items():
        print(f"{k:>22}: {v * 1e6:8.1f} us/step (median of {args.repeats} x {args.steps} steps)")
    for k in ["lktd_stage/kappa", "lktd_stage_key/kappa", "lktd_inner_step"]:
        print(f"ratio {k} / dqn_adam_update = {med[k] / med['dqn_adam_update']:.2f}")


if __name__ == "__main__":
    main()
