"""The benchmark's scale-out row groups (:mod:`lktd_ppl.study.bench` runs them): chains, seeds
over devices and processes, a seed's chains over devices, CartPole over vmapped seeds, and many
seeds and chains on an accelerator; with the timing helpers every group shares."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lktd_ppl.study.bench_table import DEVICE_ROWS, PENDING, SPLIT_ROWS, Sizes, row

# ---- timing helpers


def median_times(runs: dict[str, tuple[Callable, Any, int]], repeats: int) -> dict[str, float]:
    """Seconds per unit of each jitted ``fn(arg)`` (``name -> (fn, arg, units)``): compiled first,
    then ``repeats`` interleaved calls; the median."""
    import jax

    for fn, arg, _ in runs.values():
        jax.block_until_ready(fn(arg))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (fn, arg, units) in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(arg))
            times[name].append((time.perf_counter() - t) / units)
    return {k: float(np.median(v)) for k, v in times.items()}


# ---- chains, seeds, devices


def escape_train(steps: int, **overrides: Any) -> Callable:
    """The paper preset's ``train(keys, progress)`` in default mode with ``overrides``."""
    from lktd_ppl.config import build_spec
    from lktd_ppl.training import make_train

    agent = {"compat": False, **overrides}
    return make_train(build_spec(algo="lktd", preset="paper", config={"agent": agent}, steps=steps))


def time_call(fn: Callable, *args: Any, **kwargs: Any) -> float:
    import jax

    t = time.perf_counter()
    jax.block_until_ready(fn(*args, **kwargs))
    return time.perf_counter() - t


def bench_chains(sizes: Sizes) -> list[dict]:
    """m chains against one: the seconds of a ``chain_steps``-step run, compiled first (the
    first call's seconds, compilation included, in the setting)."""
    import jax

    key = jax.random.key(0)[None]
    times = {}
    for m in sizes.chain_counts:
        train = escape_train(sizes.chain_steps, num_chains=m)
        first = time_call(train, key, progress=False)
        times[m] = (time_call(train, key, progress=False), first)
    base = times[sizes.chain_counts[0]][0]
    return [
        row(
            "chains",
            f"{m} chain(s)",
            f"{sizes.chain_steps:,} steps, compiled (first call {c:.1f} s)",
            t,
            "s",
            t / base,
            "1 chain",
        )
        for m, (t, c) in times.items()
    ]


def sharding_available() -> bool:
    """Whether this installation has the seed sharding over devices and processes
    (``lktd_ppl.scale``)."""
    import importlib.util

    return importlib.util.find_spec("lktd_ppl.scale") is not None


SHARDED_RUN = """
import json, sys, time
import numpy as np
from lktd_ppl import compile_cache, scale
devices = {devices}
if devices > 1:
    scale.force_host_devices(devices)
scale.initialize_from_env()
compile_cache.enable()
import jax
from lktd_ppl.config import build_spec
from lktd_ppl.training import make_train

def seconds(train, keys, save=None):
    jax.block_until_ready(train(keys, progress=False)["episodes"])  # compile
    t = time.perf_counter()
    results = jax.block_until_ready(train(keys, progress=False))
    spent = time.perf_counter() - t
    if save and scale.is_main_process():  # every seed's numbers, gathered on every process
        np.savez(save, **scale.per_seed_arrays(results))
    return spent

def spec(steps, **agent):
    config = {{"agent": {{"compat": False, **agent}}}}
    return build_spec(algo="lktd", preset="paper", config=config, steps=steps)

keys = jax.random.split(jax.random.key(0), {seeds})
out = {{"seconds": seconds(make_train(spec({steps}), devices=devices), keys, {save!r})}}
if {chains}:  # one seed's chains split over this process's devices (chain_devices)
    split = spec({chain_steps}, num_chains={chains}, chain_devices=devices)
    out["chains"] = seconds(make_train(split), jax.random.key(0)[None])
print(json.dumps(out))
"""


