"""Per run: does the interval's width follow the run's own error? (issue 5, calibrated row)

A calibration curve averaged over runs is calibrated only if each run's intervals are as wide as
that run's errors warrant: runs whose width is the same while their errors differ average into a
flat curve (the runs that err little over-cover at 50%, those that err much under-cover at 95%).
For each run of the named study rows this prints, over its last 5 windows, the RMSE of the
pooled mean (all actions), the mean 95% width, their ratio RMSE / (width / 3.92) (about 1 for a
Gaussian posterior whose intervals fit its errors), the equal-tailed 95% coverage per action and
the calibration curve averaged over the actions.

    .venv/bin/python experiments/per_run_calibration.py ROW [ROW ...]   # writes per_run_calibration.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lktd_ppl.metrics import LEVELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from escape_study import LAST_WINDOWS, load_runs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "escape"
Z95 = 3.92  # a Gaussian's 95% interval is 3.92 sd wide


def per_run(data: dict) -> list[dict]:
    """One dict per run: seed, rmse, width, ratio, et95 (A,), curve (L,)."""
    rows = []
    for i, seed in enumerate(np.asarray(data["seeds"]).tolist()):
        mse = float(np.mean(data["w_mse"][i, -LAST_WINDOWS:]))
        width = float(np.mean(data["w_width"][i, -LAST_WINDOWS:]))
        rmse = float(np.sqrt(mse))
        rows.append(
            dict(
                seed=int(seed),
                rmse=rmse,
                width=width,
                ratio=rmse / (width / Z95),
                et95=np.mean(data["w_coverage_equal_tailed"][i, -LAST_WINDOWS:], axis=0),
                curve=np.mean(data["w_calibration"][i, -LAST_WINDOWS:], axis=(0, 2)),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="+", help="study rows (runs/ folder names)")
    ap.add_argument("--out", type=Path, default=OUT / "per_run_calibration.md")
    args = ap.parse_args(argv)
    levels = "/".join(f"{lv:.0%}" for lv in LEVELS)
    lines = [
        "# Per run: the interval's width against the run's own error",
        "",
        "Made by `.venv/bin/python experiments/per_run_calibration.py "
        + " ".join(args.rows)
        + "` (last 5 windows of each run; the model is in the script's docstring). ratio = RMSE /"
        " (width / 3.92): about 1 where a Gaussian interval fits the run's errors.",
        "",
        f"| row | seed | RMSE | 95% width | ratio | equal-tailed 95% E/N/W/S | curve {levels} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.rows:
        data = load_runs(OUT, name)
        if data is None:
            raise SystemExit(f"per_run_calibration: no runs of {name!r} under {OUT / 'runs'}")
        for r in per_run(data):
            lines.append(
                f"| {name} | {r['seed']} | {r['rmse']:.4f} | {r['width']:.4f} | {r['ratio']:.2f} | "
                + "/".join(f"{v:.2f}" for v in r["et95"])
                + " | "
                + "/".join(f"{v:.2f}" for v in r["curve"])
                + " |"
            )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
