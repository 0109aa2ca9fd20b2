"""Diagnostics: the spec's metrics against known answers, ArviZ export and summaries, plots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lktd_ppl import diagnostics as dg
from lktd_ppl.envs import START_CELL, evaluation_mask, q_epsilon_greedy

# --------------------------------------------------------------------------------------------
# A hand-made case with exact answers: S = 5 samples, 2 cells x 2 actions, entry (1, 1) unscored.
#
#   entry   samples            mean  q2.5  q97.5  width  truth  latest  paper's interval
#   (0, 0)  0, 1, 2, 3, 4        2    0.1   3.9    3.8   3.95    4      [2.1, 5.9]   covers
#   (0, 1)  0, 2, 4, 6, 8        4    0.2   7.8    7.6   1.0     8      [4.2, 11.8]  misses
#   (1, 0)  10, ..., 14         12   10.1  13.9    3.8   12.5   10      [8.1, 11.9]  misses
#   (1, 1)  0, 0, 0, 0, 0  (unscored; truth 100)
#
# NumPy's linear quantile of 5 sorted values at level p sits at position 4p: q2.5 at 0.1,
# q97.5 at 3.9, q25/q75 at 1/3, q10/q90 at 0.4/3.6. Equal-tailed 95%: (0, 0) misses (3.95 > 3.9),
# (0, 1) and (1, 0) cover. Action 0 averages cells 0 and 1, action 1 is cell 0 alone.
# --------------------------------------------------------------------------------------------


def tiny_case():
    base = np.arange(5.0)
    samples = np.zeros((5, 2, 2))
    samples[:, 0, 0] = base
    samples[:, 0, 1] = 2 * base
    samples[:, 1, 0] = 10 + base
    truth = np.array([[3.95, 1.0], [12.5, 100.0]])
    latest = np.array([[4.0, 8.0], [10.0, 0.0]])
    mask = np.array([[True, True], [True, False]])
    return samples, latest, truth, mask


def test_interval_metrics_hand_computed():
    samples, latest, truth, mask = tiny_case()
    m = dg.interval_metrics(samples, latest, truth, mask, levels=(0.5, 0.8, 0.95))
    np.testing.assert_allclose(m["mse"], [((2 - 3.95) ** 2 + (12 - 12.5) ** 2) / 2, 9.0])
    np.testing.assert_allclose(m["coverage"], [0.5, 0.0])
    np.testing.assert_allclose(m["coverage_equal_tailed"], [0.5, 1.0])
    np.testing.assert_allclose(m["width"], [3.8, 7.6])
    # 50%: [1, 3] misses 3.95, [11, 13] covers 12.5, [2, 6] misses 1.
    # 80%: [0.4, 3.6] misses, [10.4, 13.6] covers, [0.8, 7.2] covers 1.
    np.testing.assert_allclose(m["calibration"], [[0.5, 0.0], [0.5, 1.0], [0.5, 1.0]])
    assert m["calibration"].shape == (3, 2)
    assert all(m[k].shape == (2,) for k in ("mse", "coverage", "coverage_equal_tailed", "width"))


def test_pit_calibration_differs_only_inside_order_statistic_gaps():
    samples, latest, truth, mask = tiny_case()
    # PIT: (0, 0) 4/5, (0, 1) 1/5, (1, 0) 3/5. At 80% the PIT window is (0.1, 0.9), so (0, 0)
    # counts as covered, while the interpolated q90 = 3.6 < 3.95 misses: with 5 samples the gap
    # between the 4th and 5th order statistics is wide.
    pit_cal = dg.pit_calibration(samples, truth, mask, levels=(0.5, 0.8))
    np.testing.assert_allclose(pit_cal, [[0.5, 0.0], [1.0, 1.0]])
    quant = dg.interval_metrics(samples, latest, truth, mask, levels=(0.5, 0.8))["calibration"]
    np.testing.assert_allclose(quant, [[0.5, 0.0], [0.5, 1.0]])


def test_interval_metrics_latest_per_chain_averages_paper_coverage():
    samples, latest, truth, mask = tiny_case()
    # A second chain whose latest sample equals the truth covers every entry.
    both = np.stack([latest, np.where(mask, truth, 0.0)])
    m = dg.interval_metrics(samples, both, truth, mask)
    np.testing.assert_allclose(m["coverage"], [(1.0 + 0.5) / 2, 0.5])
    # The other metrics do not depend on latest.
    one = dg.interval_metrics(samples, latest, truth, mask)
    for key in ("mse", "coverage_equal_tailed", "width", "calibration"):
        np.testing.assert_array_equal(m[key], one[key])


def test_masking_drops_entries():
    samples, latest, truth, mask = tiny_case()
    kept = dg.interval_metrics(samples, latest, truth, mask)
    # The unscored entry (1, 1) has a wild truth: scoring it changes action 1, not action 0.
    scored = dg.interval_metrics(samples, latest, truth, np.ones_like(mask))
    for key in ("mse", "coverage", "coverage_equal_tailed", "width"):
        assert kept[key][0] == scored[key][0]
    # Action 1 now averages cell 0 and the all-zero samples of cell 1 (truth 100 missed).
    np.testing.assert_allclose(scored["mse"][1], (9.0 + 100.0**2) / 2)
    np.testing.assert_allclose(scored["coverage"][1], 0.0)
    np.testing.assert_allclose(scored["coverage_equal_tailed"][1], 0.5)
    np.testing.assert_allclose(scored["width"][1], 7.6 / 2)
    # NaN truth where unscored is harmless; the default mask is isfinite(truth).
    nan_truth = np.where(mask, truth, np.nan)
    for m in (
        dg.interval_metrics(samples, latest, nan_truth, mask),
        dg.interval_metrics(samples, latest, nan_truth),
    ):
        for key in kept:
            np.testing.assert_array_equal(m[key], kept[key])
    # An action with no scored cell is NaN.
    none = mask.copy()
    none[:, 1] = False
    assert np.isnan(dg.interval_metrics(samples, latest, truth, none)["mse"][1])
    np.testing.assert_allclose(dg.pit_values(samples, truth, mask), [0.8, 0.2, 0.6])


def test_start_cell_metrics():
    samples, latest, truth, mask = tiny_case()
    m = dg.start_cell_metrics(samples, latest, truth, mask, cell=0)
    np.testing.assert_allclose(m["mse"], [(2 - 3.95) ** 2, 9.0])
    np.testing.assert_allclose(m["coverage"], [1.0, 0.0])
    np.testing.assert_allclose(m["coverage_equal_tailed"], [0.0, 1.0])
    np.testing.assert_allclose(m["width"], [3.8, 7.6])
    m = dg.start_cell_metrics(samples, latest, truth, mask, cell=1)
    np.testing.assert_allclose(m["mse"], [0.25, np.nan])


def test_start_cell_metrics_escape_grid():
    size = 3
    truth = q_epsilon_greedy(size)
    mask = evaluation_mask(size)
    rng = np.random.default_rng(1)
    samples = truth + 0.1 * rng.standard_normal((200, *truth.shape))
    m = dg.start_cell_metrics(samples, samples[-1], truth, mask)
    assert START_CELL == 0
    # Only E and N are legal at the start cell (0, 0).
    assert np.isfinite(m["mse"][:2]).all() and np.isnan(m["mse"][2:]).all()
    np.testing.assert_allclose(m["mse"][:2], ((samples.mean(0) - truth)[0, :2]) ** 2)


def test_calibrated_posterior_scores_nominal_equal_tailed_and_0834_paper():
    """A calibrated posterior: per entry the truth is itself a draw from the posterior
    N(m, sd^2), so with the samples from the same N(m, sd^2) the equal-tailed L-interval covers
    the truth with probability L. The paper's interval is centred at one sample: latest - truth
    ~ N(0, 2 sd^2), half-width 1.96 sd, so it covers with P(|Z| < 1.96 / sqrt 2) = 0.834."""
    rng = np.random.default_rng(0)
    n_samples, n_cell, sd = 1000, 2000, 0.5
    truth = rng.normal(-5.0, 2.0, (n_cell, 4))
    centre = truth + sd * rng.standard_normal((n_cell, 4))
    samples = centre + sd * rng.standard_normal((n_samples, n_cell, 4))
    mask = np.ones((n_cell, 4), bool)
    m = dg.interval_metrics(samples, samples[-1], truth, mask)
    assert dg.paper_coverage_if_calibrated(0.95) == pytest.approx(0.8342, abs=1e-4)
    # Binomial sd of a coverage over 2000 cells: ~0.005 at 0.95, ~0.008 at 0.83.
    np.testing.assert_allclose(m["coverage_equal_tailed"], 0.95, atol=0.02)
    np.testing.assert_allclose(m["coverage"], 0.834, atol=0.03)
    nominal = np.broadcast_to(np.array(dg.DEFAULT_LEVELS)[:, None], (4, 4))
    np.testing.assert_allclose(m["calibration"], nominal, atol=0.04)
    # E (mean - truth)^2 = sd^2 (1 + 1/S); width = 2 * 1.96 sd.
    np.testing.assert_allclose(m["mse"], sd**2 * (1 + 1 / n_samples), rtol=0.1)
    np.testing.assert_allclose(m["width"], 2 * 1.959964 * sd, rtol=0.02)
    # Read off the PIT instead of quantiles: a few cells of 2000 differ at most.
    pit_cal = dg.pit_calibration(samples, truth, mask)
    np.testing.assert_allclose(pit_cal, m["calibration"], atol=5 / n_cell)
    pit = dg.pit_values(samples, truth, mask)
    assert pit.shape == (4 * n_cell,)
    np.testing.assert_allclose(np.quantile(pit, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.03)


def test_posterior_centred_on_truth():
    """Samples N(truth, 1): the sample mean is off by N(0, 1/S), so mse = 1/S; the truth is the
    median of every entry, so the equal-tailed interval always covers it (over-confident ideal);
    latest - truth ~ N(0, 1) and the paper's interval covers with P(|Z| < 1.96) = 0.95."""
    rng = np.random.default_rng(2)
    n_samples, n_cell = 400, 2000
    truth = rng.normal(-5.0, 2.0, (n_cell, 4))
    samples = truth + rng.standard_normal((n_samples, n_cell, 4))
    m = dg.interval_metrics(samples, samples[-1], truth, np.ones((n_cell, 4), bool))
    np.testing.assert_allclose(m["mse"], 1 / n_samples, rtol=0.15)
    np.testing.assert_allclose(m["coverage_equal_tailed"], 1.0)
    np.testing.assert_allclose(m["calibration"][0], 1.0)  # even the 50% interval
    np.testing.assert_allclose(m["coverage"], 0.95, atol=0.02)
    np.testing.assert_allclose(m["width"], 2 * 1.959964, rtol=0.02)


