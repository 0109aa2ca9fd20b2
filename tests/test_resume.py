"""Interruption, resume and reproducibility: a run killed (SIGKILL) or stopped (SIGTERM) and
resumed with ``lktd train --resume`` ends bitwise where the uninterrupted run ends; resume refuses
a finished run, changed settings and changed package versions; the chunks per jitted call and
the checkpoint interval change no result; run folders are replaced whole, never mixed, and an
unwritable one is refused before anything compiles."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_control import SMALL_CONTROL_SETS
from test_gymnasium import CHAIN_SETS

from lktd_ppl import cli, training
from lktd_ppl import run_folder as rf
from lktd_ppl import run_status as rs
from lktd_ppl.checkpoint import Checkpointer, Interrupted, load, save

ROOT = Path(__file__).resolve().parents[1]
# a tiny escape run (DQN, one hidden layer of 8): 10 jitted calls of a 1000-step window each
SETS = ["escape.window=1000", "escape.sample_size=300", "escape.buffer_size=2000"]
RUN = ["train", "--steps", "10000", *(a for s in SETS for a in ("--set", s)), "-q"]
TINY = {"dqn": ["--set", "hidden=8"], "lktd": []}  # LKTD: the default model (two layers of 32)


def lktd(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "lktd_ppl.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a signal to the test's group does not reach it
    )


def wait_until(check, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Poll ``check()`` until true; fail if ``proc`` ends first."""
    end = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the signal: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.01)


def saved_step(folder: Path) -> int:
    status = rs.read_status(folder)
    return status.get("step") or 0 if (folder / rs.RESUME_FILE).is_file() else 0


def interrupted_run(base: Path, algo: str = "dqn") -> dict:
    """SIGTERM after the first checkpoint, resume, SIGKILL after the resumed run's first
    checkpoint, resume to the end; what each process said."""
    out = base / "stopped"
    got = {}
    proc = lktd(*RUN, "--algo", algo, *TINY[algo], "--out", str(out), "--checkpoint-every", "0")
    wait_until(lambda: saved_step(out) > 0, proc)
    proc.send_signal(signal.SIGTERM)
    got["sigterm"] = (proc.wait(), proc.communicate()[1])
    got["status_after_sigterm"] = rs.read_status(out)
    shutil.copytree(out, base / "stopped_copy")  # for the refusal tests
    first = saved_step(out)
    proc = lktd("train", "--resume", str(out), "--checkpoint-every", "0", "-q")
    wait_until(lambda: saved_step(out) > first, proc)
    proc.kill()  # SIGKILL
    got["sigkill"] = (proc.wait(), saved_step(out), first)
    got["state_after_sigkill"] = rs.folder_state(out)
    proc = lktd("train", "--resume", str(out), "-q")
    got["resumed"] = (proc.wait(), proc.communicate())
    return got


def reference_run(base: Path, algo: str = "dqn") -> tuple[int, tuple[str, str]]:
    proc = lktd(*RUN, "--algo", algo, *TINY[algo], "--out", str(base / "reference"))
    return proc.wait(), proc.communicate()


def start_background_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    return base, ThreadPoolExecutor(1).submit(interrupted_run, base)


@pytest.fixture(scope="module")
def reference(background_runs) -> dict:
    """The uninterrupted run of ``RUN``, in this process (the same compiled programs)."""
    from lktd_ppl.config import build_spec

    spec = build_spec(algo="dqn", steps=10000, sets=[*SETS, "hidden=8"])
    return training.execute(spec, background_runs[0] / "reference")


def test_sigterm_saves_and_says_how_to_resume(background_runs):
    base, stopped = background_runs
    code, err = stopped.result()["sigterm"]
    assert code == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("lktd train: stopped by SIGTERM at step ")
    assert lines[-1].endswith(
        f" of 10,000; its state is saved: continue with 'lktd train --resume {base / 'stopped'}'"
    )
    status = stopped.result()["status_after_sigterm"]
    assert status["state"] == "interrupted" and status["resumable"] is True
    assert 0 < status["step"] < 10000 and status["step"] % 1000 == 0


def test_killed_and_resumed_run_equals_the_uninterrupted_one(background_runs, reference):
    base, stopped = background_runs
    check_equal_runs(base, stopped.result(), "dqn")


