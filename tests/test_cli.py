"""The ``lktd`` command driven as a user drives it: subprocesses of ``python -m lktd_ppl.cli``.

Tiny budgets: ``lktd train`` runs 2000 steps with a 1000-step window (two evaluations per window),
the tutorial's escape runs 20 000 steps (the demo's default 10 000-step window) and its control
runs 2000 steps.  The training runs the tests inspect start at the start of the test session
(``start_background_runs``, through ``tests/conftest.py``), two at a time and at a lower CPU
priority, beside the other test files; this file's tests run last and wait on them.  Compiled
programs go to the tests' compilation cache (``JAX_COMPILATION_CACHE_DIR``, set by conftest).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2000", "--set", "escape.window=1000", "--set", "escape.evals_per_window=2"]
BASELINES = ["sgld", "sghmc", "dqn", "bootdqn", "qrdqn", "kova"]
RUN_FILES = ["config.json", "metrics.csv", "samples.nc", "checkpoint.npz", "summary.md"]
TRAIN_PLOTS = ["coverage_over_time", "learning_curve", "interval_heatmaps", "policy_quiver"]
TABLE_COLUMNS = [
    "coverage",
    "coverage_equal_tailed",
    "mse",
    "width",
    "start_coverage",
    "start_sq_error",
]
ACTIONS = ["E", "N", "W", "S"]
WORKERS = 2
# the background runs yield the CPU to the tests running beside them
NICE = ["nice", "-n", "10"]


def cli_env() -> dict:
    env = dict(os.environ)  # JAX_COMPILATION_CACHE_DIR from conftest included
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("LKTD_DEBUG", None)
    return env


def lktd(
    *args, cwd: Path | None = None, timeout: float = 600, background: bool = False
) -> subprocess.CompletedProcess:
    cmd = [*(NICE if background else []), sys.executable, "-m", "lktd_ppl.cli", *map(str, args)]
    return subprocess.run(
        cmd, cwd=cwd or ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def run_all(jobs: dict[str, list]) -> dict[str, subprocess.CompletedProcess]:
    """Run ``lktd`` command lines concurrently, ``WORKERS`` at a time."""
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {name: pool.submit(lktd, *args) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------------------------
# every run the tests inspect, started with the session: chains of commands, two at a time
# --------------------------------------------------------------------------------------------

TUTORIAL = ROOT / "docs" / "tutorial.md"
TUTORIAL_STEPS = 20_000
# a control run of the tutorial (``--env``): two evaluations, the least that makes a curve
CONTROL_STEPS, CONTROL_EVAL_EVERY = 2000, 1000
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def tutorial_blocks() -> list[tuple[str, str]]:
    """The tutorial's runnable blocks, in order: ("bash" | "python", code)."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(TUTORIAL.read_text())]


def shrink_control(line: str) -> str:
    """A control-task command line with ``CONTROL_STEPS`` steps, evaluated every
    ``CONTROL_EVAL_EVERY``."""
    assert "control.eval_every=" in line, f"a control run without its evaluation interval: {line}"
    line = re.sub(r"--steps \d+", f"--steps {CONTROL_STEPS}", line)
    return re.sub(r"control\.eval_every=\d+", f"control.eval_every={CONTROL_EVAL_EVERY}", line)