def test_greedy_policy_probs():
    samples = np.zeros((4, 2, 4))
    samples[:, 0] = [5.0, 1.0, 0.0, 0.0]  # E is best but illegal in cell 0
    samples[:2, 0, 1] = 2.0  # N wins when legal ...
    samples[2:, 0, 3] = 3.0  # ... in half the samples S wins
    legal = np.array([[False, True, True, True], [False, False, False, False]])
    probs = dg.greedy_policy_probs(samples, legal)
    np.testing.assert_allclose(probs, [[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])


# --------------------------------------------------------------------------------------------
# ArviZ export and summaries
# --------------------------------------------------------------------------------------------


def test_summary_rhat_ess_and_masking():
    rng = np.random.default_rng(3)
    q = rng.standard_normal((4, 500, 3, 4))
    mask = np.ones((3, 4), bool)
    mask[0, 2:] = False
    tree = dg.q_samples_to_datatree(q, mask=mask)
    table = dg.posterior_summary(tree)
    assert len(table) == mask.sum()
    assert (0, "W") not in table.index and (1, "W") in table.index
    for col in ("mean", "sd", "eti95_lb", "eti95_ub", "ess_bulk", "ess_tail", "r_hat", "mcse_mean"):
        assert col in table.columns
    assert table["r_hat"].max() < 1.01
    assert table["ess_bulk"].min() > 1000  # independent draws: ESS near 2000
    # The interval is the equal-tailed one with NumPy-linear quantiles, as in interval_metrics.
    flat = q.reshape(-1, 3, 4)
    np.testing.assert_allclose(table.loc[(1, "N"), "eti95_lb"], np.quantile(flat[:, 1, 1], 0.025))
    np.testing.assert_allclose(table.loc[(1, "N"), "eti95_ub"], np.quantile(flat[:, 1, 1], 0.975))
    np.testing.assert_allclose(table.loc[(2, "S"), "mean"], flat[:, 2, 3].mean())
    # Independent draws: MCSE of the mean = sd / sqrt(ESS).
    np.testing.assert_allclose(table["mcse_mean"], table["sd"] / np.sqrt(2000), rtol=0.2)

    shifted = q + np.arange(4.0)[:, None, None, None]
    table = dg.posterior_summary(shifted)  # an array works too; no mask: all 12 rows
    assert len(table) == 12
    assert table["r_hat"].min() > 1.1
    assert dg.max_rhat(shifted, mask) > 1.1
    assert dg.max_rhat(q, mask) < 1.01


def test_datatree_layout_and_roundtrip(tmp_path):
    import xarray as xr

    pytest.importorskip("h5py", reason="h5netcdf needs h5py to write")
    rng = np.random.default_rng(4)
    size = 3
    truth = q_epsilon_greedy(size)
    q = rng.standard_normal((2, 30, size * size, 4)).astype(np.float32)
    params = {"sigma": rng.random((2, 30)), "theta": rng.standard_normal((2, 30, 5))}
    tree = dg.q_samples_to_datatree(
        q, truth=truth, params=params, attrs={"method": "lktd", "size": size}
    )
    post = tree["posterior"]
    assert post["q"].dims == ("chain", "draw", "cell", "action")
    assert list(post["action"].values) == ["E", "N", "W", "S"]
    np.testing.assert_array_equal(post["cell"].values, np.arange(size * size))
    assert set(post.data_vars) == {"q", "sigma", "theta"}
    const = tree["constant_data"]
    np.testing.assert_array_equal(const["mask"].values, evaluation_mask(size))
    np.testing.assert_array_equal(const["q_true"].values, truth)
    assert tree.attrs["method"] == "lktd"

    path = dg.save_datatree(tree, tmp_path / "sub" / "q.nc")
    back = dg.load_datatree(path)
    xr.testing.assert_identical(back, tree)
    assert back["posterior"]["q"].dtype == np.float32
    assert back["constant_data"]["mask"].dtype == bool
    # The summary picks the stored mask up.
    assert len(dg.posterior_summary(back)) == evaluation_mask(size).sum()


def test_datatree_rejects_bad_shapes():
    with pytest.raises(ValueError, match="chain, draw, cell, action"):
        dg.q_samples_to_datatree(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="params"):
        dg.q_samples_to_datatree(np.zeros((2, 3, 4, 4)), params={"s": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="truth"):
        dg.q_samples_to_datatree(np.zeros((2, 3, 4, 4)), truth=np.zeros((4, 3)))


# --------------------------------------------------------------------------------------------
# Plots: each writes a PNG that is not blank
# --------------------------------------------------------------------------------------------


def assert_png_not_blank(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].var() > 1e-3


@pytest.fixture(scope="module")
def grid_posterior():
    size = 4
    truth = q_epsilon_greedy(size)
    mask = evaluation_mask(size)
    rng = np.random.default_rng(5)
    centre = np.where(mask, truth, -5.0) + 0.1 * rng.standard_normal(truth.shape)
    q = centre + 0.1 * rng.standard_normal((2, 300, *truth.shape))
    return size, truth, mask, q


def test_plot_calibration(tmp_path, grid_posterior):
    size, truth, mask, q = grid_posterior
    samples = q.reshape(-1, *truth.shape)
    fig = dg.plot_calibration(samples, truth, mask, path=tmp_path / "cal.png", title="t")
    assert len(fig.axes) == 2
    assert_png_not_blank(tmp_path / "cal.png")


def test_plot_interval_heatmaps(tmp_path, grid_posterior):
    size, truth, mask, q = grid_posterior
    fig = dg.plot_interval_heatmaps(
        q.reshape(-1, *truth.shape), truth, mask, size, path=tmp_path / "heat.png"
    )
    assert len(fig.axes) == 5  # 4 actions + colour bar
    assert_png_not_blank(tmp_path / "heat.png")


def test_plot_policy_quiver(tmp_path, grid_posterior):
    size, truth, mask, q = grid_posterior
    probs = dg.greedy_policy_probs(q.reshape(-1, *truth.shape), mask)
    np.testing.assert_allclose(probs.sum(axis=1)[mask.any(axis=1)], 1.0)
    dg.plot_policy_quiver(probs, size, path=tmp_path / "quiver.png")
    assert_png_not_blank(tmp_path / "quiver.png")


def test_plot_trace(tmp_path, grid_posterior):
    size, truth, mask, q = grid_posterior
    fig = dg.plot_trace(
        q, [(0, 0), (0, 1), (size, 2)], truth=truth, size=size, path=tmp_path / "trace.png"
    )
    assert len(fig.axes) == 3
    assert_png_not_blank(tmp_path / "trace.png")


def test_plot_time_series(tmp_path):
    rng = np.random.default_rng(6)
    steps = np.arange(1, 11) * 10_000
    cov = np.clip(0.8 + 0.05 * rng.standard_normal((10, 4)), 0, 1)
    dg.plot_coverage_over_time(steps, cov, equal_tailed=cov + 0.1, path=tmp_path / "cov.png")
    dg.plot_rhat_over_time(steps, 1 + 0.1 / np.arange(1, 11), path=tmp_path / "rhat.png")
    returns = -20 + np.log(steps) + rng.standard_normal((5, 10))
    dg.plot_learning_curve(steps, returns, path=tmp_path / "learn.png")
    for name in ("cov", "rhat", "learn"):
        assert_png_not_blank(tmp_path / f"{name}.png")


@pytest.mark.parametrize("cores", [{0}, {0, 1}, {0, 1, 2, 3}])
def test_quantiles_equal_numpy_whatever_the_sort_threads(monkeypatch, cores):
    """The in-scan quantiles (a host sort split over as many threads as the process may use, at
    most 2) equal np.quantile over the valid slots, pinned to one core or not."""
    from lktd_ppl import metrics

    monkeypatch.setattr(metrics.os, "sched_getaffinity", lambda pid: cores, raising=False)
    assert metrics._sort_threads() == min(2, len(cores))
    rng = np.random.default_rng(3)
    values = rng.normal(size=(37, 250)).astype(np.float32)
    valid = np.arange(250) < 180  # a ring not yet full: the last 70 slots are empty
    got = metrics._quantiles_numpy(values, valid, metrics.PROBS)
    want = np.quantile(values[:, :180], metrics.PROBS, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("filled", [250, 180, 2, 1])
def test_device_quantiles_equal_numpy(filled):
    """The accelerator's quantiles (an XLA sort on the device) equal np.quantile over the valid
    slots, and an empty buffer gives NaN as the host version does."""
    from lktd_ppl import metrics

    rng = np.random.default_rng(4)
    values = rng.normal(size=(37, 250)).astype(np.float32)
    valid = np.arange(250) < filled
    got = np.asarray(
        jax.jit(metrics._quantiles_jax, static_argnums=2)(values, valid, metrics.PROBS)
    )
    want = np.quantile(values[:, :filled], metrics.PROBS, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    empty = metrics._quantiles_jax(jnp.asarray(values), jnp.zeros(250, bool), metrics.PROBS)
    assert np.isnan(np.asarray(empty)).all()


@pytest.mark.parametrize("stored", [3, 5, 12])  # not full; just full; wrapped twice and more
def test_chronological_samples_undo_the_ring(stored):
    """Stages written one after another into a ring of 5 (2 members, 2 cells x 2 actions) come
    back oldest first, member by member, the empty columns left out."""
    from lktd_ppl.metrics import chronological_samples

    capacity, members, cells, actions = 5, 2, 2, 2
    ring = np.zeros((cells * actions, capacity * members))
    valid = np.zeros(capacity * members, bool)
    for t in range(stored):  # stage t's value: 10 t + member, in every cell and action
        slot = t % capacity
        for j in range(members):
            ring[:, slot * members + j] = 10 * t + j
            valid[slot * members + j] = True
    got = chronological_samples(ring, valid, stored % capacity, members, (cells, actions))
    kept = range(max(0, stored - capacity), stored)
    want = np.array([[10 * t + j for j in range(members)] for t in kept], float)
    assert got.shape == (cells, actions, len(kept), members)
    np.testing.assert_array_equal(got[1, 0], want)
