"""One study row's calibrated verdict on the seeds a choice was made on, and on seeds held out.

A knob tuned on a row's seeds 0..K-1 is judged there on the seeds that tuned it, and so looks
better than it is; seeds K and up, run after the choice, are the out-of-sample check. For each
set this prints the three calibrated targets (``lktd_ppl.study.tables.calibrated_lines``); under the first,
as the odds it gives the second before that ran, how often that many runs drawn with replacement
from it meet each target (``lktd_ppl.study.aggregate.bootstrap_calibrated``).

    .venv/bin/python experiments/archive/held_out.py ROW --held-out-from K

Before the held-out seeds run, ``--predict N`` writes what they should read: the median and 80%
range of each target's reading over draws of N runs with replacement from the seeds below K
(``predicted_ranges``), and the odds of meeting each target.

Archived: a one-off tool of the calibration search (experiments/archive/README.md); it reads the
study's runs under experiments/results/escape/runs/ through lktd_ppl.study and writes its report
into experiments/archive/results/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lktd_ppl.study.aggregate import (
    BOOTSTRAP_DRAWS,
    aggregate,
    bootstrap_calibrated,
    bootstrap_readings,
    split_diverged,
    take_runs,
)
from lktd_ppl.study.data import load_runs
from lktd_ppl.study.tables import calibrated_lines

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parents[0] / "results" / "escape"  # the study's runs
REPORTS = HERE / "results"


def write_report(lines: list[str], made_by: str, out: Path) -> None:
    """Markdown ``lines`` (a title first) with ``made_by`` under the title: written to ``out``
    and printed."""
    text = "\n".join([lines[0], "", made_by, *lines[1:]])
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}")


def split_by_seed(data: dict, first_held_out: int) -> tuple[dict, dict]:
    """(the runs with seed < first_held_out, the rest)."""
    seeds = np.asarray(data["seeds"])
    if not (seeds < first_held_out).any() or not (seeds >= first_held_out).any():
        raise SystemExit(
            f"held_out: --held-out-from {first_held_out} leaves a set empty "
            f"(the row's seeds run {seeds.min()}-{seeds.max()})"
        )
    return take_runs(data, seeds < first_held_out), take_runs(data, seeds >= first_held_out)


def predicted_ranges(
    data: dict, runs: int, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> dict[str, np.ndarray]:
    """For ``runs`` runs drawn with replacement from ``data`` (``draws`` times): the 10th, 50th
    and 90th percentiles of the equal-tailed 95% coverage per action (trimmed mean, shape
    (3, 4)), of the largest calibration gap and of the MSE average (shape (3,) each), and the
    odds of meeting each target (``odds``, as ``bootstrap_calibrated``)."""
    r = bootstrap_readings(data, runs, draws, seed)
    q = [10, 50, 90]
    return dict(
        equal_tailed=np.nanpercentile(r["equal_tailed"], q, axis=0),
        gap=np.nanpercentile(r["gap"], q),
        mse=np.nanpercentile(r["mse_avg"], q),
        odds={k: float(r[f"v_{k}"].mean()) for k in ("equal_tailed", "gap", "mse", "all")},
    )


def predicted_lines(name: str, data: dict, first_held_out: int, runs: int) -> list[str]:
    """Markdown: what ``runs`` seeds from ``first_held_out`` on should read, predicted from the
    seeds below it before any of them is read."""
    below = np.asarray(data["seeds"]) < first_held_out
    if not below.any():
        raise SystemExit(
            f"held_out: no seed below --held-out-from {first_held_out} to predict from"
        )
    chosen = take_runs(data, below)
    seeds = np.asarray(chosen["seeds"])
    r = predicted_ranges(chosen, runs)
    odds = r["odds"]
    et = r["equal_tailed"]
    per_action = "/".join(f"{m:.3f} ({lo:.3f}-{hi:.3f})" for lo, m, hi in et.T)
    return [
        f"# {name}: predicted for {runs} held-out seeds from {first_held_out}",
        "",
        f"From seeds {seeds.min()}-{seeds.max()} ({len(seeds)} runs) alone: median (80% range) "
        f"over {BOOTSTRAP_DRAWS} draws of {runs} runs with replacement.",
        "",
        f"- equal-tailed 95% coverage E/N/W/S: {per_action} (target 0.93-0.97 every action)",
        f"- largest calibration gap: {r['gap'][1]:.3f} ({r['gap'][0]:.3f}-{r['gap'][2]:.3f}) "
        "(target <= 0.05)",
        f"- MSE average: {r['mse'][1]:.1e} ({r['mse'][0]:.1e}-{r['mse'][2]:.1e}) (target <= 5e-4)",
        f"- odds of meeting the band {odds['equal_tailed']:.0%}, the gap {odds['gap']:.0%}, "
        f"the MSE {odds['mse']:.0%}, all three {odds['all']:.0%}",
    ]


def held_out_lines(name: str, data: dict, first_held_out: int) -> list[str]:
    chosen, held = split_by_seed(data, first_held_out)
    n_held = len(held["seeds"])
    first = aggregate(chosen)
    first["bootstrap"] = {n_held: bootstrap_calibrated(chosen, n_held)}  # the held-out set's odds
    lines = [f"# {name}: the seeds the choice was made on, and the seeds held out", ""]
    for label, part, summary in (
        ("chosen on", chosen, first),
        ("held out", held, aggregate(held)),
    ):
        seeds = np.asarray(part["seeds"])
        lines += [
            f"## Seeds {seeds.min()}-{seeds.max()} ({label}, {len(seeds)} runs)",
            "",
            *calibrated_lines(name, summary),
            "",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("row", help="a study row (runs/ folder name)")
    ap.add_argument("--held-out-from", type=int, required=True, help="the first held-out seed")
    ap.add_argument(
        "--predict",
        type=int,
        default=None,
        metavar="N",
        help="before the held-out seeds are read: predict what N of them should read",
    )
    ap.add_argument(
        "--seeds-below",
        type=int,
        default=None,
        metavar="S",
        help="only the row's seeds below S (a verdict made before the row ran further)",
    )
    ap.add_argument("--results", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default experiments/archive/results/held_out_<row>.md",
    )
    args = ap.parse_args(argv)
    data = load_runs(args.results, args.row)
    if data is None:
        raise SystemExit(f"held_out: no runs of {args.row!r} under {args.results / 'runs'}")
    if args.seeds_below is not None:
        data = take_runs(data, np.asarray(data["seeds"]) < args.seeds_below)
    data, diverged = split_diverged(data)
    if data is None:
        raise SystemExit(f"held_out: every run of {args.row!r} diverged")
    if args.predict is not None:
        lines = predicted_lines(args.row, data, args.held_out_from, args.predict)
        flag = f" --predict {args.predict}"
        default = f"predicted_{args.row}.md"
    else:
        lines = held_out_lines(args.row, data, args.held_out_from)
        flag, default = "", f"held_out_{args.row}.md"
    if args.seeds_below is not None:
        flag += f" --seeds-below {args.seeds_below}"
    if args.out is not None:
        flag += f" --out {args.out}"
    if diverged:
        lines.append(f"\n{diverged} diverged run(s) left out.")
    made_by = (
        f"Made by `.venv/bin/python experiments/archive/held_out.py {args.row} "
        f"--held-out-from {args.held_out_from}{flag}` (last 5 windows of each run)."
    )
    write_report(lines, made_by, args.out or REPORTS / default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
