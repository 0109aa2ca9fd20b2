"""The escape study's aggregation (experiments/escape_study.py) on synthetic run files."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("escape_study", ROOT / "experiments/escape_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def synthetic(mse_per_run: list[float]) -> dict:
    """Runs x 8 windows x 4 actions, every metric constant per run."""
    runs = len(mse_per_run)
    shape = (runs, 8, 4)
    mse = np.array(mse_per_run, dtype=float)[:, None, None] * np.ones(shape)
    data = {"seeds": np.arange(runs), "window_steps": np.arange(1, 9) * 10_000}
    for k in study.FAMILIES:
        key = "start_sq_error" if k == "start_mse" else k
        data[f"w_{key}"] = mse.copy() if k == "mse" else np.full(shape, 0.9)
    data["w_calibration"] = np.full((runs, 8, 4, 4), 0.9)
    data["wall_time"] = np.ones(runs)
    return data


def test_diverged_runs_are_left_out_and_counted():
    data = synthetic([1e-3, np.nan, 3e-3])
    kept, bad = study.split_diverged(data)
    assert bad == 1
    np.testing.assert_array_equal(kept["seeds"], [0, 2])
    np.testing.assert_array_equal(kept["window_steps"], data["window_steps"])  # shared, not per run
    summary = study.aggregate(kept)
    assert summary["runs"] == 2
    np.testing.assert_allclose(summary["mse"]["mean"], 2e-3)
    assert study.split_diverged(synthetic([np.nan, np.inf])) == (None, 2)
    assert study.split_diverged(synthetic([1e-3]))[1] == 0


def test_trimmed_mean_drops_the_outlying_run_and_median_keeps_it():
    summary = study.aggregate(synthetic([1e-3] * 6 + [1.0]))
    np.testing.assert_allclose(summary["mse"]["mean"], 1e-3)  # the 5 rows of the 1.0 run dropped
    assert summary["mse"]["kept"] == 30 and summary["mse"]["rows"] == 35
    np.testing.assert_allclose(summary["mse"]["median"], 1e-3)


def test_batched_seeds_are_written_one_file_per_seed_and_resume(tmp_path, capsys):
    """A vmapped batch writes one file per seed; a rerun skips seeds that have a file; load_runs
    joins them in seed order."""
    overrides = dict(escape=dict(sample_size=50))
    study.run_config("tiny", overrides, seeds=2, batch=2, steps=20_000, out=tmp_path)
    assert "seeds 0..1 (2) done" in capsys.readouterr().out
    folder = tmp_path / "runs" / "tiny"
    assert sorted(f.name for f in folder.glob("*.npz")) == [
        "seeds_000-000.npz",
        "seeds_001-001.npz",
    ]
    study.run_config("tiny", overrides, seeds=2, batch=2, steps=20_000, out=tmp_path)
    assert "done" not in capsys.readouterr().out
    data = study.load_runs(tmp_path, "tiny")
    assert data["seeds"].tolist() == [0, 1]
    assert data["w_mse"].shape == (2, 2, 4) and np.isfinite(data["w_mse"][:, -1]).all()
    assert list(data["backend"]) == ["cpu", "cpu"]
    assert np.abs(data["w_mse"][0, -1] - data["w_mse"][1, -1]).max() > 0  # different seeds


def test_seeds_covered_by_files_of_any_batch_size(tmp_path):
    for name in ("seeds_000-003.npz", "seeds_005-005.npz", "seeds_007-009.npz.part"):
        (tmp_path / name).touch()
    assert study.covered_seeds(tmp_path) == {0, 1, 2, 3, 5}


def test_a_batch_projected_past_the_deadline_stops_and_writes_nothing(tmp_path):
    import time

    import pytest

    with pytest.raises(study.DeadlineError, match="after the deadline"):
        study.run_config(
            "tiny", {}, seeds=1, batch=1, steps=20_000, out=tmp_path, deadline=time.time() + 0.01
        )
    assert not list((tmp_path / "runs" / "tiny").glob("*.npz"))
