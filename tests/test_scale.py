"""Seeds and chains split over devices and processes (lktd_ppl.scale): a seed's chains split over
2 forced host devices, in a subprocess started at the beginning of the session
(tests/chain_job.py); a gymnax task's seeds over 2 devices (slow; tests/scale_job.py); and the
one-line errors.  The escape room's seeds split over 2 forced host devices and over a
two-process jax.distributed job are checked against one device by the benchmark's tiny table
(tests/test_bench.py), which runs those splits for its devices rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lktd_ppl import scale
from lktd_ppl.cli import main as lktd
from lktd_ppl.study.command import without

JOB = str(Path(__file__).with_name("scale_job.py"))
CHAIN_JOB = str(Path(__file__).with_name("chain_job.py"))


def start_background_runs(tmp_path_factory):
    """The subprocess's saved arrays, in a thread: a seed's 4 chains stepped on one device and
    split over 2 forced host devices."""
    base = tmp_path_factory.mktemp("scale")
    runs = {"chains": [sys.executable, CHAIN_JOB, str(base / "chains.npz")]}

    def run_all() -> dict:
        done = {}
        for name, cmd in runs.items():
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            done[name] = (proc.returncode, proc.stdout + proc.stderr, base / f"{name}.npz")
        return done

    return ThreadPoolExecutor(1).submit(run_all)


def result(background_runs, name: str) -> dict:
    code, output, path = background_runs.result()[name]
    assert code == 0, output[-3000:]
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def pairs(got: dict, a: str, b: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(key, array of run ``a``, array of run ``b``) for every array the runs saved."""
    keys = sorted(k.split(" ", 1)[1] for k in got if k.startswith(a + " "))
    return [(k, got[f"{a} {k}"], got[f"{b} {k}"]) for k in keys]


def check_equal(compared: list) -> None:
    assert len(compared) > 10
    assert sum(key.startswith("['learner']") for key, _, _ in compared) >= 2
    for key, plain, split in compared:
        if key.startswith("['learner']"):
            assert plain.shape[0] == 4, key  # seed-first
        np.testing.assert_array_equal(plain, split, err_msg=key)


@pytest.mark.slow
def test_two_devices_on_a_gymnax_task_give_each_seed_the_one_device_numbers(tmp_path):
    path = tmp_path / "control.npz"
    subprocess.run([sys.executable, JOB, str(path), "dqn", "CartPole-v1", "2"], check=True)
    with np.load(path) as z:
        check_equal(pairs({k: z[k] for k in z.files}, "plain", "split"))


def test_split_chains_step_as_on_one_device_to_float32_rounding(background_runs):
    got = result(background_runs, "chains")
    plain, split = got["plain"], got["split"]  # (stages, chains, p): 30 stages of 4 chains
    assert plain.shape == (30, 4, 1284)
    # each stage from the same state: equal to the bit, or (where XLA rounds one fusion
    # otherwise on a device's share of the chains) within float32 rounding
    assert sum(np.array_equal(a, b) for a, b in zip(plain, split, strict=True)) >= 25
    assert np.max(np.abs(plain - split)) <= 1e-6 * np.max(np.abs(plain))
    assert not np.array_equal(plain[0], plain[-1])  # the chains moved


@pytest.mark.slow
def test_a_run_with_split_chains_matches_one_device(tmp_path):
    path = tmp_path / "run.npz"
    subprocess.run([sys.executable, CHAIN_JOB, str(path), "run"], check=True)
    with np.load(path) as z:
        for name in ("mse", "position"):
            a, b = z[f"plain_{name}"], z[f"split_{name}"]
            assert np.all(np.isfinite(a)) and a.shape == b.shape
            assert np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(a)), name


def test_chain_devices_must_divide_the_chains_and_exist():
    with pytest.raises(ValueError) as err:
        scale.chain_mesh(3, 4)
    assert str(err.value) == "chain_devices 3 must divide the 4 chains (num_chains) of a seed"
    with pytest.raises(ValueError) as err:
        scale.chain_mesh(4, 4)  # the tests' process has one CPU device
    assert str(err.value) == (
        "chain_devices 4: this process has 1 cpu device(s) (on CPU, set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=4 before JAX starts)"
    )
    assert scale.chain_mesh(1, 4) is None


def test_chains_and_seeds_are_not_split_together():
    from lktd_ppl import training
    from lktd_ppl.config import RunError, build_spec

    spec = build_spec(algo="lktd", preset="paper", sets=["num_chains=4", "chain_devices=2"])
    with pytest.raises(RunError) as err:
        training.make_train(spec, devices=2)
    assert str(err.value) == (
        "chain_devices 2 with the seeds split too (--devices 2, 1 process(es)): split the "
        "seeds or the chains, not both"
    )