def sharded_run(
    sizes: Sizes, devices: int, processes: int, chains: int = 0, save: str | None = None
) -> dict:
    """Wall seconds of the compiled second call of ``device_seeds`` escape runs sharded over
    ``devices`` forced host devices in each of ``processes`` local processes (jax.distributed
    over 127.0.0.1 when more than one; then process i pinned to core i where there are enough;
    a single process runs unpinned): ``{"seconds": s}``; with ``chains``, also one seed's
    ``chains`` chains split over the ``devices`` (``chain_devices``), in the same process,
    compiled: ``{"chains": s}``.  ``save``: an ``.npz`` path for that call's
    :func:`~lktd_ppl.scale.per_seed_arrays`."""
    import socket

    code = SHARDED_RUN.format(
        save=save,
        devices=devices,
        steps=sizes.device_steps,
        seeds=sizes.device_seeds,
        chains=chains,
        chain_steps=sizes.chain_steps,
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(LKTD_COORDINATOR=f"127.0.0.1:{port}", LKTD_NUM_PROCESSES=str(processes))
    cores = os.cpu_count() or 1
    procs = []
    for i in range(processes):
        env_i = {**env, "LKTD_PROCESS_ID": str(i)} if processes > 1 else env
        # several processes: process i on core i; one process keeps every core for its devices
        pin = (lambda i=i: os.sched_setaffinity(0, {i})) if 1 < processes <= cores else None
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env_i,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=pin,
            )
        )
    outs = [p.communicate() for p in procs]
    if any(p.returncode for p in procs):
        err = next(e for p, (_, e) in zip(procs, outs, strict=True) if p.returncode)
        raise RuntimeError(f"sharded run failed: {err.strip().splitlines()[-1:]}")
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    return {"seconds": max(r["seconds"] for r in results), "chains": results[0].get("chains")}


def chain_split_rows(sizes: Sizes, one: float, split: float) -> list[dict]:
    """Rows of one seed's ``chain_counts[-1]`` chains: ``one`` device (this process, the chains
    rows' program) and ``split`` over 2 forced host devices (compiled seconds; NaN: pending)."""
    m = sizes.chain_counts[-1]
    setting = f"1 seed x {sizes.chain_steps:,} steps, compiled"
    status = PENDING if math.isnan(split) else "measured"
    return [
        row("devices", f"{m} chains, 1 device", setting, one, "s", 1.0, f"{m} chains, 1 device"),
        row(
            "devices",
            f"{m} chains split over 2 forced host devices",
            setting,
            split,
            "s",
            one / split,
            f"{m} chains, 1 device (speed-up)",
            status,
        ),
    ]


def comparison_row(
    name: str, differing: dict[str, float] | None, arrays: int, sizes: Sizes
) -> dict:
    """The row of split run ``name``'s per-seed results against the one-device run's: the
    largest relative difference over every array (0: all equal to the bit), and which arrays
    are not equal to the bit; ``differing`` None: not run (pending)."""
    worst = math.nan if differing is None else max(differing.values(), default=0.0)
    which = ", ".join(sorted(differing or {})) or "none"
    return row(
        "devices",
        f"{name}: per-seed results against 1 device",
        f"{sizes.device_seeds} seeds x {sizes.device_steps:,} steps; arrays not equal to the bit: "
        f"{len(differing or {})} of {arrays} ({which})",
        worst,
        "max relative difference",
        worst,
        "1 device, vmapped",
        PENDING if differing is None else "measured",
    )


