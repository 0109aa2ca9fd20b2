"""CartPole speed, side by side: wall time of 10 seeds x 50 000 steps for LKTD, DQN (the study's
rows) and Stable-Baselines3's DQN, compilation and start-up included, as ratios.

Each method runs as fresh processes one after another in this call (cold: no compiled code carried
over), at the classic-control study's settings (``experiments/control_study.py``):
- ours: one process, the 10 seeds vmapped in one batch (XLA uses both cores);
- SB3: two processes side by side (one per core, torch on one thread each), seeds 0-4 and 5-9
  (``experiments/sb3_reference.py``; needs ``bash experiments/sb3_setup.sh``).
Results go to a scratch folder; the table to ``experiments/results/control/speed.md``.

    .venv/bin/python experiments/bench_cartpole_speed.py
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = ROOT / ".venv" / "bin" / "python"
SB3_PY = ROOT / ".venv-sb3" / "bin" / "python"
OUT = ROOT / "experiments" / "results" / "control" / "speed.md"


def timed(cmds: list[list[str]]) -> float:
    """Wall seconds of ``cmds`` started together, until the last one ends."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL) for c in cmds]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a benchmark command failed: {cmds} -> {codes}")
    return time.perf_counter() - t0


def ours(method: str, scratch: Path) -> list[list[str]]:
    study = str(ROOT / "experiments" / "control_study.py")
    args = ["--envs", "CartPole-v1", "--rows", method, "--seeds", "10", "--batch", "10"]
    return [[str(PY), study, *args, "--out", str(scratch / method)]]


def sb3(scratch: Path) -> list[list[str]]:
    script = str(ROOT / "experiments" / "sb3_reference.py")
    return [
        [str(SB3_PY), script, "--envs", "CartPole-v1", "--seeds", s, "--out", str(scratch / "sb3")]
        for s in ("0-4", "5-9")
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not SB3_PY.exists():
        raise SystemExit("no .venv-sb3: run `bash experiments/sb3_setup.sh` first")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        walls = {m: timed(ours(m, scratch)) for m in ("lktd", "dqn")}
        walls["sb3_dqn"] = timed(sb3(scratch))
    load_after = os.getloadavg()
    lines = [
        "# CartPole-v1: 10 seeds x 50 000 steps, wall time side by side",
        "",
        f"Command: `.venv/bin/python experiments/bench_cartpole_speed.py` ({platform.node()}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; load average "
        f"{load[0]:.1f} before, {load_after[0]:.1f} after).",
        "",
        "Each method from a cold start (fresh processes: imports, compilation and the "
        "best-model re-evaluation included) at the study's settings. Ours: one process, 10 seeds "
        "vmapped. SB3's DQN: two single-threaded processes side by side, 5 seeds each.",
        "",
        "| method | wall s | ratio to LKTD |",
        "|---|---|---|",
        *(f"| {m} | {w:.1f} | {w / walls['lktd']:.2f} |" for m, w in walls.items()),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