@pytest.mark.slow
def test_killed_and_resumed_lktd_run_equals_the_uninterrupted_one(tmp_path):
    """The same with LKTD (its sampler's own key streams in the carry)."""
    with ThreadPoolExecutor(2) as pool:
        reference = pool.submit(reference_run, tmp_path, "lktd")
        stopped = pool.submit(interrupted_run, tmp_path, "lktd")
        code, (_, err) = reference.result()
        assert code == 0, err
        check_equal_runs(tmp_path, stopped.result(), "lktd")


def check_equal_runs(base: Path, got: dict, algo: str) -> None:
    code, killed_at, first = got["sigkill"]
    assert code == -signal.SIGKILL and first < killed_at < 10000
    assert got["state_after_sigkill"] == "interrupted"  # status "running", its process gone
    code, (out, err) = got["resumed"]
    assert code == 0, err
    a, b = base / "reference", base / "stopped"
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    assert len((a / "metrics.csv").read_text().splitlines()) == 1 + 100
    with np.load(a / "checkpoint.npz") as x, np.load(b / "checkpoint.npz") as y:
        assert x.files == y.files
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    from lktd_ppl.diagnostics import load_datatree

    qa = load_datatree(a / "samples.nc").posterior["q"].values
    qb = load_datatree(b / "samples.nc").posterior["q"].values
    np.testing.assert_array_equal(qa, qb)
    assert rs.read_status(b)["state"] == "finished" and not (b / rs.RESUME_FILE).exists()
    run = json.loads((b / rs.RUN_FILE).read_text())
    assert run["command"].startswith("lktd train --steps 10000 --set escape.window=1000")
    assert f"--algo {algo}" in run["command"]
    assert [r["command"] for r in run["resumed"]] == [
        f"lktd train --resume {b} --checkpoint-every 0 -q",
        f"lktd train --resume {b} -q",
    ]
    assert run["versions"]["jax"] == rs.package_versions()["jax"]


def resume_error(capsys, folder: Path, *extra: str) -> str:
    assert cli.main(["train", "--resume", str(folder), *extra]) == 2
    return capsys.readouterr().err.strip()


def test_resume_refuses_changed_settings_versions_and_a_finished_run(
    background_runs, reference, capsys, monkeypatch
):
    base, stopped = background_runs
    stopped.result()
    folder = base / "stopped_copy"
    err = resume_error(capsys, folder, "--steps", "40000")
    assert err == (
        f"lktd train: error: --resume '{folder}': the settings differ from the interrupted run's: "
        "escape.total_steps 10000 -> 40000"
    )
    err = resume_error(capsys, folder, "--set", "learning_rate=0.01", "--set", "hidden=16")
    assert err.endswith(
        "the settings differ from the interrupted run's: agent.hidden [8] -> [16]; "
        "agent.learning_rate 0.001 -> 0.01"
    )
    installed = rs.package_versions()
    monkeypatch.setattr(rs, "package_versions", lambda: {**installed, "jax": "0.0.1"})
    err = resume_error(capsys, folder)
    assert err == (
        f"lktd train: error: --resume '{folder}': the package versions differ from the "
        f"interrupted run's: jax {installed['jax']!r} -> '0.0.1'"
    )
    monkeypatch.undo()
    err = resume_error(capsys, base / "reference")
    assert err == (
        f"lktd train: error: --resume '{base / 'reference'}': the run is finished; "
        "there is nothing to resume"
    )


# --------------------------------------------------------------------------------------------
# the chunks per call and the checkpoint interval change nothing; checkpoints round-trip keys
# --------------------------------------------------------------------------------------------


def tiny_escape(steps: int = 2000):
    from lktd_ppl.config import build_spec

    return build_spec(algo="dqn", steps=steps, sets=[*SETS, "hidden=8"])