def bench_devices(sizes: Sizes) -> list[dict]:
    """The same seeds in one process (vmapped, and one after another), on 2 forced host devices
    and on 2 processes; ratio: throughput over the fastest single-process way.  The split runs'
    per-seed results against the vmapped run's (:func:`comparison_row`).  Without the sharded
    paths (``lktd_ppl.scale``) their rows are pending (NaN)."""
    import tempfile

    import jax

    from lktd_ppl import scale

    k = sizes.device_seeds
    train = escape_train(sizes.device_steps)
    keys = jax.random.split(jax.random.key(0), k)
    time_call(train, keys, progress=False)  # compile
    t = time.perf_counter()
    results = jax.block_until_ready(train(keys, progress=False))
    vmapped = time.perf_counter() - t
    plain = scale.per_seed_arrays(results)
    time_call(train, keys[:1], progress=False)  # compile
    one_by_one = sum(time_call(train, keys[i : i + 1], progress=False) for i in range(k))
    seconds = {"1 device, vmapped": vmapped, "1 device, one after another": one_by_one}
    compared: dict[str, dict[str, float]] = {}  # split run -> arrays not equal to the bit
    split = math.nan
    if sharding_available():
        with tempfile.TemporaryDirectory(prefix="lktd_bench_") as tmp:
            devices, processes = SPLIT_ROWS
            saved = {devices: os.path.join(tmp, "devices.npz")}
            saved[processes] = os.path.join(tmp, "processes.npz")
            m = sizes.chain_counts[-1]
            two = sharded_run(sizes, devices=2, processes=1, chains=m, save=saved[devices])
            seconds[devices], split = two["seconds"], two["chains"]
            two = sharded_run(sizes, devices=1, processes=2, save=saved[processes])
            seconds[processes] = two["seconds"]
            for name, path in saved.items():
                with np.load(path) as z:
                    compared[name] = scale.differences(plain, dict(z))
    # one seed's chains on this process's one device (the chains rows' program)
    chains = escape_train(sizes.chain_steps, num_chains=sizes.chain_counts[-1])
    time_call(chains, jax.random.key(0)[None], progress=False)  # compile (or cache read)
    one_device = time_call(chains, jax.random.key(0)[None], progress=False)
    fastest = min(vmapped, one_by_one)
    setting = f"{k} seeds x {sizes.device_steps:,} steps, compiled"
    rows = []
    for name in DEVICE_ROWS:
        t = seconds.get(name, math.nan)
        status = PENDING if math.isnan(t) else "measured"
        tput = k * sizes.device_steps / t
        rows.append(
            row(
                "devices",
                name,
                setting,
                tput,
                "env steps/s",
                fastest / t,
                "fastest single-process",
                status,
            )
        )
    for name in SPLIT_ROWS:
        rows.append(comparison_row(name, compared.get(name), len(plain), sizes))
    return rows + chain_split_rows(sizes, one_device, split)


# ---- CartPole


def cartpole_spec(steps: int, seeds: int):
    from lktd_ppl.config import build_spec

    control = {
        "eval_every": steps,
        "train_start": 100,
        "eval_episodes": 2,
        "best_eval_episodes": 2,
        "num_probes": 4,
    }
    return build_spec(
        algo="lktd", env="CartPole-v1", config={"control": control}, steps=steps, seeds=seeds
    )


def cartpole_acting(steps: int, greedy: bool = True) -> Callable:
    """A jitted ``keys -> returns``: ``steps`` CartPole steps per seed, no replay and no training,
    vmapped over seeds: epsilon-greedy on the LKTD learner's Q network (untrained; each seed
    its own network), or (``greedy`` False) uniform random actions."""
    import jax
    import jax.numpy as jnp

    from lktd_ppl.agents.harness import epsilon_greedy
    from lktd_ppl.training import make_learner

    spec = cartpole_spec(1000, 1)
    learner = make_learner(spec)
    task = spec.control.task
    env, params = task.env, task.params
    legal = jnp.ones(task.num_actions, jnp.int8)

    def one_seed(key):
        k_init, k_reset, k_run = jax.random.split(key, 3)
        lstate = learner.init(k_init)
        obs, env_state = env.reset(k_reset, params)

        def step(carry, k):
            obs, env_state, total = carry
            k_u, k_env = jax.random.split(k)
            u = jax.random.uniform(k_u, (2,))
            if greedy:
                q = learner.q_values(lstate, 0, obs[None].astype(jnp.float32))
                a = epsilon_greedy(u[0], u[1], q[0], legal, 0.05)
            else:  # uniform random actions: the environment's own cost
                a = jnp.minimum((u[0] * task.num_actions).astype(jnp.int32), task.num_actions - 1)
            obs, env_state, r, _, _, _ = env.step(k_env, env_state, a, params)
            return (obs, env_state, total + r), None

        carry = (obs, env_state, jnp.float32(0))
        return jax.lax.scan(step, carry, jax.random.split(k_run, steps))[0][2]

    return jax.jit(jax.vmap(one_seed))


