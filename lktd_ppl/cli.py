"""The ``lktd`` command: demo, train, diagnose, experiment.

This module and :mod:`lktd_ppl.config` import JAX only inside the commands.  Every error is one
line on stderr with exit status 2 (set ``LKTD_DEBUG=1`` to see the traceback of an unexpected one);
a run in which a seed diverged writes its folder, then says so in one line and exits with status 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lktd_ppl import compile_cache, config, registry, scale
from lktd_ppl.presets import PRESETS

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
# the product's studies and benchmarks (scripts in a checkout's experiments/ folder)
EXPERIMENTS = {
    "escape": "escape_study.py",
    "control": "control_study.py",
    "bench": "bench.py",
}
DEMO_STEPS = PRESETS["demo"]["lktd"]["escape"]["total_steps"]
CHECKPOINT_EVERY = 30.0  # seconds (lktd_ppl.training.CHECKPOINT_EVERY, without importing JAX)
RUN_FILES = ("config.json", "metrics.csv", "samples.nc", "checkpoint.npz", "summary.md")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _log(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"  {line}", file=sys.stderr)


def one_line(err: BaseException) -> str:
    """A one-line message for ``err`` (its first non-empty line)."""
    text = str(err).strip()
    first = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return first or type(err).__name__


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def _train_and_report(
    spec: config.RunSpec,
    out: Path,
    args: argparse.Namespace,
    overwrite: bool,
    resume: bool = False,
    extra: Callable[[Path], str] | None = None,
) -> None:
    """Train, write the run folder and print its summary; ``extra(out)``, if given, is appended
    to summary.md first."""
    from lktd_ppl import training

    e = spec.protocol
    members = spec.members
    quiet = args.quiet
    args.run_folder = out  # named by the message of an interrupted run
    if problem := scale.split_problem(spec.seeds, args.devices, scale.job_size()):
        raise config.RunError(problem)
    # loads and checks the model, KOVA's memory need, ...
    train = training.make_train(spec, devices=args.devices)
    if not scale.is_main_process():  # another process of the job: its seeds, no output
        import jax

        train(jax.numpy.stack([jax.random.key(s) for s in spec.seed_list]), progress=False)
        return
    if not quiet:
        every = e.window if spec.control is None else e.eval_every
        what = f"resuming {out}: " if resume else ""
        eprint(
            f"{what}{spec.algo} on {spec.env}: {spec.seeds} seed(s) x {members} member(s), "
            f"{e.total_steps:,} steps, a log line every {every:,} steps (compiling first)"
        )
    with warnings.catch_warnings():  # the harness's log averages NaNs before the burn-in ends
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        # quantiles over a sample buffer still empty (NaN until the burn-in ends)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        results = training.execute(
            spec,
            out,
            progress=not quiet and sys.stderr.isatty(),
            log=None if quiet else _log,
            overwrite=overwrite,
            train=train,
            resume=resume,
            checkpoint_every=args.checkpoint_every,
            command=args.command_line,
        )
    if extra is not None and (out / "summary.md").is_file():
        with open(out / "summary.md", "a") as f:
            f.write("\n" + extra(out))
    print((out / "summary.md").read_text(), end="")
    files = [f for f in (*RUN_FILES, "episodes.csv", "model.py") if (out / f).exists()]
    plots = sorted(p.name for p in out.glob("*.png"))
    print(f"\nRun folder: {out}/ ({', '.join(files)}; plots: {', '.join(plots)})")
    if spec.control is None and (out / "samples.nc").is_file():  # scored against the exact Q
        print(f"Next: lktd diagnose {out}")
    from lktd_ppl import divergence

    message = divergence.run_message(spec.seed_list, members, spec.agent, results["divergence"])
    if message:
        raise divergence.RunDiverged(message)


def _demo(args: argparse.Namespace) -> int:
    """a short LKTD run on the escape room, scored against the exact Q

    LKTD with the demo preset (five chains of the afterstate network, eps0 lowered near the end;
    lktd_ppl/presets.py) on the 10x10 escape room; prints coverage, equal-tailed coverage, MSE and
    interval width per action against the exact ground-truth Q over the last window, then whether
    the calibration goals are met, beside the paper's LKTD row, and writes a run folder with plots
    (a run already in --out is removed whole first). About a minute on a 2-core CPU."""
    from lktd_ppl import demo, run_folder, training

    spec = config.build_spec(
        algo="lktd",
        preset="demo",
        steps=args.steps,
        seeds=args.seeds,
        first_seed=args.seed,
        sets=args.set,
    )
    out = Path(args.out)
    if scale.is_main_process():  # the process that writes the run folder
        training.check_folder(out, overwrite=True)  # replaced whole, never mixed

    def goals(folder: Path) -> str:
        e = spec.escape
        cols = run_folder.read_metrics(folder)
        return demo.verdict(run_folder.last_window_means(cols, e.total_steps, e.window))

    _train_and_report(spec, out, args, overwrite=True, extra=goals)
    return 0


def _train(args: argparse.Namespace) -> int:
    """train an algorithm on an environment and write a run folder

    Train one algorithm over several seeds (vmapped) and write a run folder: config.json (reload
    with --config to reproduce), metrics.csv, samples.nc (ArviZ), checkpoint.npz, summary.md,
    plots, run.json (command, package versions) and status.json. While it runs, resume.npz and
    metrics.csv so far are saved every --checkpoint-every seconds; SIGTERM or Ctrl-C saves them and
    exits; --resume DIR continues. Precedence: --preset, then --config, then --set, then the other
    flags."""
    from lktd_ppl import training

    if args.resume:
        return _resume(args)
    loaded = config.load_config(args.config) if args.config else None
    config_dir = config.config_path(args.config).parent if args.config else None
    spec = _spec_from_args(args, loaded, str(args.config), config_dir)
    env_name = spec.env.replace(":", "-").replace("/", "-")  # module:EnvId-v0, namespace/EnvId
    out = Path(args.out) if args.out else Path("runs") / f"{env_name}-{spec.algo}"
    if scale.is_main_process():  # the process that writes the run folder
        training.check_folder(out, args.overwrite)
        _note_replaced(out, args.quiet)
    _train_and_report(spec, out, args, args.overwrite)
    return 0


def _spec_from_args(
    args: argparse.Namespace, loaded: dict | None, where: str, config_dir: Path | None
) -> config.RunSpec:
    """The run's spec from ``lktd train``'s flags on top of the config ``loaded`` (if any)."""
    return config.build_spec(
        algo=args.algo,
        env=args.env,
        preset=args.preset,
        config=loaded,
        sets=args.set,
        model=args.model,
        seeds=args.seeds,
        first_seed=args.seed,
        steps=args.steps,
        max_draws=args.max_draws,
        where=where,
        config_dir=config_dir,
    )


def _note_replaced(out: Path, quiet: bool) -> None:
    """Say so when the run folder holds an unfinished run that the new run replaces."""
    from lktd_ppl.run_status import folder_state, read_status

    state = folder_state(out)
    if state in ("interrupted", "failed") and not quiet:
        step = read_status(out).get("step")
        at = f" at step {step:,}" if isinstance(step, int) else ""
        eprint(
            f"replacing the {state} run in {out} (stopped{at}); 'lktd train --resume {out}' "
            "continues such a run instead"
        )


def _resume(args: argparse.Namespace) -> int:
    """``lktd train --resume DIR``: the run in DIR, from its config.json, continued from its
    checkpoint; other settings given must agree with it."""
    from lktd_ppl import training

    for flag, given in (("--out", args.out), ("--overwrite", args.overwrite)):
        if given:
            raise config.RunError(f"--resume continues the run in its own folder: drop {flag}")
    if scale.job_size() > 1:
        raise config.RunError(
            f"--resume runs in one process, got {scale.job_size()} (runs of several processes "
            "keep no checkpoint)"
        )
    folder = Path(args.resume)
    if args.config:
        raise config.RunError("--resume reads the run's own config.json: drop --config")
    if not (folder / "config.json").is_file():
        raise config.RunError(f"--resume {str(folder)!r}: not a run folder (no config.json)")
    spec = _spec_from_args(args, config.load_config(folder), str(folder / "config.json"), folder)
    training.check_resume(folder, spec)
    _train_and_report(spec, folder, args, overwrite=False, resume=True)
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    """R-hat, ESS, MCSE, intervals, coverage and calibration of a run folder

    Read a run folder's samples.nc and print the ArviZ diagnostics of the sampled Q-values (R-hat,
    ESS bulk/tail, MCSE, equal-tailed intervals), their coverage, MSE and width against the exact
    truth, and calibration; writes diagnose.md, diagnostics.csv, calibration.png, trace.png,
    interval_heatmaps.png and, with several chains, rhat_over_time.png into the folder.  On a
    control-task run (no exact truth): the mixing verdict, convergence and interval widths at the
    run's probe states, diagnose.md and diagnostics.csv."""
    from lktd_ppl.diagnostics import diagnose

    report = diagnose(args.folder)
    print(report, end="")
    return 0