def test_chunks_per_call_and_checkpoint_interval_change_no_result(reference, tmp_path):
    """One chunk per call with a checkpoint after every call gives the reference run (ten chunks
    per call, no checkpoint before its end) bit for bit."""
    import jax

    from lktd_ppl.agents.harness import make_train
    from lktd_ppl.config import build_spec

    spec = build_spec(algo="dqn", steps=10000, sets=[*SETS, "hidden=8"])
    ckpt = Checkpointer(tmp_path / "every_call.npz", every_seconds=0.0)
    train = make_train(spec.escape, training.make_learner(spec), chunks_per_call=1)
    b = train(jax.random.key(0)[None], progress=False, checkpoint=ckpt)
    assert ckpt.saves == 99  # after every call but the last
    a = reference
    for name in ("metrics", "metrics_qstar"):
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=k)
    for k in ("samples", "valid", "slot", "latest"):
        np.testing.assert_array_equal(a["final"][k], b["final"][k], err_msg=k)
    leaves = jax.tree.leaves(a["state"].learner), jax.tree.leaves(b["state"].learner)
    for x, y in zip(*leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for k in ("mean_return", "episodes"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_checkpoint_round_trips_keys_of_every_implementation(tmp_path):
    import jax

    from lktd_ppl.rng import fast_key

    tree = {
        "threefry": jax.random.split(jax.random.key(3), 2),
        "fast": fast_key(jax.random.key(4)),
        "x": (np.arange(3.0), np.int32(7)),
    }
    save(tmp_path / "c.npz", {"t": tree}, {"step": 5})
    trees, meta = load(tmp_path / "c.npz", {"t": tree})
    got = trees["t"]
    assert meta == {"step": 5}
    for k in ("threefry", "fast"):
        assert jax.random.key_impl(got[k]) == jax.random.key_impl(tree[k])
        np.testing.assert_array_equal(jax.random.key_data(got[k]), jax.random.key_data(tree[k]))
        draw = jax.vmap(lambda key: jax.random.uniform(key, (2,)))
        np.testing.assert_array_equal(draw(got[k].reshape(-1)), draw(tree[k].reshape(-1)))
    np.testing.assert_array_equal(got["x"][0], np.arange(3.0))
    assert int(got["x"][1]) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left


# --------------------------------------------------------------------------------------------
# run folders: replaced whole, failed runs marked, unwritable ones refused before compiling
# --------------------------------------------------------------------------------------------


def fake_finished_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("config.json", "metrics.csv", "summary.md", "diagnose.md", "trace.png"):
        (folder / name).write_text("{}")
    rs.write_status(folder, "finished", step=4000)


def test_overwrite_replaces_the_folder_whole_and_a_failed_run_says_so(tmp_path):
    out = tmp_path / "run"
    fake_finished_run(out)
    with pytest.raises(rf.RunError) as err:
        training.check_folder(out, overwrite=False)
    assert str(err.value) == (
        f"'{out}' already holds a finished run; pick another --out or pass --overwrite to "
        "replace it"
    )

    def boom(keys, progress, log, checkpoint):
        raise RuntimeError("boom\nsecond line")

    with pytest.raises(RuntimeError):
        training.execute(tiny_escape(), out, overwrite=True, train=boom)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json", "status.json"]
    status = rs.read_status(out)
    assert (status["state"], status["message"], status["resumable"]) == ("failed", "boom", False)
    assert rs.folder_state(out) == "failed"
    training.check_folder(out, overwrite=False)  # a failed run does not block a rerun


def test_demo_refuses_a_folder_that_holds_no_run_and_replaces_a_run(tmp_path, capsys, monkeypatch):
    def no_compile(spec, devices=None):
        raise rf.RunError("reached the training")

    monkeypatch.setattr(training, "make_train", no_compile)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert cli.main(["demo", "--steps", "20000", "--out", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lktd demo: error: --out '{other}' is a folder that holds no run (no status.json or "
        "config.json) and is not empty; pick another --out"
    )
    assert (other / "mine.txt").read_text() == "keep"
    run = tmp_path / "demo"
    fake_finished_run(run)
    assert cli.main(["demo", "--steps", "20000", "--out", str(run)]) == 2  # accepted
    assert capsys.readouterr().err.strip() == "lktd demo: error: reached the training"


def test_unwritable_out_is_refused_before_compiling(tmp_path, capsys, monkeypatch):
    def no_compile(spec, devices=None):
        raise AssertionError("compiled")

    monkeypatch.setattr(training, "make_train", no_compile)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"
    assert cli.main([*RUN, "--algo", "dqn", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lktd train: error: cannot write the run folder '{out}': '{tmp_path / 'file'}' is not "
        "a writable folder"
    )
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lktd train: error: --resume '{tmp_path}': not a run folder (no config.json)"
    )


def test_interrupted_checkpointer_saves_then_raises(tmp_path):
    ckpt = Checkpointer(tmp_path / "c.npz", every_seconds=1e9, meta={"config": 1})
    ckpt.after_call(10, 100, lambda: {"s": {"a": np.ones(2)}})
    assert not (tmp_path / "c.npz").exists()  # not due
    ckpt.stop_signal = signal.SIGINT
    with pytest.raises(Interrupted) as stop:
        ckpt.after_call(20, 100, lambda: {"s": {"a": np.ones(2)}})
    assert str(stop.value) == "stopped by SIGINT at step 20 of 100"
    assert training.checkpoint.read_meta(tmp_path / "c.npz") == {"config": 1, "step": 20}
    ckpt.after_call(100, 100, lambda: {})  # the last call: the run finishes whatever was asked


# --------------------------------------------------------------------------------------------
# the control harnesses: gymnax resumes bitwise; a Gymnasium run restarts its open episodes
# --------------------------------------------------------------------------------------------

# test_control's and test_gymnasium's small runs: their compiled programs are read back
CONTROL_SETS = [*SMALL_CONTROL_SETS, "hidden=8"]


def stop_at_first_evaluation(path: Path, train, keys) -> int:
    """Run ``train`` until SIGTERM's flag, raised at its first log line, stops it; the step."""
    ckpt = Checkpointer(path, every_seconds=1e9)
    with pytest.raises(Interrupted) as stop:
        train(
            keys, progress=False, log=lambda line: setattr(ckpt, "stop_signal", 15), checkpoint=ckpt
        )
    return stop.value.step


def test_gymnax_run_stopped_and_resumed_equals_the_uninterrupted_one(tmp_path):
    import jax
    import jax.numpy as jnp

    from lktd_ppl.config import build_spec

    spec = build_spec(algo="dqn", env="CartPole-v1", steps=900, sets=CONTROL_SETS)
    train = training.make_train(spec)
    keys = jnp.stack([jax.random.key(0)])
    a = train(keys, progress=False)
    assert stop_at_first_evaluation(tmp_path / "r.npz", train, keys) == 300
    b = train(keys, progress=False, checkpoint=Checkpointer(tmp_path / "r.npz", resume=True))
    for k in ("eval_return", "train_return", "probe_q", "best_return", "eval_steps"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in a["episodes"]:
        np.testing.assert_array_equal(a["episodes"][k], b["episodes"][k], err_msg=k)
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        x, y = (
            jax.random.key_data(v) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key) else v
            for v in (x, y)
        )
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gymnasium_run_resumes_with_its_open_episodes_restarted(tmp_path):
    import sys

    import jax
    import jax.numpy as jnp

    from lktd_ppl.config import build_spec

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # chain_env:Chain-v0 imports the module from the tests folder
        sys.path.insert(0, here)
    spec = build_spec(algo="dqn", env="chain_env:Chain-v0", steps=600, seeds=2, sets=CHAIN_SETS)
    train = training.make_train(spec)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    a = train(keys, progress=False)
    assert stop_at_first_evaluation(tmp_path / "r.npz", train, keys) == 300
    b = train(keys, progress=False, checkpoint=Checkpointer(tmp_path / "r.npz", resume=True))
    np.testing.assert_array_equal(b["eval_steps"], [300, 600])
    np.testing.assert_array_equal(a["eval_return"][:, 0], b["eval_return"][:, 0])  # before the stop
    np.testing.assert_array_equal(a["probes"], b["probes"])  # taken before train_start
    # the training schedule goes on: a stage every 4 steps from step 200 to 600
    np.testing.assert_array_equal(a["state"].updates, [101, 101])
    np.testing.assert_array_equal(b["state"].updates, [101, 101])
    ea, eb = (r["episodes"] for r in (a, b))
    for k in ea:
        np.testing.assert_array_equal(ea[k][ea["step"] <= 300], eb[k][eb["step"] <= 300])
    assert b["episodes"]["step"].max() > 300 and np.isfinite(b["eval_return"]).all()