def shrink(code: str) -> str:
    """A tutorial bash block with its step counts cut to ``TUTORIAL_STEPS`` (control tasks: to
    ``CONTROL_STEPS``)."""
    lines = []
    for line in code.splitlines():
        if re.match(r"\s*lktd train\b", line):
            assert "--steps" in line or "--config" in line, f"unbounded run in the tutorial: {line}"
        if re.match(r"\s*lktd train\b.*--env\b", line) and "--steps" in line:
            line = shrink_control(line)
        else:
            line = re.sub(
                r"--steps (\d+)", lambda m: f"--steps {min(int(m.group(1)), TUTORIAL_STEPS)}", line
            )
        if re.match(r"\s*lktd demo\b", line) and "--steps" not in line:
            line += f" --steps {TUTORIAL_STEPS}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_tutorial(folder: Path) -> list[tuple[str, str, subprocess.CompletedProcess]]:
    """Run the tutorial's blocks in order in ``folder`` (with ``models/`` linked in), at the
    background runs' priority; stop at the first failure."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").symlink_to(ROOT / "models")
    done = []
    for kind, code in tutorial_blocks():
        if kind == "bash":
            code = shrink(code)
            cmd = [*NICE, "bash", "-euo", "pipefail", "-c", code]
        else:
            cmd = [*NICE, sys.executable, "-c", code]
        proc = subprocess.run(
            cmd, cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=900
        )
        done.append((kind, code, proc))
        if proc.returncode != 0:
            break
    return done


def lktd_chain(work: Path) -> dict[str, subprocess.CompletedProcess]:
    """LKTD, 2 seeds x 2 chains; then its rerun from config.json and ``lktd diagnose``."""
    out = {
        "train": lktd(
            "train",
            "--algo",
            "lktd",
            "--seeds",
            "2",
            "--set",
            "num_chains=2",
            "--max-draws",
            "60",
            *TINY,
            "--out",
            work / "lktd",
            background=True,
        )
    }
    if out["train"].returncode == 0:
        config = work / "lktd" / "config.json"
        out["rerun"] = lktd("train", "--config", config, "--out", work / "rerun", background=True)
        out["diagnose"] = lktd("diagnose", work / "lktd", background=True)
    return out


def baseline_chain(work: Path, algo: str) -> dict[str, subprocess.CompletedProcess]:
    out = {"train": lktd("train", "--algo", algo, *TINY, "--out", work / algo, background=True)}
    if algo == "dqn" and out["train"].returncode == 0:
        out["diagnose"] = lktd("diagnose", work / algo, background=True)
    return out


class Runs(NamedTuple):
    work: Path  # the runs' folder
    futures: dict[str, Future]  # chain name -> its results


def start_background_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Start every chain, the longest (the tutorial) first; called by conftest before the
    session's first test.  The pool takes no more work, and its threads end with the chains."""
    work = tmp_path_factory.mktemp("cli")
    pool = ThreadPoolExecutor(WORKERS)
    futures = {"tutorial": pool.submit(run_tutorial, work / "tutorial")}
    futures["lktd"] = pool.submit(lktd_chain, work)
    for algo in ["kova", "bootdqn", "sgld", "sghmc", "dqn"]:  # the tutorial runs qrdqn
        futures[algo] = pool.submit(baseline_chain, work, algo)
    pool.shutdown(wait=False)
    return Runs(work, futures)


@pytest.fixture(scope="module")
def work(background_runs: Runs) -> Path:
    return background_runs.work


@pytest.fixture(scope="module")
def jobs(background_runs: Runs) -> dict[str, Future]:
    return background_runs.futures


def tutorial_command(jobs, pattern: str) -> subprocess.CompletedProcess:
    """The tutorial bash block whose code matches ``pattern`` (it must ran and passed)."""
    for kind, code, proc in jobs["tutorial"].result():
        if kind == "bash" and re.search(pattern, code):
            return ok(proc)
    raise AssertionError(f"no tutorial block runs {pattern!r}")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

ROW = re.compile(r"^\| (E|N|W|S|avg) \|(.*)\|$", re.M)


def printed_table(text: str) -> dict[str, list[float]]:
    """The summary table's rows: label -> numbers ('-' as NaN)."""
    rows = {}
    for m in ROW.finditer(text):
        cells = [c.strip() for c in m.group(2).split("|")]
        rows[m.group(1)] = [float("nan") if c == "-" else float(c) for c in cells]
    return rows


def expected_table(folder: Path) -> dict[str, list[float]]:
    """The same table recomputed from metrics.csv: last window, per-seed mean, mean over seeds."""
    cfg = json.loads((folder / "config.json").read_text())
    total, window = cfg["escape"]["total_steps"], cfg["escape"]["window"]
    with open(folder / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > total - window]
    seeds = sorted({r["seed"] for r in rows})
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for a in ACTIONS:
            out[a] = []
            for col in TABLE_COLUMNS:
                per_seed = [
                    np.nanmean([float(r[f"{col}_{a}"]) for r in rows if r["seed"] == s])
                    for s in seeds
                ]
                out[a].append(float(np.nanmean(per_seed)))
        out["avg"] = list(np.nanmean([out[a] for a in ACTIONS], axis=0))
    return out


