"""The ``lktd`` command: demo, train, diagnose, experiment.

This module and :mod:`lktd_ppl.runs` import JAX only inside the commands (``import lktd_ppl``
itself still imports it, through the package's ``__init__``).  Every error is one line on stderr
with exit status 2 (set ``LKTD_DEBUG=1`` to see the traceback of an unexpected one).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from lktd_ppl import runs

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENT_ALIASES = {"escape": "escape_study.py", "bench": "bench_inner_step.py"}
DEMO_STEPS = 600_000


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _log(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"  {line}", file=sys.stderr)


def _train_and_report(spec: runs.RunSpec, out: Path, quiet: bool, overwrite: bool) -> None:
    e = spec.escape
    members = runs.members_per_seed(spec)
    train = runs.make_train(spec)  # loads and checks the model, KOVA's memory need, ...
    if not quiet:
        runs.eprint(
            f"{spec.algo} on {spec.env}: {spec.seeds} seed(s) x {members} member(s), "
            f"{e.total_steps:,} steps, a log line every {e.window:,} steps (compiling first)"
        )
    with warnings.catch_warnings():  # the harness's log averages NaNs before the burn-in ends
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        # quantiles over a sample buffer still empty (NaN until the burn-in ends)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        runs.execute(
            spec,
            out,
            progress=not quiet and sys.stderr.isatty(),
            log=None if quiet else _log,
            overwrite=overwrite,
            train=train,
        )
    print((out / "summary.md").read_text(), end="")
    files = [f for f in (*runs.RUN_FILES, "model.py") if (out / f).exists()]
    plots = sorted(p.name for p in out.glob("*.png"))
    print(f"\nRun folder: {out}/ ({', '.join(files)}; plots: {', '.join(plots)})")
    print(f"Next: lktd diagnose {out}")


def _demo(args: argparse.Namespace) -> int:
    """The README's demo: LKTD on the escape room with the default settings."""
    spec = runs.build_spec(algo="lktd", steps=args.steps, seeds=args.seeds, sets=args.set)
    _train_and_report(spec, Path(args.out), args.quiet, overwrite=True)
    return 0


def _train(args: argparse.Namespace) -> int:
    config = runs.load_config(args.config) if args.config else None
    config_dir = runs.config_path(args.config).parent if args.config else None
    spec = runs.build_spec(
        algo=args.algo,
        env=args.env,
        config=config,
        sets=args.set,
        model=args.model,
        seeds=args.seeds,
        first_seed=args.seed,
        steps=args.steps,
        max_draws=args.max_draws,
        where=str(args.config),
        config_dir=config_dir,
    )
    out = Path(args.out) if args.out else Path("runs") / f"{spec.env}-{spec.algo}"
    runs.prepare_folder(out, args.overwrite)
    _train_and_report(spec, out, args.quiet, args.overwrite)
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    report = runs.diagnose(args.folder)
    print(report, end="")
    return 0


def _experiments() -> dict[str, Path]:
    """Name -> script: the aliases, then every other ``experiments/*.py`` by its stem."""
    found = {}
    for name, file in EXPERIMENT_ALIASES.items():
        if (EXPERIMENTS_DIR / file).is_file():
            found[name] = EXPERIMENTS_DIR / file
    aliased = set(EXPERIMENT_ALIASES.values())
    for path in sorted(EXPERIMENTS_DIR.glob("*.py")) if EXPERIMENTS_DIR.is_dir() else []:
        if path.name not in aliased and not path.name.startswith("_"):
            found[path.stem] = path
    return found


def _first_doc_line(path: Path) -> str:
    """The first line of a script's module docstring, without importing it."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    for quote in ('"""', "'''"):
        start = text.find(quote)
        if start != -1 and not text[:start].strip().replace("#", "").strip():
            body = text[start + 3 :].strip()
            return body.splitlines()[0].strip() if body else ""
    return ""


def _experiment(args: argparse.Namespace) -> int:
    import runpy

    table = _experiments()
    if args.name not in table:
        raise runs.RunError(
            f"unknown experiment {args.name!r}; available: {', '.join(table) or 'none'}"
        )
    path = table[args.name]
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    old_argv = sys.argv
    sys.argv = [str(path), *rest]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:  # the script's own exit status
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = old_argv
    return 0


