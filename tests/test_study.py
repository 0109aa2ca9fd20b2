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
