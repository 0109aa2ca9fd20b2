"""experiments/equivalence.py: z of two sets of runs, from per-run means, on a hand-checked case."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("equivalence", ROOT / "experiments/equivalence.py")
equivalence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(equivalence)


def test_z_of_two_sets_of_runs():
    # runs' means 0, 2 (mean 1, s.e. 1) against 2, 4 (mean 3, s.e. 1): z = 2 / sqrt(2)
    c = equivalence.compare(np.array([[0.0], [2.0]]), np.array([[2.0], [4.0]]))
    np.testing.assert_allclose(c["z"], [np.sqrt(2.0)])
    np.testing.assert_allclose(c["se_old"], [1.0])


def test_per_run_means_take_the_last_windows():
    w = np.zeros((2, 7, 4))
    w[:, -5:] = 1.0  # the last five windows hold 1, the earlier ones 0
    np.testing.assert_array_equal(equivalence.per_run({"w_mse": w}, "mse"), np.ones((2, 4)))


def test_the_committed_blackjax_runs_are_the_same_law_as_the_rows_they_renew():
    """experiments/results/equivalence: every |z| < 3, the largest as its README states."""
    results = ROOT / "experiments" / "results"
    largest = 0.0
    for row in ("lktd_N10000_compat", "lktd_N10000_m10"):
        old = equivalence.load_runs(results / "escape", row)
        new = equivalence.load_runs(results / "equivalence", row)
        text, ok = equivalence.report(row, old, new, "test")
        assert ok, text
        for metric in equivalence.METRICS:
            z = equivalence.compare(
                equivalence.per_run(old, metric), equivalence.per_run(new, metric)
            )["z"]
            largest = max(largest, float(np.max(np.abs(z))))
    assert f"largest: {largest:.2f}" in (results / "equivalence" / "README.md").read_text()
