"""The demo preset's search: short variants of the recommended configuration, each on a few seeds
(300 and up, not the demo's 0-9), pooled over the last window; one line per candidate.

    .venv/bin/python experiments/archive/demo_search.py b_m5_N10k_400k c_m5_N10k_400k_d300 ...

Its report is experiments/archive/results/demo_search.md.  Each candidate is one
``lktd train --preset recommended`` process with the candidate's --set values; the wall and CPU
times printed are the process's (the seeds vmapped in it).
"""

from __future__ import annotations

import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ACT = "ENWS"


def knobs(steps: int, chains: int, n: int, last: float) -> list[str]:
    """--set values: ``steps`` steps, ``chains`` chains, N and the buffer ``n``, the drops at
    70%, 80% and 88% of the run's stages with factors 1/10, 1/30 and ``last``."""
    stages = steps // 10
    drops = ((int(0.7 * stages), 0.1), (int(0.8 * stages), 1 / 30), (int(0.88 * stages), last))
    return [
        f"num_chains={chains}",
        f"pseudo_population={n}",
        f"escape.buffer_size={n}",
        f"step_size_drops={drops}",
        "escape.evals_per_window=2",
        f"--steps={steps}",
    ]


# name -> (settings, seeds, first seed)
CANDIDATES = {
    "a_m10_N50k_300k": (knobs(300_000, 10, 50_000, 1 / 100), 1, 300),
    "b_m5_N10k_400k": (knobs(400_000, 5, 10_000, 1 / 100), 4, 300),
    "b_m5_N50k_400k": (knobs(400_000, 5, 50_000, 1 / 100), 4, 300),
    "c_m5_N10k_400k_d300": (knobs(400_000, 5, 10_000, 1 / 300), 4, 300),
    "c_m5_N10k_400k_d1000": (knobs(400_000, 5, 10_000, 1 / 1000), 4, 300),
    "c_m5_N10k_400k_d300_single": (knobs(400_000, 5, 10_000, 1 / 300), 1, 304),
    "e_m5_N10k_300k_d300": (knobs(300_000, 5, 10_000, 1 / 300), 8, 300),
    "e_m5_N10k_300k_d150": (knobs(300_000, 5, 10_000, 1 / 150), 4, 300),
}


def run(name: str) -> str:
    settings, seeds, first = CANDIDATES[name]
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / name
        argv = [sys.executable, "-m", "lktd_ppl.cli", "train", "--algo", "lktd", "--preset"]
        argv += ["recommended", "--seeds", str(seeds), "--seed", str(first), "--out", str(out)]
        argv += ["-q"] + [a if a.startswith("--") else f"--set={a}" for a in settings]
        start, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall, r1 = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    last = max(int(x["step"]) for x in rows)
    rows = [x for x in rows if int(x["step"]) == last]

    def get(k: str) -> np.ndarray:
        return np.array([[float(x[f"{k}_{a}"]) for a in ACT] for x in rows])

    et, c50, mse, w = get("coverage_equal_tailed"), get("calibration50"), get("mse"), get("width")

    def f(v: np.ndarray) -> str:
        return "/".join(f"{x:.3f}" for x in v)

    return (
        f"{name} seeds {first}-{first + seeds - 1} wall {wall:.0f}s cpu {cpu:.0f}s | ET95 "
        f"{f(et.mean(0))} (min run {et.min():.2f}) | 50% {f(c50.mean(0))} | MSE {mse.mean():.1e}"
        f" | width {w.mean():.3f} | under90 {np.mean(et.mean(1) < 0.9):.2f}"
    )


if __name__ == "__main__":
    for name in sys.argv[1:] or CANDIDATES:
        print(run(name), flush=True)