def _experiments() -> dict[str, Path]:
    """Name -> script of the product's studies and benchmarks, where this is a checkout."""
    return {name: EXPERIMENTS_DIR / file for name, file in EXPERIMENTS.items()}


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
    """run one of the product's studies or benchmarks (a checkout's experiments/ scripts)

    Run one of the product's studies or benchmarks (scripts in a checkout's experiments/ folder)
    with the remaining arguments (e.g. 'lktd experiment escape --help')."""
    import runpy

    table = _experiments()
    if args.name not in table:
        raise config.RunError(f"unknown experiment {args.name!r}; available: {', '.join(table)}")
    path = table[args.name]
    if not path.is_file():
        raise config.RunError(
            f"experiment {args.name!r} is a script of a checkout of the project "
            f"(experiments/{path.name}), not of this installation ({EXPERIMENTS_DIR} does not "
            "exist): clone the repository and run it there"
        )
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


def _launch(args: argparse.Namespace) -> int:
    """run an lktd command as several local processes of one jax.distributed job

    Start --processes copies of 'lktd ARGS...' (e.g. 'lktd launch --processes 2 -- train
    --seeds 16 ...') on this machine, joined into one jax.distributed job over 127.0.0.1 (gloo
    collectives on CPU) through the LKTD_COORDINATOR, LKTD_NUM_PROCESSES and LKTD_PROCESS_ID
    variables; each process runs its share of the seeds and process 0 writes the results. On
    several hosts, set those variables on each host and run the lktd command there instead."""
    if args.processes < 1:
        raise config.RunError(f"--processes must be at least 1, got {args.processes}")
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    if not rest or rest[0] not in ("train", "demo", "experiment"):
        raise config.RunError(
            f"launch runs train, demo or experiment, got {' '.join(rest) or 'nothing'!r}"
        )
    return scale.launch(args.processes, rest, port=args.port, pin=not args.no_pin)


