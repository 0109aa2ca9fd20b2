"""One study row's calibrated verdict on the seeds a choice was made on, and on seeds held out.

A knob tuned on a row's seeds 0..K-1 is judged there on the seeds that tuned it, and so looks
better than it is; seeds K and up, run after the choice, are the out-of-sample check. For each
set this prints the three calibrated targets (``escape_study.calibrated_lines``); under the first,
as the odds it gives the second before that ran, how often that many runs drawn with replacement
from it meet each target (``escape_study.bootstrap_calibrated``).

    .venv/bin/python experiments/held_out.py ROW --held-out-from K
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from escape_study import (  # noqa: E402
    DEFAULT_OUT,
    aggregate,
    bootstrap_calibrated,
    calibrated_lines,
    load_runs,
    split_diverged,
    take_runs,
)


def split_by_seed(data: dict, first_held_out: int) -> tuple[dict, dict]:
    """(the runs with seed < first_held_out, the rest)."""
    seeds = np.asarray(data["seeds"])
    if not (seeds < first_held_out).any() or not (seeds >= first_held_out).any():
        raise SystemExit(
            f"held_out: --held-out-from {first_held_out} leaves a set empty "
            f"(the row's seeds run {seeds.min()}-{seeds.max()})"
        )
    return take_runs(data, seeds < first_held_out), take_runs(data, seeds >= first_held_out)


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
    ap.add_argument("--results", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--out", type=Path, default=None, help="default RESULTS/held_out_<row>.md")
    args = ap.parse_args(argv)
    data = load_runs(args.results, args.row)
    if data is None:
        raise SystemExit(f"held_out: no runs of {args.row!r} under {args.results / 'runs'}")
    data, diverged = split_diverged(data)
    if data is None:
        raise SystemExit(f"held_out: every run of {args.row!r} diverged")
    lines = held_out_lines(args.row, data, args.held_out_from)
    if diverged:
        lines.append(f"\n{diverged} diverged run(s) left out.")
    made_by = (
        f"Made by `.venv/bin/python experiments/held_out.py {args.row} "
        f"--held-out-from {args.held_out_from}` (last 5 windows of each run)."
    )
    lines[1:1] = ["", made_by]
    out = args.out or args.results / f"held_out_{args.row}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