def build_parser() -> argparse.ArgumentParser:
    algos = ", ".join(runs.ALGORITHMS)
    parser = _Parser(
        prog="lktd",
        description="LKTD: sample the posterior of Q-network weights while an RL agent learns.",
        epilog="Run 'lktd COMMAND --help' for a command's options. Tutorial: docs/tutorial.md.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def common_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a setting, repeatable: an agent field (e.g. pseudo_population=5000, "
            "num_chains=4) or escape.FIELD (e.g. escape.window=5000); values are parsed by the "
            "field's type (tuples as 32,32; none for optional fields)",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")

    demo = sub.add_parser(
        "demo",
        help="a short LKTD run on the escape room, scored against the exact Q",
        description="LKTD (default settings: the paper's spike-and-slab MLP, one chain) on the "
        "10x10 escape room; prints coverage, equal-tailed coverage, MSE and interval width per "
        "action against the exact ground-truth Q over the last window, and writes a run folder "
        "with plots. About a minute on a 2-core CPU.",
    )
    demo.add_argument(
        "--steps", type=int, default=DEMO_STEPS, help=f"environment steps (default {DEMO_STEPS:,})"
    )
    demo.add_argument("--seeds", type=int, default=1, help="seeds, vmapped (default 1)")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    common_run_options(demo)
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train",
        help="train an algorithm on an environment and write a run folder",
        description="Train one algorithm over several seeds (vmapped) and write a run folder: "
        "config.json (reload with --config to reproduce), metrics.csv, samples.nc (ArviZ), "
        "checkpoint.npz, summary.md and plots. Precedence: --config, then --set, then the "
        "other flags.",
    )
    train.add_argument("--env", default="escape", help="environment (supported: escape)")
    train.add_argument("--algo", help=f"algorithm: {algos}")
    train.add_argument(
        "--model",
        metavar="FILE.py:FN",
        help="NumPyro model for the LKTD family (default models/mlp_q.py:sarsa_spike_slab)",
    )
    train.add_argument("--config", metavar="FILE.json", help="a config.json to start from")
    train.add_argument("--seeds", type=int, help="number of seeds (default 1)")
    train.add_argument("--seed", type=int, help="first seed (default 0)")
    train.add_argument(
        "--steps", type=int, help="environment steps per seed (default 1,000,000, the paper's)"
    )
    train.add_argument(
        "--max-draws", type=int, help="draws per chain kept in samples.nc (default 1000)"
    )
    train.add_argument("--out", help="run folder (default runs/ENV-ALGO)")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    common_run_options(train)
    train.set_defaults(func=_train)

    diag = sub.add_parser(
        "diagnose",
        help="R-hat, ESS, MCSE, intervals, coverage and calibration of a run folder",
        description="Read a run folder's samples.nc and print the ArviZ diagnostics of the "
        "sampled Q-values (R-hat, ESS bulk/tail, MCSE, equal-tailed intervals), their coverage, "
        "MSE and width against the exact truth, and calibration; writes diagnose.md, "
        "diagnostics.csv, calibration.png, trace.png, interval_heatmaps.png and, with several "
        "chains, rhat_over_time.png into the folder.",
    )
    diag.add_argument("folder", help="a run folder written by lktd train or lktd demo")
    diag.set_defaults(func=_diagnose)

    table = _experiments()
    listing = "\n".join(f"  {n:<12} {p.name}: {_first_doc_line(p)}" for n, p in table.items())
    exp = sub.add_parser(
        "experiment",
        help="run a study or benchmark from experiments/",
        description="Run a script from experiments/ with the remaining arguments "
        "(e.g. 'lktd experiment escape --help').\n\navailable:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("name", help="experiment name: " + ", ".join(table))
    exp.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the experiment")
    exp.set_defaults(func=_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"lktd {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback
        if os.environ.get("LKTD_DEBUG"):
            raise
        message = runs.one_line(e)
        if not isinstance(e, ValueError | OSError):
            message = f"{type(e).__name__}: {message} (LKTD_DEBUG=1 shows the traceback)"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
