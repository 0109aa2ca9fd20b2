"""The bench's ``escape`` rows (:mod:`lktd_ppl.study.bench`): one run of the paper preset in a fresh
process, cold (an empty persistent compilation cache) and warm (the cache the cold run filled),
with compilation (JAX's monitoring events) apart from setup and the train call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from lktd_ppl import compile_cache
from lktd_ppl.study.bench_table import Sizes, row

ESCAPE_PARTS = ("wall", "process", "setup", "compile", "train call")
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)


def escape_run_here(steps: int, seed: int = 0, **overrides: Any) -> dict:
    """One escape run of the paper preset in this process: seconds of setup (config, model,
    learner), of compilation (tracing, lowering, XLA compile or cache reads, as JAX's monitoring
    events report them), of the train call (compilation and run) and in all."""
    import jax
    import jax.monitoring

    from lktd_ppl.config import build_spec
    from lktd_ppl.training import make_train

    compile_s = [0.0]

    def listen(event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            compile_s[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    t0 = time.perf_counter()
    config = {"agent": overrides} if overrides else None
    spec = build_spec(algo="lktd", preset="paper", config=config, steps=steps)
    train = make_train(spec)
    t1 = time.perf_counter()
    c1 = compile_s[0]
    jax.block_until_ready(train(jax.random.key(seed)[None], progress=False))
    t2 = time.perf_counter()
    return {"setup": t1 - t0, "compile": compile_s[0] - c1, "train call": t2 - t1, "wall": t2 - t0}


def escape_run_process(steps: int, cache_dir: str, seed: int = 0) -> dict:
    """:func:`escape_run_here` in a fresh interpreter with the persistent compilation cache in
    ``cache_dir``; adds the process's wall seconds (imports included)."""
    env = {k: v for k, v in os.environ.items() if k != compile_cache.JAX_ENV_CACHE}
    env.update({compile_cache.ENV_CACHE: cache_dir, "JAX_PLATFORMS": "cpu"})
    code = (
        "import json; from lktd_ppl import compile_cache; compile_cache.enable(); "
        "from lktd_ppl.study.bench_escape import escape_run_here; "
        f"print(json.dumps(escape_run_here({steps}, {seed})))"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"escape run failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "process": time.perf_counter() - t}


def bench_escape(sizes: Sizes) -> list[dict]:
    """The paper preset's run, cold and warm compilation cache, interleaved; medians."""
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for r in range(sizes.escape_repeats):
        with tempfile.TemporaryDirectory(prefix="lktd_jax_cache_") as cache:
            runs["cold"].append(escape_run_process(sizes.escape_steps, cache, seed=r))
            runs["warm"].append(escape_run_process(sizes.escape_steps, cache, seed=r))
    rows = []
    steps = f"{sizes.escape_steps:,} steps, median of {sizes.escape_repeats}"
    cold_wall = float(np.median([r["wall"] for r in runs["cold"]]))
    for cache, rs in runs.items():
        for part in ESCAPE_PARTS:
            value = float(np.median([r[part] for r in rs]))
            each = ", ".join(f"{r[part]:.1f}" for r in rs)
            rows.append(
                row(
                    "escape",
                    f"paper run, {cache} cache: {part}",
                    f"{steps} ({each})",
                    value,
                    "s",
                    value / cold_wall,
                    "cold wall",
                )
            )
    return rows
