"""Where a run of the paper preset spends its time: phases timed in one fresh process.

    .venv/bin/python experiments/profile_escape_run.py [--steps 1000000] [--cache DIR]

Phases: imports; setup (config, model, learner); compilation, split as JAX's monitoring events
report it (tracing, lowering to MLIR, XLA's backend compile, persistent-cache reads), with the
number of programs, and the part of it on a second thread (beside the main one's work); the
evaluations' quantile sort (the NumPy host callback of ``lktd_ppl.metrics``, timed around the
function); the rest of the run (environment steps and training stages inside the jitted chunks,
and the host loop).  ``--cache DIR`` uses DIR as the
persistent compilation cache (default: none, i.e. a cold compile).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time

T_START = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    if args.cache:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = args.cache
    import jax
    import jax.monitoring

    import lktd_ppl.metrics as metrics
    from lktd_ppl.config import build_spec
    from lktd_ppl.training import make_train

    t_imports = time.perf_counter() - T_START
    events: dict[str, list[float]] = collections.defaultdict(list)
    off_main = [0.0]  # compile seconds on other threads (the harness's compile-ahead thread)

    def listen(event: str, duration: float, **_) -> None:
        if event.startswith(("/jax/core/compile", "/jax/compilation_cache")):
            events[event].append(duration)
            if threading.current_thread() is not threading.main_thread():
                off_main[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    sort_times: list[float] = []
    inner = metrics._quantiles_numpy

    def timed_quantiles(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        sort_times.append(time.perf_counter() - t)
        return out

    metrics._quantiles_numpy = timed_quantiles
    t0 = time.perf_counter()
    spec = build_spec(algo="lktd", preset="paper", steps=args.steps)
    train = make_train(spec)
    t1 = time.perf_counter()
    jax.block_until_ready(train(jax.random.key(0)[None], progress=False))
    t2 = time.perf_counter()
    compile_s = sum(sum(v) for v in events.values())
    sort_s = sum(sort_times)
    print(f"paper preset, {args.steps:,} steps, jax {jax.__version__}, cache {args.cache}")
    print(f"{'phase':<48} {'s':>8}")
    print(f"{'imports':<48} {t_imports:8.2f}")
    print(f"{'setup (config, model, learner)':<48} {t1 - t0:8.2f}")
    for name, ds in sorted(events.items()):
        print(
            f"{'compile: ' + name.rsplit('/', 1)[-1] + f' ({len(ds)} events)':<48} {sum(ds):8.2f}"
        )
    each = 1e3 * sort_s / max(len(sort_times), 1)
    print(
        f"{f'quantile sort ({len(sort_times)} evaluations, {each:.2f} ms each)':<48} {sort_s:8.2f}"
    )
    print(f"{'  of which on a second thread (beside init)':<48} {off_main[0]:8.2f}")
    rest = t2 - t1 - (compile_s - off_main[0]) - sort_s
    print(f"{'rest of the run (env steps, stages, host loop)':<48} {rest:8.2f}")
    print(f"{'train call (compile + run)':<48} {t2 - t1:8.2f}")
    print(f"{'run total (setup + train call)':<48} {t2 - t0:8.2f}")
    print(f"{'process total':<48} {time.perf_counter() - T_START:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
