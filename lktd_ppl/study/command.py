"""A study's command line: run the chosen rows' pending seeds (in this process, split over its
devices, or over the processes of a ``jax.distributed`` job), fold the per-seed files into each
row's compact file, aggregate, and write the tables and plots.  A study script supplies its rows
and calls :func:`main`.

``--deadline-s S`` stops a batch projected (from its last window) to end more than S seconds from
now (exit code 3): for a machine lent for a fixed time.

``--devices N`` splits every batch's seeds over N devices (on CPU, N host devices);
``--workers W`` starts the study as W local processes of one ``jax.distributed`` job (``lktd
launch``, process i pinned to its share of the cores), which split every batch's seeds between
them; process 0 writes the files and aggregates.  A study started on several hosts (the
``LKTD_*`` variables of :mod:`lktd_ppl.scale` set on each) does the same.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lktd_ppl import scale
from lktd_ppl.study.aggregate import summarise
from lktd_ppl.study.data import compact_row, load_runs
from lktd_ppl.study.plots import plots
from lktd_ppl.study.runner import DeadlineError, Row, run_row
from lktd_ppl.study.tables import write_tables


def parser(description: str, default_out: Path) -> argparse.ArgumentParser:
    """The study command's options."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--configs", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--seeds", type=int, default=0, help="seeds per row (default: its full count)")
    ap.add_argument(
        "--batch",
        type=int,
        default=1,
        help="seeds vmapped per batch, split over the devices and processes (default 1; rounded "
        "up to a multiple of them)",
    )
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="local processes of one jax.distributed job splitting every batch (lktd launch)",
    )
    ap.add_argument(
        "--devices", type=int, default=1, help="devices per process splitting every batch"
    )
    ap.add_argument(
        "--no-aggregate",
        action="store_true",
        help="run, then stop; the per-seed files stay as they are",
    )
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="stop a batch projected (from its last window) to end later than this many seconds "
        "from now; exit code 3",
    )
    return ap


def without(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(f"{flag}="):
            out.append(a)
    return out


def aggregate_study(
    rows: dict[str, Row], out: Path, q_star: set[str], choices: dict | None = None
) -> int:
    """Folds every row's per-seed files into its compact file, then writes the tables and plots
    of every row that has runs into ``out``; 1 when none has. ``choices``: the seeds each row's
    settings were chosen on (:func:`lktd_ppl.study.aggregate.chosen_seeds`)."""
    for name in rows:
        if (out / "runs" / name).is_dir():
            compact_row(out / "runs" / name)
    all_data = {n: d for n in rows if (d := load_runs(out, n)) is not None}
    if not all_data:
        print("study: no finished runs to aggregate", file=sys.stderr)
        return 1
    summaries, diverged = summarise(all_data, q_star, choices=choices)
    write_tables(summaries, out, diverged)
    plots(all_data, summaries, out)
    print((out / "table.md").read_text())
    return 0


def row_problem(rows: dict[str, Row], chosen: list[str], steps: int, batch: int) -> str | None:
    """The first row whose settings are refused (checked on the host, every row before any
    runs: a bad value of a grid would otherwise surface only at its row's turn), or None."""
    from lktd_ppl.config import build_spec
    from lktd_ppl.study.runner import row_settings

    for name in chosen:
        row = rows[name]
        try:
            settings = row_settings(row.algo, row.preset, row.overrides)
            escape = settings.pop("escape")
            config = {"agent": settings, "escape": escape}
            build_spec(algo=row.algo, config=config, steps=steps, seeds=batch)
        except ValueError as e:
            return f"row {name}: {e}"
    return None


def main(
    rows: dict[str, Row],
    argv: list[str] | None,
    *,
    script: Path,
    default_out: Path,
    q_star: set[str],
    description: str = __doc__,
    choices: dict | None = None,
) -> int:
    """The study over ``rows`` (name -> :class:`Row`) with command line ``argv`` (default
    ``sys.argv[1:]``); ``script``: the study script (the worker processes run it again);
    ``q_star``: the rows also scored against Q*; ``choices``: the seeds each row's settings were
    chosen on (the tables' fresh seeds)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(description, default_out).parse_args(argv)
    deadline = None if args.deadline_s is None else time.time() + args.deadline_s
    for flag, value in (("--workers", args.workers), ("--devices", args.devices)):
        if value < 1:
            print(f"study: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    if not args.aggregate_only and args.workers == 1:  # before anything starts JAX's backend
        if args.devices > 1:
            scale.force_host_devices(args.devices)
        scale.initialize_from_env()
    chosen = [c for c in args.configs.split(",") if c] or list(rows)
    unknown = [c for c in chosen if c not in rows]
    if unknown:
        print(f"study: unknown config(s) {unknown}; known: {', '.join(rows)}", file=sys.stderr)
        return 2
    if not args.aggregate_only and (problem := row_problem(rows, chosen, args.steps, args.batch)):
        print(f"study: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.aggregate_only and args.workers > 1:  # the same study, as a job of W processes
        program = [sys.executable, str(script)]
        return scale.launch(args.workers, without(argv, "--workers"), program=program)
    if not args.aggregate_only:
        for name in chosen:
            row = rows[name]
            try:
                run_row(
                    name,
                    row,
                    args.seeds or row.seeds,
                    args.batch,
                    args.steps,
                    args.out,
                    deadline,
                    args.devices,
                )
            except DeadlineError as e:
                print(f"study: {e}", file=sys.stderr)
                return 3
    if args.no_aggregate or not scale.is_main_process():
        return 0
    return aggregate_study(rows, args.out, q_star, choices)