def assert_table_matches(stdout: str, folder: Path) -> None:
    printed, expected = printed_table(stdout), expected_table(folder)
    assert set(printed) == {*ACTIONS, "avg"}, stdout
    for label in printed:
        p, e = np.array(printed[label]), np.array(expected[label])
        assert p.shape == (len(TABLE_COLUMNS),)
        assert np.array_equal(np.isnan(p), np.isnan(e)), (label, p, e)
        assert np.allclose(p, e, rtol=1e-3, atol=6e-5, equal_nan=True), (label, p, e)
    for a in ("E", "N", "avg"):  # the start cell scores E and N only
        assert np.all(np.isfinite(printed[a])), printed[a]
    for a in ("W", "S"):
        assert np.all(np.isfinite(printed[a][:4])) and np.all(np.isnan(printed[a][4:]))


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file(), f"{path} missing"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert float(np.var(image[..., :3])) > 0, f"{path} is blank"


def assert_run_folder(folder: Path, chains: int, max_draws: int = 1000) -> None:
    from lktd_ppl.diagnostics import load_datatree

    for name in RUN_FILES:
        assert (folder / name).is_file(), f"{folder / name} missing"
    for name in TRAIN_PLOTS:
        assert_png(folder / f"{name}.png")
    tree = load_datatree(folder / "samples.nc")
    q = tree.posterior["q"]
    assert q.dims == ("chain", "draw", "cell", "action")
    assert q.sizes["chain"] == chains and 2 <= q.sizes["draw"] <= max_draws
    assert q.sizes["cell"] == 100 and list(q["action"].values) == ACTIONS
    assert np.all(np.isfinite(q.values))
    truth = tree["constant_data"]["q_true"].values
    assert truth.shape == (100, 4) and np.isclose(truth[0, 0], -8.5233, atol=1e-3)
    assert "theta" in tree["final_parameters"].data_vars


# --------------------------------------------------------------------------------------------
# help
# --------------------------------------------------------------------------------------------


def test_help_of_every_command():
    procs = run_all(
        {
            "top": ["--help"],
            **{c: [c, "--help"] for c in ["demo", "train", "diagnose", "experiment"]},
        }
    )
    for name, proc in procs.items():
        ok(proc)
        assert proc.stdout.startswith("usage: lktd"), name
    for algo in ["lktd", "sgld", "sghmc", "dqn", "bootdqn", "qrdqn", "kova"]:
        assert algo in procs["train"].stdout
    assert "escape" in procs["experiment"].stdout and "bench" in procs["experiment"].stdout
    assert "experiment" in procs["top"].stdout and "diagnose" in procs["top"].stdout


# --------------------------------------------------------------------------------------------
# demo and train
# --------------------------------------------------------------------------------------------


def test_demo_prints_the_table_and_writes_the_folder(jobs, work):
    """The tutorial starts with ``lktd demo`` (run there with 20 000 steps)."""
    proc = tutorial_command(jobs, r"^lktd demo")
    folder = work / "tutorial" / "runs" / "demo"
    assert_table_matches(proc.stdout, folder)
    assert "Run folder: runs/demo/" in proc.stdout
    assert_run_folder(folder, chains=5)  # the demo preset's five chains
    assert (folder / "model.py").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["algo"] == "lktd" and cfg["escape"]["total_steps"] == 20_000
    assert cfg["agent"]["num_chains"] == 5 and cfg["agent"]["model"].endswith(
        "afterstate_spike_slab"
    )
    # the goals, each met or missed with its value, under the table
    assert "equal-tailed 95% coverage within 0.90-0.99 on every action:" in proc.stdout
    # a concise log line per window: steps/s, return, coverage
    logs = [line for line in proc.stderr.splitlines() if "steps/s" in line]
    assert len(logs) == 2 and all("return" in s and "coverage" in s for s in logs), proc.stderr


