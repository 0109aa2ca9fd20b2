"""Are new runs of a study row statistically the runs committed for it?  (After a change of the
random streams, identity is lost; the law of the results must stay.)

For each metric and action: the untrimmed per-run mean over a run's last windows, then
z = (mean_new - mean_old) / sqrt(se_new^2 + se_old^2), standard errors across runs.  A row passes
when every |z| < 3.

    .venv/bin/python experiments/escape_study.py --configs ROW --seeds K --out NEW
    .venv/bin/python experiments/equivalence.py ROW --new NEW [--old experiments/results/escape]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lktd_ppl.names import ACTION_NAMES
from lktd_ppl.study.aggregate import LAST_WINDOWS
from lktd_ppl.study.data import load_runs

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"coverage": "the paper's coverage", "mse": "MSE"}
LIMIT = 3.0


def per_run(data: dict, metric: str) -> np.ndarray:
    """(runs, actions): each run's mean of ``metric`` over its last windows."""
    return np.nanmean(np.asarray(data[f"w_{metric}"], np.float64)[:, -LAST_WINDOWS:], axis=1)


def compare(old: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
    """Means, standard errors across runs and z per column of two (runs, columns) arrays."""
    out = {}
    for name, x in (("old", old), ("new", new)):
        out[f"mean_{name}"] = x.mean(axis=0)
        out[f"se_{name}"] = x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
    out["z"] = (out["mean_new"] - out["mean_old"]) / np.hypot(out["se_new"], out["se_old"])
    return out


def report(row: str, old: dict, new: dict, command: str) -> tuple[str, bool]:
    lines = [
        f"## {row}: {new['seeds'].size} new runs (seeds {new['seeds'].min()}-"
        f"{new['seeds'].max()}) against {old['seeds'].size} committed",
        "",
        f"Made by: `{command}`. Untrimmed per-run means over each run's last {LAST_WINDOWS} "
        "windows; z = (new - committed) / sqrt(se_new^2 + se_committed^2), s.e. across runs.",
        "",
        "| metric | action | committed (s.e.) | new (s.e.) | z |",
        "|---|---|---|---|---|",
    ]
    ok = True
    for metric, label in METRICS.items():
        c = compare(per_run(old, metric), per_run(new, metric))
        fmt = ".2e" if metric == "mse" else ".4f"
        for a, name in enumerate(ACTION_NAMES):
            z = float(c["z"][a])
            ok &= abs(z) < LIMIT
            lines.append(
                f"| {label} | {name} | {c['mean_old'][a]:{fmt}} ({c['se_old'][a]:{fmt}}) | "
                f"{c['mean_new'][a]:{fmt}} ({c['se_new'][a]:{fmt}}) | {z:+.2f} |"
            )
    verdict = "every |z| < 3: the same law" if ok else "some |z| >= 3: NOT the same law"
    return "\n".join([*lines, "", f"Verdict: {verdict}.", ""]), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a row of experiments/escape_study.py")
    ap.add_argument("--new", type=Path, required=True, help="the study folder of the new runs")
    ap.add_argument("--old", type=Path, default=ROOT / "experiments" / "results" / "escape")
    ap.add_argument("--out", type=Path, help="append the report to this Markdown file")
    args = ap.parse_args(argv)
    old, new = load_runs(args.old, args.row), load_runs(args.new, args.row)
    if old is None or new is None:
        missing = args.old if old is None else args.new
        print(f"equivalence: no runs of {args.row} under {missing}", file=sys.stderr)
        return 2
    command = "python experiments/equivalence.py " + " ".join(argv or sys.argv[1:])
    text, ok = report(args.row, old, new, command)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