def command(sub: Any, name: str, func: Any, **kwargs: Any) -> argparse.ArgumentParser:
    """The subcommand ``name`` running ``func``: its help is the docstring's first line, its
    description the rest."""
    summary, _, rest = (func.__doc__ or "").partition("\n")
    description = " ".join(line.strip() for line in rest.splitlines() if line.strip())
    parser = sub.add_parser(name, help=summary.strip(), description=description, **kwargs)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    algos = ", ".join(registry.ALGORITHMS)
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
            "num_chains=4), escape.FIELD (e.g. escape.window=5000) or, on a control task, "
            "control.FIELD (e.g. control.eval_every=2000); values are parsed by the "
            "field's type (tuples as 32,32; none for optional fields)",
        )
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")
        p.add_argument(
            "--devices",
            type=int,
            metavar="N",
            help="split the seeds over N devices of this process (on CPU: N host devices, set "
            "up before JAX starts); --seeds must be a multiple of N times the processes "
            "(lktd launch); it changes no result (default 1)",
        )
        p.add_argument(
            "--chain-devices",
            type=int,
            metavar="N",
            help="split every seed's chains over N devices of this process (the LKTD family; "
            "on CPU: N host devices, set up before JAX starts; the same as --set "
            "chain_devices=N); num_chains must be a multiple of N; not with --devices or lktd "
            "launch; a stage's numbers are one device's to float32 rounding (default 1)",
        )
        p.add_argument(
            "--checkpoint-every",
            type=float,
            default=CHECKPOINT_EVERY,
            metavar="SECONDS",
            help="save the run's state (resume.npz) and metrics.csv so far at most this often "
            f"(default {CHECKPOINT_EVERY:g}; 0: after every jitted chunk call); the interval "
            "changes no result",
        )

    demo = command(sub, "demo", _demo)
    demo.add_argument(
        "--steps",
        type=int,
        default=DEMO_STEPS,
        help=f"environment steps (default {DEMO_STEPS:,}; the step-size drops stay at their stages)",
    )
    demo.add_argument("--seeds", type=int, default=1, help="seeds, vmapped (default 1)")
    demo.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    common_run_options(demo)

    train = command(sub, "train", _train)
    train.add_argument(
        "--env",
        help="environment, of three kinds: escape (the default; the paper's escape room); a gymnax "
        "id with discrete actions (CartPole-v1, Acrobot-v1, MountainCar-v0, ...; jitted whole); "
        "or a Gymnasium id with discrete actions and a flat Box observation, registered "
        "(LunarLander-v3) or as module:EnvId-v0, the module registering it on import "
        "(mypkg.envs:MyEnv-v0; gymnasium:CartPole-v1 is Gymnasium's own), stepped on the host. "
        "A control task's settings are control.FIELD",
    )
    train.add_argument("--algo", help=f"algorithm: {algos}")
    train.add_argument(
        "--model",
        metavar="FILE.py:FN",
        help="NumPyro model for the LKTD family: a file of your own (path/to/file.py:function) "
        "or a shipped one by name (NAME:function, e.g. mlp_q:sarsa_afterstate_spike_slab; "
        "default: for lktd on the escape room mlp_q:sarsa_afterstate_spike_slab, the recommended "
        "preset's; otherwise mlp_q:sarsa_spike_slab there, mlp_control:sarsa_gaussian on control "
        "tasks)",
    )
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="start from a named configuration of the escape room with every setting written "
        "out (paper: the official code's; recommended: LKTD's default there, the study's "
        "lowest-MSE row calibrated on fresh seeds; demo: lktd demo's, shortened); --config and "
        "--set apply on top",
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
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in --out: the folder is removed whole first (an "
        "interrupted or failed run there is replaced without it)",
    )
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted run in DIR (killed, SIGTERM, Ctrl-C) from its last "
        "checkpoint, with its config.json; settings given must equal the run's, and the package "
        "versions too. On the escape room and gymnax tasks the result is bitwise the "
        "uninterrupted run's; on a Gymnasium task the episodes in progress start again",
    )
    common_run_options(train)

    diag = command(sub, "diagnose", _diagnose)
    diag.add_argument("folder", help="a run folder written by lktd train or lktd demo")

    table = _experiments()
    listing = "\n".join(
        f"  {n:<12} experiments/{p.name}: {_first_doc_line(p) or '(needs a checkout)'}"
        for n, p in table.items()
    )
    exp = command(
        sub,
        "experiment",
        _experiment,
        epilog="available:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("name", help="experiment name: " + ", ".join(table))
    exp.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the experiment")

    launch = command(sub, "launch", _launch)
    launch.add_argument("--processes", type=int, default=2, help="processes (default 2)")
    launch.add_argument("--port", type=int, help="the coordinator's port (default: a free one)")
    launch.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the processes unpinned (default: process i runs on its share of the cores)",
    )
    launch.add_argument("args", nargs=argparse.REMAINDER, help="-- then the lktd command")
    return parser