def seed_rows(label: str, seconds: dict[int, float], steps: int, ratio_to: str) -> list[dict]:
    """CartPole rows from the seconds of ``steps`` steps per seed at each seed count: env
    steps/s, and the ratio k t_1 / t_k (throughput over the first count's, per seed)."""
    first = seconds[next(iter(seconds))]
    return [
        row(
            "cartpole",
            f"{label}, {k} seed(s) vmapped",
            f"{steps:,} steps per seed",
            k * steps / t,
            "env steps/s",
            k * first / t,
            ratio_to,
        )
        for k, t in seconds.items()
    ]


def bench_cartpole(sizes: Sizes) -> list[dict]:
    """Env steps per second over 1, 16, 256 vmapped seeds: acting and environment alone, and
    the whole LKTD training run (compiled first; one after another = one seed's time x seeds)."""
    import jax

    from lktd_ppl.training import make_train

    rows = []
    for greedy, label in ((False, "env alone (random actions)"), (True, "acting + env")):
        act = {}
        for k in sizes.cartpole_seeds:
            fn = cartpole_acting(sizes.cartpole_act_steps, greedy)
            keys = jax.random.split(jax.random.key(1), k)
            act[k] = median_times({"x": (fn, keys, 1)}, sizes.repeats)["x"]
        rows += seed_rows(label, act, sizes.cartpole_act_steps, "1 seed")
    train_t = {}
    for k in sizes.cartpole_seeds:
        train = make_train(cartpole_spec(sizes.cartpole_train_steps, k))
        keys = jax.random.split(jax.random.key(2), k)
        time_call(train, keys, progress=False)  # compile
        train_t[k] = time_call(train, keys, progress=False)
    rows += seed_rows(
        "lktd training", train_t, sizes.cartpole_train_steps, "one seed after another"
    )
    return rows


# ---- accelerator


def backend_label() -> str:
    """The default backend and its device kind, e.g. ``gpu (NVIDIA H100 80GB HBM3)``."""
    import jax

    return f"{jax.default_backend()} ({jax.devices()[0].device_kind})"


def bench_accelerator(sizes: Sizes) -> list[dict]:
    """On the default backend: ``accel_seeds`` seeds of the paper preset vmapped for
    ``accel_steps`` steps (the first call, compilation included, and the second), extrapolated
    to 1M steps (labelled so); and ``accel_chain_counts`` chains against one (the chains vmapped
    on an accelerator, one after another on CPU: the agent's "auto")."""
    import jax

    where = backend_label()
    seeds, steps = sizes.accel_seeds, sizes.accel_steps
    train = escape_train(steps)
    keys = jax.random.split(jax.random.key(0), seeds)
    first = time_call(train, keys, progress=False)
    again = time_call(train, keys, progress=False)
    setting = f"{where}: {seeds} seeds x {steps:,} steps"
    rows = [
        row("accelerator", "many seeds, first call", setting, first, "s", 1.0, "first call"),
        row(
            "accelerator", "many seeds, compiled", setting, again, "s", again / first, "first call"
        ),
        row(
            "accelerator",
            "many seeds, 1M steps (extrapolated, not measured)",
            f"{where}: {seeds} seeds, compiled time x {1_000_000 / steps:g}",
            again * 1_000_000 / steps,
            "s",
            1_000_000 / steps,
            "many seeds, compiled",
        ),
    ]
    times = {}
    for m in sizes.accel_chain_counts:
        run = escape_train(sizes.accel_chain_steps, num_chains=m)
        time_call(run, keys[:1], progress=False)  # compile
        times[m] = time_call(run, keys[:1], progress=False)
    base = times[sizes.accel_chain_counts[0]]
    rows += [
        row(
            "accelerator",
            f"{m} chain(s)",
            f"{where}: 1 seed x {sizes.accel_chain_steps:,} steps, compiled",
            t,
            "s",
            t / base,
            f"{sizes.accel_chain_counts[0]} chain(s)",
        )
        for m, t in times.items()
    ]
    return rows
