"""Resident memory over a long run, and what checkpoints cost.

Runs one escape-room run of ``--chunks`` chunks (``escape.window=2000``: 10 chunks of 200 steps
per window; the sample ring and replay buffer at their default sizes) through
``lktd_ppl.training.execute`` with a checkpoint after every jitted call, and reads the process's
resident memory (VmRSS, /proc/self/status) after every window.  Reports the RSS after chunk 20
and after the last chunk (within 10% is the target), the checkpoint saves' count and time, and
the checkpoint's cost as a share of the run: at every call (this run) and at the default
interval (one save per ``CHECKPOINT_EVERY`` seconds at most).

    python experiments/bench_run_memory.py [--algo lktd] [--chunks 200] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mib() -> float:
    """The process's resident set size in MiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="lktd")
    parser.add_argument("--chunks", type=int, default=200, help="chunks (multiple of 10)")
    parser.add_argument("--out", type=Path, help="results file (Markdown); default: print only")
    args = parser.parse_args(argv)

    from lktd_ppl import training
    from lktd_ppl.config import build_spec

    chunk_steps = 200
    steps = args.chunks * chunk_steps
    spec = build_spec(algo=args.algo, steps=steps, sets=["escape.window=2000"])
    rss: list[tuple[int, float]] = []  # (chunks done, MiB)

    def log(line: str) -> None:
        step = int(line.split()[1])
        rss.append((step // chunk_steps, rss_mib()))

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = training.execute(spec, Path(tmp) / "run", log=log, checkpoint_every=0.0)
        size = (Path(tmp) / "run" / "metrics.csv").stat().st_size
    wall = time.perf_counter() - t0
    at = dict(rss)
    first, last = at[20], at[args.chunks]
    saves, save_s = res["checkpoint_saves"], res["checkpoint_seconds"]
    per_save = save_s / max(saves, 1)
    default_share = per_save / training.CHECKPOINT_EVERY
    lines = [
        "# Resident memory over a long run; checkpoint cost",
        "",
        f"Command: `python {shlex.join(['experiments/bench_run_memory.py', *sys.argv[1:]])}`",
        f"Machine: {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; Python "
        f"{platform.python_version()}.",
        f"Run: {args.algo} on the escape room, {steps:,} steps = {args.chunks} chunks of "
        f"{chunk_steps} steps (escape.window=2000, default sample ring and replay buffer), 1 seed, "
        f"a checkpoint (resume.npz and metrics.csv) after every jitted call of 10 chunks; "
        f"{wall:.1f} s wall (compile included).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| RSS after chunk 20 | {first:.1f} MiB |",
        f"| RSS after chunk {args.chunks} | {last:.1f} MiB |",
        f"| change | {100 * (last - first) / first:+.2f}% (target: within 10%) |",
        f"| RSS min / max over the windows | {min(r for _, r in rss):.1f} / "
        f"{max(r for _, r in rss):.1f} MiB |",
        f"| checkpoint saves / time | {saves} / {save_s:.2f} s ({per_save * 1000:.0f} ms each) |",
        f"| checkpoint cost, every call (this run) | {100 * save_s / wall:.1f}% of the run |",
        f"| checkpoint cost, default interval ({training.CHECKPOINT_EVERY:g} s) | at most "
        f"{100 * default_share:.2f}% of the run |",
        f"| metrics.csv at the end | {size / 1024:.0f} KiB |",
        "",
        "RSS per window (chunks done: MiB): " + ", ".join(f"{c}: {r:.1f}" for c, r in rss) + ".",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
