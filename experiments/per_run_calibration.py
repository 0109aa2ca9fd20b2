"""Per run: does the interval's width follow the run's own error? (issue 5, calibrated row)

A calibration curve averaged over runs is calibrated only if each run's intervals are as wide as
that run's errors warrant: runs whose width is the same while their errors differ average into a
flat curve (the runs that err little over-cover at 50%, those that err much under-cover at 95%).
For each run of the named study rows this prints, over its last 5 windows, the RMSE of the
pooled mean (all actions), the mean 95% width, their ratio RMSE / (width / 3.92) (about 1 for a
Gaussian posterior whose intervals fit its errors), the equal-tailed 95% coverage per action and
the calibration curve averaged over the actions.

With ``--paired A B`` it adds, over the seeds both rows ran, the mean change from A to B of each
run's curve and equal-tailed 95% coverage, with its standard error across seeds, and the
geometric-mean ratios of width and RMSE. Runs of two rows on one seed share their start and, up
to where the rows' knobs differ, their history, so this is much sharper than comparing the rows'
means (a knob applied only after stage 88 000 moves every run by about the same amount).

    .venv/bin/python experiments/per_run_calibration.py ROW [ROW ...] [--paired A B]
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


def paired(a: list[dict], b: list[dict]) -> dict:
    """B against A on the seeds both have: seeds, mean change of curve (L,) and et95 (A,) with
    their standard errors across seeds, and the geometric-mean width and RMSE ratios B / A."""
    by_seed = {r["seed"]: r for r in a}
    pairs = [(by_seed[r["seed"]], r) for r in b if r["seed"] in by_seed]
    if len(pairs) < 2:
        raise SystemExit(f"per_run_calibration: --paired needs 2 common seeds, has {len(pairs)}")
    n = len(pairs)
    out: dict = {"seeds": [ra["seed"] for ra, _ in pairs]}
    for key in ("curve", "et95"):
        d = np.array([rb[key] - ra[key] for ra, rb in pairs])
        out[key] = d.mean(axis=0)
        out[key + "_se"] = d.std(axis=0, ddof=1) / np.sqrt(n)
    for key in ("width", "rmse"):
        out[key + "_ratio"] = float(
            np.exp(np.mean([np.log(rb[key] / ra[key]) for ra, rb in pairs]))
        )
    return out


def paired_lines(name_a: str, name_b: str, p: dict) -> list[str]:
    def fmt(m: np.ndarray, se: np.ndarray) -> str:
        return "/".join(f"{v:+.3f} ({e:.3f})" for v, e in zip(m, se, strict=True))

    return [
        "",
        f"## Paired: {name_b} against {name_a}",
        "",
        f"Over the {len(p['seeds'])} seeds both ran, the mean change per run (standard error "
        "across seeds):",
        "",
        f"- curve {'/'.join(f'{lv:.0%}' for lv in LEVELS)}: {fmt(p['curve'], p['curve_se'])}",
        f"- equal-tailed 95% E/N/W/S: {fmt(p['et95'], p['et95_se'])}",
        f"- width x{p['width_ratio']:.3f}, RMSE x{p['rmse_ratio']:.3f} (geometric means)",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="+", help="study rows (runs/ folder names)")
    ap.add_argument("--paired", nargs=2, metavar=("A", "B"), help="compare B with A seed by seed")
    ap.add_argument("--out", type=Path, default=OUT / "per_run_calibration.md")
    args = ap.parse_args(argv)
    levels = "/".join(f"{lv:.0%}" for lv in LEVELS)
    lines = [
        "# Per run: the interval's width against the run's own error",
        "",
        "Made by `.venv/bin/python experiments/per_run_calibration.py "
        + " ".join(args.rows + (["--paired", *args.paired] if args.paired else []))
        + "` (last 5 windows of each run; the model is in the script's docstring). ratio = RMSE /"
        " (width / 3.92): about 1 where a Gaussian interval fits the run's errors.",
        "",
        f"| row | seed | RMSE | 95% width | ratio | equal-tailed 95% E/N/W/S | curve {levels} |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = {}
    for name in dict.fromkeys([*args.rows, *(args.paired or [])]):
        data = load_runs(OUT, name)
        if data is None:
            raise SystemExit(f"per_run_calibration: no runs of {name!r} under {OUT / 'runs'}")
        runs[name] = per_run(data)
    for name in args.rows:
        for r in runs[name]:
            lines.append(
                f"| {name} | {r['seed']} | {r['rmse']:.4f} | {r['width']:.4f} | {r['ratio']:.2f} | "
                + "/".join(f"{v:.2f}" for v in r["et95"])
                + " | "
                + "/".join(f"{v:.2f}" for v in r["curve"])
                + " |"
            )
    if args.paired:
        a, b = args.paired
        lines += paired_lines(a, b, paired(runs[a], runs[b]))
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
