"""Benchmark: one LKTD inner step against one Adam DQN update, same network and batch, same run.

All are timed inside a jitted ``lax.scan`` of many steps (as they run in the agents), so Python
dispatch is excluded; repeats are interleaved and the median is reported.  Rows:

- lktd_stage / kappa: one LKTD training stage (Gibbs draw of xi, its forward pass, the stage's
  noise drawn at once, kappa = 5 inner steps) divided by kappa: the inner step as the agent pays it;
- lktd_inner_step: one inner step alone, drawing its own noise;
- dqn_adam_update: one DQN update (double-DQN target from a target network, Adam).

    .venv/bin/python experiments/bench_inner_step.py [--hidden 32 32] [--batch 100] [--steps 2000]
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
from lktd_ppl.nets import take_action
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

    # --- LKTD inner step on the paper's model (models/mlp_q.py: SARSA, spike-and-slab prior)
    import models.mlp_q as mlp_q  # the shipped model file, with HIDDEN overridden for --hidden

    mlp_q.HIDDEN = hidden
    model = getattr(mlp_q, f"sarsa_{args.prior}")
    ssm = lktd_ppl.from_numpyro(model, batch)
    cfg = SamplerConfig(pseudo_population=10_000.0, step_size=1e-5, alpha=0.9)
    state0 = LKTDState(0.1 * jax.random.normal(jax.random.key(1), (ssm.p,)), batch["reward"])
    kernel = lktd(ssm, cfg)

    block = 50  # stages whose noise is drawn at once, as lktd_ppl.sample and the agents do

    @jax.jit
    def lktd_stages(state, key):
        def run_block(s, key_b):
            z = standard_normal(key_b, (block, kernel.noise_size))
            s, _ = jax.lax.scan(lambda s, z_t: (kernel.step(None, s, batch, z_t)[0], None), s, z)
            return s, None

        num_blocks = max(1, args.steps // (cfg.kappa * block))
        s, _ = jax.lax.scan(run_block, state, jax.random.split(key, num_blocks))
        return s

    @jax.jit
    def lktd_run(state, key):
        def body(s, key_k):
            return inner_step(ssm, cfg, s, batch, cfg.step_size, key=key_k), None

        s, _ = jax.lax.scan(body, state, jax.random.split(key, args.steps))
        return s

    # --- DQN: Adam, double-DQN target over legal actions from a target network
    sizes = [2, *hidden, 4]
    params0 = init_mlp(jax.random.key(2), sizes)
    opt = optax.adam(1e-3)
    opt0 = opt.init(params0)

    def dqn_loss(params, target, b):
        q = take_action(mlp(params, b["obs"]), b["action"])
        q_next_online = jnp.where(b["next_mask"] > 0, mlp(params, b["next_obs"]), -jnp.inf)
        a_star = jnp.argmax(q_next_online, axis=-1)
        q_next = take_action(mlp(target, b["next_obs"]), a_star)
        y = b["reward"] + 0.9 * (1.0 - b["terminated"]) * jax.lax.stop_gradient(q_next)
        return jnp.mean((q - y) ** 2)

    @jax.jit
    def dqn_run(carry, key):
        def body(c, _):
            params, target, opt_state = c
            grads = jax.grad(dqn_loss)(params, target, batch)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), target, opt_state), None

        c, _ = jax.lax.scan(body, carry, None, length=args.steps)
        return c

    runs = {
        "lktd_stage/kappa": (lktd_stages, state0),
        "lktd_inner_step": (lktd_run, state0),
        "dqn_adam_update": (dqn_run, (params0, params0, opt0)),
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
        print(f"{k:>18}: {v * 1e6:8.1f} us/step (median of {args.repeats} x {args.steps} steps)")
    for k in ["lktd_stage/kappa", "lktd_inner_step"]:
        print(f"ratio {k} / dqn_adam_update = {med[k] / med['dqn_adam_update']:.2f}")


if __name__ == "__main__":
    main()