def test_lktd_train_with_seeds_and_chains(jobs, work):
    proc = ok(jobs["lktd"].result()["train"])
    folder = work / "lktd"
    assert_table_matches(proc.stdout, folder)
    assert_run_folder(folder, chains=4, max_draws=60)  # 2 seeds x 2 chains
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4  # seeds x evaluations
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert [int(r["step"]) for r in rows[:4]] == [500, 1000, 1500, 2000]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["agent"]["num_chains"] == 2 and cfg["seeds"] == 2
    assert cfg["escape"]["window"] == 1000
    logs = [line for line in proc.stderr.splitlines() if "steps/s" in line]
    assert len(logs) == 2, proc.stderr


@pytest.mark.parametrize("algo", BASELINES)
def test_train_each_algorithm(jobs, work, algo):
    if algo == "qrdqn":  # the tutorial's run of it
        proc = tutorial_command(jobs, r"^lktd train --algo qrdqn ")
        folder, steps = work / "tutorial" / "runs" / "qrdqn", TUTORIAL_STEPS
    else:
        proc = ok(jobs[algo].result()["train"])
        folder, steps = work / algo, 2000
    assert_table_matches(proc.stdout, folder)
    chains = 10 if algo == "bootdqn" else 1  # BootDQN: one chain per head
    assert_run_folder(folder, chains=chains)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["algo"] == algo and cfg["escape"]["total_steps"] == steps
    assert (folder / "model.py").is_file() == (algo in ("sgld", "sghmc"))


def test_rerun_from_config_reproduces_the_metrics(jobs, work):
    ok(jobs["lktd"].result()["rerun"])
    first = (work / "lktd" / "metrics.csv").read_text()
    assert first == (work / "rerun" / "metrics.csv").read_text()
    a = json.loads((work / "lktd" / "config.json").read_text())
    b = json.loads((work / "rerun" / "config.json").read_text())
    # the escape default (the recommended preset): the afterstate network
    assert a["agent"]["model"] == b["agent"]["model"] == "model.py:sarsa_afterstate_spike_slab"
    assert b["model_source"] == f"{work / 'lktd' / 'model.py'}:sarsa_afterstate_spike_slab"
    a.pop("model_source"), b.pop("model_source")
    assert a == b
    assert (work / "lktd" / "model.py").read_text() == (work / "rerun" / "model.py").read_text()


