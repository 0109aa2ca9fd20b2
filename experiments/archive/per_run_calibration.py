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

With ``--project A B`` it predicts a row C that is to B what B is to A (the same knob moved by
the same factor once more), before C is run: each of B's runs moves by its own seed's change
from A, window by window (coverages, curve), or by the mean change where A lacks the seed, its
width and MSE by the paired geometric-mean ratios; the targets' verdict on the projected runs
and a bootstrap of it go to ``projected_B.md``. It assumes the knob's effect does not shrink.

    .venv/bin/python experiments/archive/per_run_calibration.py [ROW ...] [--paired A B] [--project A B]

Archived: a one-off tool of the calibration search (experiments/archive/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lktd_ppl.metrics import LEVELS
from lktd_ppl.study.aggregate import LAST_WINDOWS, aggregate, bootstrap_calibrated
from lktd_ppl.study.data import load_runs
from lktd_ppl.study.tables import calibrated_lines

RUNS = Path(__file__).resolve().parents[1] / "results" / "escape"  # the study's runs
REPORTS = Path(__file__).resolve().parent / "results"
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


SHIFTED = ("w_coverage", "w_coverage_equal_tailed", "w_calibration")


def project(a: dict, b: dict) -> dict:
    """B's runs moved once more by the change from A to B (see the module's docstring): a row's
    data, as ``load_runs`` gives it, with coverages clipped to [0, 1]."""
    p = paired(per_run(a), per_run(b))
    seeds_a = np.asarray(a["seeds"]).tolist()
    seeds_b = np.asarray(b["seeds"]).tolist()
    common = [(seeds_a.index(s), j) for j, s in enumerate(seeds_b) if s in seeds_a]
    out = dict(b)
    for key in SHIFTED:
        change = {j: b[key][j] - a[key][i] for i, j in common}
        mean = np.mean(list(change.values()), axis=0)
        moved = [b[key][j] + change.get(j, mean) for j in range(len(seeds_b))]
        out[key] = np.clip(np.array(moved), 0.0, 1.0)
    out["w_width"] = b["w_width"] * p["width_ratio"]
    out["w_mse"] = b["w_mse"] * p["rmse_ratio"] ** 2
    return out


def projected_lines(name_a: str, name_b: str, data: dict) -> list[str]:
    s = aggregate(data)
    s["bootstrap"] = {runs: bootstrap_calibrated(data, runs) for runs in (20, 50, 100)}
    return [
        f"# Projected: the next step after {name_b} (from {name_a} to {name_b}, once more)",
        "",
        "Made by `.venv/bin/python experiments/archive/per_run_calibration.py --project "
        f"{name_a} {name_b}`, over {len(data['seeds'])} projected runs (the method is in the "
        "script's docstring).",
        "",
        *calibrated_lines("projected", s),
    ]


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


def _load(name: str) -> dict:
    data = load_runs(RUNS, name)
    if data is None:
        raise SystemExit(f"per_run_calibration: no runs of {name!r} under {RUNS / 'runs'}")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="*", help="study rows (runs/ folder names)")
    ap.add_argument("--paired", nargs=2, metavar=("A", "B"), help="compare B with A seed by seed")
    ap.add_argument(
        "--project", nargs=2, metavar=("A", "B"), help="predict the step after B (see above)"
    )
    ap.add_argument("--out", type=Path, default=REPORTS / "per_run_calibration.md")
    args = ap.parse_args(argv)
    if args.project:
        a, b = (_load(name) for name in args.project)
        lines = projected_lines(*args.project, project(a, b))
        out = REPORTS / f"projected_{args.project[1]}.md"
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        print(f"wrote {out}")
    if not args.rows:
        if not args.project:
            ap.error("name at least one row, or --project A B")
        return 0
    levels = "/".join(f"{lv:.0%}" for lv in LEVELS)
    lines = [
        "# Per run: the interval's width against the run's own error",
        "",
        "Made by `.venv/bin/python experiments/archive/per_run_calibration.py "
        + " ".join(args.rows + (["--paired", *args.paired] if args.paired else []))
        + "` (last 5 windows of each run; the model is in the script's docstring). ratio = RMSE /"
        " (width / 3.92): about 1 where a Gaussian interval fits the run's errors.",
        "",
        f"| row | seed | RMSE | 95% width | ratio | equal-tailed 95% E/N/W/S | curve {levels} |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = {}
    for name in dict.fromkeys([*args.rows, *(args.paired or [])]):
        runs[name] = per_run(_load(name))
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