def test_per_seed_arrays_and_their_differences():
    """What the benchmark compares a split run by (its devices rows): every results array and
    the learner's state, by path; the arrays not equal to the bit (NaN matching NaN), each with
    its largest difference relative to its largest magnitude."""
    from types import SimpleNamespace

    results = {
        "metrics": {"mse": np.array([[0.5, np.nan]]), "coverage": np.array([[0.9, 0.95]])},
        "episodes": np.array([[3.0, 4.0]]),
        "state": SimpleNamespace(learner={"position": np.ones((1, 4))}, key=np.zeros(1)),
        "config": {"total_steps": 10},
        "wall_time": 1.0,
    }
    got = scale.per_seed_arrays(results)
    assert sorted(got) == [
        "['episodes']",
        "['learner']['position']",
        "['metrics']['coverage']",
        "['metrics']['mse']",
    ]
    assert scale.differences(got, got) == {}
    moved = {**got, "['learner']['position']": np.array([[1.0, 1.0, 1.25, -2.0]])}
    assert scale.differences(moved, got) == {"['learner']['position']": 1.5}  # 3 / max |x| 2
    nan_where_value = {**got, "['metrics']['mse']": np.array([[np.nan, np.nan]])}
    assert scale.differences(got, nan_where_value) == {"['metrics']['mse']": np.inf}
    assert scale.differences(got, {k: got[k] for k in got if k != "['episodes']"}) == {
        "['episodes']": np.inf
    }
    reshaped = {**got, "['episodes']": np.array([3.0, 4.0])}
    assert scale.differences(got, reshaped) == {"['episodes']": np.inf}


def test_split_problem_names_seeds_devices_and_processes():
    assert scale.split_problem(8, 2, 2) is None
    assert scale.split_problem(6, 2, 2) == (
        "--seeds 6 must be a multiple of the 4 devices the seeds are split over "
        "(--devices 2 x 2 process(es))"
    )


def test_a_job_needs_its_coordinator_and_process_id(monkeypatch):
    monkeypatch.setenv(scale.ENV_NUM_PROCESSES, "2")
    monkeypatch.delenv(scale.ENV_COORDINATOR, raising=False)
    monkeypatch.setenv(scale.ENV_PROCESS_ID, "2")
    with pytest.raises(ValueError) as err:
        scale.env_processes()
    assert str(err.value) == (
        "LKTD_NUM_PROCESSES=2 needs LKTD_COORDINATOR=HOST:PORT and LKTD_PROCESS_ID in 0..1, "
        "got '' and '2'"
    )
    monkeypatch.setenv(scale.ENV_NUM_PROCESSES, "1")
    assert scale.env_processes() is None and scale.job_size() == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--algo", "dqn", "--devices", "0"], "--devices must be at least 1, got 0"),
        (
            ["train", "--algo", "lktd", "--chain-devices", "0"],
            "--chain-devices must be at least 1, got 0",
        ),
        (
            ["train", "--algo", "dqn", "--seeds", "3", "--devices", "2"],
            "--seeds 3 must be a multiple of the 2 devices the seeds are split over "
            "(--devices 2 x 1 process(es))",
        ),
        (
            ["launch", "--", "diagnose", "x"],
            "launch runs train, demo or experiment, got 'diagnose x'",
        ),
        (["launch", "--processes", "0", "--", "train"], "--processes must be at least 1, got 0"),
    ],
)
def test_cli_refuses_a_split_it_cannot_make(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored afterwards
    assert lktd([*argv, *(["--out", str(tmp_path / "run")] if argv[0] == "train" else [])]) == 2
    assert capsys.readouterr().err == f"lktd {argv[0]}: error: {message}\n"


def test_a_gymnasium_task_runs_in_one_process_on_one_device():
    from lktd_ppl import training
    from lktd_ppl.config import RunError, build_spec

    spec = build_spec(algo="dqn", env="gymnasium:CartPole-v1", sets=["hidden=8"])
    with pytest.raises(RunError) as err:
        training.make_train(spec, devices=2)
    assert str(err.value) == (
        "--devices 2 on 1 process(es): a Gymnasium task (gymnasium:CartPole-v1) runs on one "
        "device in one process; the escape room and gymnax tasks split their seeds"
    )


def test_the_study_relaunches_itself_without_workers():
    assert without(["--workers", "2", "--seeds", "4", "--workers=3"], "--workers") == [
        "--seeds",
        "4",
    ]


def test_the_command_line_finds_the_chain_devices_a_run_asks_for(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"algo": "lktd", "agent": {"chain_devices": 4}}')
    file = tmp_path / "c.json"
    file.write_text('{"algo": "lktd", "agent": {"num_chains": 2}}')
    asked = scale.chain_devices_asked
    assert asked(["chain_devices=2", "num_chains=4"], [None, None]) == 2
    assert asked([], [str(file), None]) == 1
    assert asked([], [None, str(run)]) == 4
    assert asked(["chain_devices=3"], [None, str(run)]) == 3
    assert asked([], [str(tmp_path / "missing.json"), None]) == 1