def test_checkpoint_restores_the_final_learner_state(jobs, work):
    import jax

    from lktd_ppl.agents.harness import make_task
    from lktd_ppl.config import spec_from_folder
    from lktd_ppl.diagnostics import load_datatree
    from lktd_ppl.run_folder import load_checkpoint
    from lktd_ppl.training import make_learner

    ok(jobs["lktd"].result()["train"])
    folder = work / "lktd"
    state = load_checkpoint(folder)
    tree = load_datatree(folder / "samples.nc")
    position = np.asarray(state.position)  # (seeds, chains, p)
    assert position.shape[:2] == (2, 2)
    theta = tree["final_parameters"]["theta"].values
    np.testing.assert_array_equal(position.reshape(4, -1), theta)
    # the Q-grid of the restored parameters is the last draw in samples.nc
    spec = spec_from_folder(folder)
    learner = make_learner(spec)
    grid = make_task(spec.escape).grid_obs
    seed0 = jax.tree.map(lambda x: x[0], state)
    q_last = np.asarray(learner.q_grid(seed0, grid))  # (chains, cells, A)
    np.testing.assert_allclose(q_last, tree.posterior["q"].values[:2, -1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------------


def test_diagnose_prints_and_plots(jobs, work):
    proc = ok(jobs["lktd"].result()["diagnose"])
    folder = work / "lktd"
    out = proc.stdout
    for section in ["Convergence", "Selected Q-values", "Against the exact truth", "Calibration"]:
        assert section in out, out
    # the convergence table: R-hat and ESS for every action and overall, all finite
    conv = out.split("## Convergence")[1].split("##")[0]
    rows = {m.group(1): m.group(2) for m in ROW.finditer(conv)}
    assert set(rows) == set(ACTIONS)
    all_row = re.search(r"^\| all \|(.*)\|$", conv, re.M).group(1)
    numbers = [float(c) for c in all_row.split("|")]
    assert np.all(np.isfinite(numbers)) and numbers[0] == 358  # scored entries
    assert numbers[1] >= 1.0 and numbers[3] > 0  # R-hat median, ESS bulk min
    # start cell E and N are reported, with their truth
    assert "| (0, 0) E | -8.5233 |" in out and "| (0, 0) N | -8.5233 |" in out
    for name in ["calibration", "trace", "interval_heatmaps", "rhat_over_time"]:
        assert_png(folder / f"{name}.png")
    with open(folder / "diagnostics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 358
    assert {"r_hat", "ess_bulk", "ess_tail", "mcse_mean", "eti95_lb", "eti95_ub"} <= set(table[0])
    assert (folder / "diagnose.md").read_text() == out


def test_diagnose_single_chain(jobs, work):
    proc = ok(jobs["dqn"].result()["diagnose"])
    assert "R-hat needs at least 2 chains" in proc.stdout
    assert_png(work / "dqn" / "calibration.png")
    assert_png(work / "dqn" / "trace.png")
    assert not (work / "dqn" / "rhat_over_time.png").exists()


# --------------------------------------------------------------------------------------------
# the tutorial
# --------------------------------------------------------------------------------------------


def test_tutorial(jobs, work):
    """Every bash and python block of docs/tutorial.md runs, in order, with 20 000 steps (control
    tasks: 2000)."""
    done = jobs["tutorial"].result()
    for kind, code, proc in done:
        assert proc.returncode == 0, f"tutorial {kind} block failed:\n{code}\n{proc.stderr}"
    assert len(done) == len(tutorial_blocks()) >= 10
    folder = work / "tutorial"
    assert "Laplace" in (folder / "my_q.py").read_text()
    assert "SIGMA = 0.2" in (folder / "my_q.py").read_text()
    assert "SIGMA = 0.2" in (folder / "runs" / "laplace-sigma0.2" / "model.py").read_text()
    assert "Laplace" in (folder / "runs" / "laplace" / "model.py").read_text()
    assert "Laplace" not in (folder / "runs" / "gaussian" / "model.py").read_text()
    for run in ["gaussian", "laplace", "laplace-sigma0.2", "gaussian-again", "qrdqn"]:
        assert (folder / "runs" / run / "samples.nc").is_file(), run
    assert "same metrics" in tutorial_command(jobs, r"cmp ").stdout
    assert "Convergence" in tutorial_command(jobs, r"lktd diagnose").stdout
    assert_png(folder / "runs" / "gaussian" / "rhat_over_time.png")
    outputs = "".join(proc.stdout for kind, _, proc in done if kind == "python")
    assert "exact mean" in outputs and "max R-hat" in outputs
    for image in re.findall(r"\]\((img/[^)]+\.png)\)", TUTORIAL.read_text()):
        path = TUTORIAL.parent / image
        assert path.is_file() and path.stat().st_size < 200_000, image


# --------------------------------------------------------------------------------------------
# bad command lines: one line on stderr naming the problem, exit status 2
# --------------------------------------------------------------------------------------------

NOT_NUMPYRO = "def fn(batch):\n    return batch['obs'] * 2\n"


def assert_one_line_error(code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert expected in lines[0] and "Traceback" not in stderr, lines[0]
    assert lines[0].startswith("lktd")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--algo", "nosuch", *TINY], "unknown algorithm 'nosuch'"),
        (["train", "--algo", "lktd", "--model", "{tmp}/missing.py:fn", *TINY], "does not exist"),
        (["train", "--algo", "lktd", "--model", "{tmp}/plain.py:fn", *TINY], "NumPyro model"),
        (["train", "--algo", "lktd", "--set", "pseudo_pop=5", *TINY], "unknown config key"),
        (["train", "--algo", "dqn", "--steps", "-5"], "--steps must be a positive"),
    ],
)
def test_bad_command_lines(tmp_path, args, expected):
    (tmp_path / "plain.py").write_text(NOT_NUMPYRO)
    proc = lktd(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_one_line_error(proc.returncode, proc.stderr, expected)
    assert not list(tmp_path.glob("runs")) and proc.stdout == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--algo", "lktd", "--model", "{tmp}/plain.py:nope", *TINY], "no function"),
        (["train", "--algo", "lktd", "--model", "no_colon.py"], "path/to/file.py:function"),
        (["train", "--algo", "dqn", "--steps", "0"], "--steps must be a positive"),
        (["train", "--algo", "dqn", "--steps", "1234"], "multiple of the evaluation interval"),
        (["train", "--algo", "dqn", *TINY[2:], "--steps", "500"], "exceed escape.train_start"),
        (["train", "--algo", "dqn", "--set", "escape.window=ten"], "expected an integer"),
        (["train", "--algo", "dqn", "--set", "double_q=maybe"], "expected true/false"),
        (["train", "--algo", "lktd", "--set", "step_size_drops=(5,0.1,2)"], "step_size_drops:"),
        (["train", "--algo", "lktd", "--set", "step_size_drops=x"], "expected pairs (an integer"),
        (["train", "--algo", "dqn", "--set", "window=5000"], "did you mean 'escape.window'"),
        (["train", "--algo", "dqn", "--set", "gamma=0.5"], "differs from escape.gamma"),
        (["train", "--algo", "lktd", "--set", "method=sgld"], "chosen by --algo"),
        (["train", "--algo", "lktd", "--set", "num_chains"], "expected KEY=VALUE"),
        (["train", "--algo", "dqn", "--model", "models/mlp_q.py:sarsa_gaussian"], "LKTD family"),
        (["train", "--algo", "kova", "--set", "hidden=4096,4096", *TINY], "GiB"),
        (["train", "--env", "cartpole", "--algo", "dqn"], "supported: escape"),
        (["train", "--steps", "2000"], "give --algo"),
        (["train", "--config", "{tmp}/missing.json"], "does not exist"),
        (["train", "--config", "{tmp}/plain.py"], "not valid JSON"),
        (["train", "--seeds", "0", "--algo", "dqn", *TINY], "--seeds must be at least 1"),
        (["train", "--algo", "dqn", *TINY, "--out", "{tmp}/old"], "already holds a finished run"),
        (["diagnose", "{tmp}/no_run"], "does not exist"),
        (["diagnose", "{tmp}"], "is it a run folder"),
        (["experiment", "nosuch"], "unknown experiment 'nosuch'"),
        (["nosuch"], "invalid choice"),
        (["train", "--steps", "ten"], "invalid int value"),
    ],
)
def test_more_bad_command_lines(tmp_path, capsys, args, expected):
    """The same contract, through ``main`` in this process (no interpreter start per case)."""
    from lktd_ppl.cli import main

    (tmp_path / "plain.py").write_text(NOT_NUMPYRO)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    (tmp_path / "old" / "summary.md").write_text("")  # a finished run (no status.json: older)
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.err, expected)