def main(argv: list[str] | None = None) -> int:
    import shlex

    from lktd_ppl.checkpoint import Interrupted

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["lktd", *argv])
    prog = f"lktd {args.command}"
    try:
        devices = getattr(args, "devices", None)
        chain_devices = getattr(args, "chain_devices", None)
        for flag, n in (("--devices", devices), ("--chain-devices", chain_devices)):
            if n is not None and n < 1:
                raise config.RunError(f"{flag} must be at least 1, got {n}")
        if chain_devices is not None:
            args.set = [*args.set, f"chain_devices={chain_devices}"]
        asked = scale.chain_devices_asked(
            getattr(args, "set", None) or [],
            [getattr(args, "config", None), getattr(args, "resume", None)],
        )
        wanted = max(devices or 1, asked)
        if wanted > 1:  # before JAX starts its backend
            scale.force_host_devices(wanted)
        if args.command != "launch":
            compile_cache.enable()  # programs compiled by an earlier run are read back
        if args.command != "launch" and scale.initialize_from_env() > 1:
            if not scale.is_main_process() and hasattr(args, "quiet"):
                args.quiet = True  # one process speaks
        return args.func(args)
    except Interrupted as stop:
        folder = getattr(args, "run_folder", None)
        print(
            f"{prog}: {stop}; its state is saved: continue with "
            f"'lktd train --resume {shlex.quote(str(folder))}'",
            file=sys.stderr,
        )
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, no traceback
        div = sys.modules.get("lktd_ppl.divergence")  # loaded by any run that can diverge
        if div is not None and isinstance(e, div.RunDiverged):  # a finished run: status 3
            print(f"{prog}: diverged: {one_line(e)}", file=sys.stderr)
            return 3
        if os.environ.get("LKTD_DEBUG"):
            raise
        message = one_line(e)
        if not isinstance(e, ValueError | OSError):
            message = f"{type(e).__name__}: {message} (LKTD_DEBUG=1 shows the traceback)"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