def test_step_size_drops_from_the_command_line_and_back_from_config_json():
    """A tuple of (stage, factor) pairs: text on the command line, lists in config.json."""
    import json

    from lktd_ppl.config import build_spec

    spec = build_spec(algo="lktd", sets=["step_size_drops=((70000, 0.1), (88000, 0.01))"])
    assert spec.agent.step_size_drops == ((70000, 0.1), (88000, 0.01))
    one = build_spec(algo="lktd", sets=["step_size_drops=(88000,0.01)"])
    assert one.agent.step_size_drops == ((88000, 0.01),)
    again = build_spec(config=json.loads(json.dumps(spec.to_dict())))
    assert again.agent == spec.agent


def test_unknown_key_lists_the_valid_ones():
    proc = lktd("train", "--algo", "lktd", "--set", "pseudo_pop=5")
    line = proc.stderr.strip()
    assert "did you mean 'pseudo_population'" in line
    assert "num_chains" in line and "escape.window" in line


def test_kova_beyond_memory_is_refused_with_the_estimate(tmp_path, capsys):
    from lktd_ppl.cli import main

    code = main(
        [
            "train",
            "--algo",
            "kova",
            *TINY,
            "--set",
            "hidden=4096,4096",
            "--out",
            str(tmp_path / "k"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "p x p covariance" in err and "bytes" in err
    assert not (tmp_path / "k").exists()  # refused before anything started
