"""The escape study's aggregation (experiments/escape_study.py) on synthetic run files."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _experiment(name: str):
    """The module of ``experiments/<name>.py``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"experiments/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


study = _experiment("escape_study")


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


def test_plots_name_the_issue_rows_and_the_knobs_nearest_calibrated():
    """calibration_gap is the largest distance from the diagonal; labelled_rows keeps every row
    but the explore_* knobs, and of those the k with the smallest gap."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])[:, None]

    def row(offset):
        return {"calibration": np.broadcast_to(levels + offset, (4, 4)).copy()}

    summaries = {"lktd_N10000": row(0.3), "dqn": row(-0.4)}
    summaries |= {f"explore_{i}": row(0.01 * i) for i in (5, 1, 9, 3)}
    summaries["explore_1"]["calibration"][0, 2] = 0.5 + 0.04  # one cell further out
    assert study.calibration_gap(summaries["explore_1"]) == pytest.approx(0.04)
    assert study.calibration_gap(summaries["explore_9"]) == pytest.approx(0.09)
    named = study.labelled_rows(list(summaries), summaries, explore=2)
    assert named == ["lktd_N10000", "dqn", "explore_1", "explore_3"]  # in the table's order


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
    # each run keeps its last window per cell: 8 quantiles, ordered, around the pooled mean
    assert data["c_quantiles"].shape == (2, 8, 100, 4) and data["c_chain_mean"].shape[-1] == 1
    q, mask = data["c_quantiles"], data["c_mask"][0]
    assert (np.diff(q, axis=1)[:, :, mask] >= 0).all()
    assert ((q[:, 0] <= data["c_mean"]) & (data["c_mean"] <= q[:, -1]))[:, mask].all()
    np.testing.assert_allclose(data["c_truth"][0, 0, :2], [-8.5233, -8.5233], atol=1e-3)


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


def _decompose_module():
    return _experiment("decompose_spread")


def _table_rows(lines: list[str]) -> dict[int, list[str]]:
    return {int(r.split("|")[1]): [c.strip() for c in r.split("|")[3:-1]] for r in lines[2:]}


def test_chain_subsets_calibrated_when_truth_is_one_more_draw():
    """Chains of iid draws around a cell's centre, the truth one more draw: every level covered."""
    dec = _decompose_module()
    rng = np.random.default_rng(0)
    cells, actions, stages, chains = 3000, 2, 100, 4
    centre = rng.normal(size=(cells, actions, 1, 1))
    vals = centre + rng.normal(size=(cells, actions, stages, chains))
    truth = centre[..., 0, 0] + rng.normal(size=(cells, actions))
    mask = np.ones((cells, actions), bool)
    rows = _table_rows(dec.chain_subsets(vals, truth, mask, windows=(stages,), max_subsets=3))
    assert sorted(rows) == [1, 2, 3, 4]
    for k, cols in rows.items():
        for level, cell in zip(dec.LEVELS, cols[: len(dec.LEVELS)], strict=True):
            assert np.allclose([float(c) for c in cell.split("/")], level, atol=0.03), (k, level)
        assert float(cols[len(dec.LEVELS)]) < 0.04
        mse = [float(x) for x in cols[-1].split("/")]
        assert np.allclose(mse, 1.0, atol=0.08)


def _offset_chains(seed: int, cells: int, actions: int, stages: int, chains: int) -> np.ndarray:
    """Samples (cells, actions, stages, chains): each chain sits at its own N(0, 1) offset per
    cell and action and moves around it with sd 0.01."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(size=(cells, actions, 1, chains))
    return offsets + 0.01 * rng.normal(size=(cells, actions, stages, chains))


def test_chain_subsets_one_offset_chain_undercovers():
    """Chains that sit apart with tiny spread: one chain misses the truth, all four cover it."""
    dec = _decompose_module()
    cells, stages = 2000, 50
    vals = _offset_chains(1, cells, 1, stages, 4)
    truth = np.zeros((cells, 1))
    rows = _table_rows(dec.chain_subsets(vals, truth, np.ones((cells, 1), bool), windows=(stages,)))
    one_at_95 = float(rows[1][len(dec.LEVELS) - 1])
    four_at_95 = float(rows[4][len(dec.LEVELS) - 1])
    assert one_at_95 < 0.05
    assert 0.7 < four_at_95 < 0.95  # the range of 4 normals holds 0 with prob 1 - 2 / 2^4


def test_decompose_signed_error_keeps_a_shared_offset_and_averages_the_rest():
    """Every chain off by +0.3 on action 2, each also by its own N(0, 1): only the +0.3 stays."""
    dec = _decompose_module()
    cells = 500
    vals = _offset_chains(2, cells, 4, 20, 50)
    vals[:, 2] += 0.3
    truth, mask = np.zeros((cells, 4)), np.ones((cells, 4), bool)
    row = next(
        r for r in dec.decompose(vals, truth, mask) if r.startswith("| pooled mean error (mean)")
    )
    signed = [float(c) for c in row.split("|")[2:-1]]
    # the pooled mean's own part: sd 1 / sqrt(50) per cell, averaged over 500 cells
    assert np.allclose(signed, [0.0, 0.0, 0.3, 0.0], atol=0.02), signed


def test_error_grids_put_cell_x_y_at_x_y(tmp_path):
    """Cell (x, y) is row x * size + y of the samples; its error lands at grid [a, x, y]."""
    dec = _decompose_module()
    size, cells = 3, 9
    truth = np.zeros((cells, 4))
    vals = np.zeros((cells, 4, 5, 2))
    vals[1 * size + 2, 2] = 0.7  # cell (1, 2), action W
    mask = np.ones((cells, 4), bool)
    mask[0 * size + 1, 2] = False  # W is illegal at x = 0
    grids = dec.plot_errors(vals, truth, mask, tmp_path / "e.png")
    assert grids.shape == (4, size, size)
    assert grids[2, 1, 2] == pytest.approx(0.7)
    assert np.isnan(grids[2, 0, 1])
    assert np.nansum(np.abs(grids)) == pytest.approx(0.7)
    assert (tmp_path / "e.png").stat().st_size > 10_000


def test_frozen_buffer_mode_and_posterior_recover_known_q_values():
    """A buffer of one-step episodes: E pays -1 and N pays -2 in every cell (no bootstrap), so
    Q(s, E) = -1 and Q(s, N) = -2; the modes and the chains continued from them find both."""
    import jax

    from lktd_ppl.agents.harness import EscapeConfig
    from lktd_ppl.agents.lktd import LKTDAgentConfig
    from lktd_ppl.envs.escape import cell_observations

    fb = _experiment("frozen_buffer")
    obs = cell_observations()  # (100, 2)
    reps = 10
    cells = np.tile(np.arange(100), 2 * reps)
    actions = np.repeat([0, 1], 100 * reps)
    size = cells.size
    buffer = {
        "obs": obs[cells].astype(np.float32),
        "action": actions.astype(np.int32),
        "reward": np.where(actions == 0, -1.0, -2.0).astype(np.float32),
        "next_obs": obs[cells].astype(np.float32),
        "next_action": np.zeros(size, np.int32),
        "terminated": np.ones(size, np.float32),
        "next_mask": np.ones((size, 4), np.int8),
    }
    truth = np.zeros((100, 4))
    truth[:, 0], truth[:, 1] = -1.0, -2.0
    mask = np.zeros((100, 4), bool)
    mask[:, :2] = True
    cfg = LKTDAgentConfig(
        pseudo_population=size, step_size=2.2e-5, num_chains=2, escape=EscapeConfig()
    )
    final = {
        "config": cfg,
        "buffer": buffer,
        "positions": 0.1 * np.asarray(jax.random.normal(jax.random.key(0), (2, 1284))),
        "truth": truth,
        "mask": mask,
    }
    thetas, modes = fb.posterior_modes(final, iters=1500, lr=1e-2, stage0=20_000)
    assert modes.shape == (2, 100, 4)
    assert fb.per_action_mse(modes.mean(0), truth, mask)[:2].max() < 1e-3
    frozen = fb.frozen_posterior(
        {**final, "positions": thetas}, jax.random.key(1), warmup=0, keep=50, stage0=20_000
    )
    assert frozen.shape == (100, 4, 50, 2)  # (cells, actions, kept stages, chains)
    mse = fb.per_action_mse(frozen.mean((2, 3)), truth, mask)
    assert mse[:2].max() < 1e-3, mse
    # a step lowered by degrees first (phases) ends where the chains sample the same values
    phased = fb.frozen_posterior(
        {**final, "positions": thetas},
        jax.random.key(1),
        warmup=0,
        keep=50,
        stage0=20_000,
        phases=((1e-5, 20), (5e-6, 20)),
    )
    assert phased.shape == frozen.shape
    assert fb.per_action_mse(phased.mean((2, 3)), truth, mask)[:2].max() < 1e-3
    assert not np.allclose(phased, frozen)  # the phases did move the chains


def test_frozen_buffer_interval_scores_match_known_coverage():
    """Every cell's samples are the same uniform grid on [-1, 1] and the truths sit at evenly
    spaced points of it, so the equal-tailed L interval holds a fraction L of the truths; the 95%
    interval is 1.9 wide; an illegal cell's truth (outside every interval) is not counted."""
    from lktd_ppl.metrics import LEVELS

    fb = _experiment("frozen_buffer")
    cells = 100
    samples = np.broadcast_to(np.linspace(-1.0, 1.0, 20_001), (cells + 1, 4, 20_001))
    truth = np.zeros((cells + 1, 4))
    truth[:cells] = (-1.0 + 2.0 * (np.arange(cells) + 0.5) / cells)[:, None]
    truth[cells] = 5.0
    mask = np.ones((cells + 1, 4), bool)
    mask[cells] = False
    cover, width = fb.interval_scores(samples, truth, mask)
    assert cover.shape == (len(LEVELS), 4)
    np.testing.assert_allclose(cover, np.repeat(np.array(LEVELS)[:, None], 4, 1), atol=1e-9)
    np.testing.assert_allclose(width, 1.9, rtol=1e-6)


def test_paired_ratio_compares_runs_seed_by_seed():
    """Per-run MSE by seed in the summaries; the ratio is taken over the seeds both rows have."""
    summary = study.aggregate(synthetic([1e-3, 2e-3, 4e-3]))
    assert summary["run_mse"] == pytest.approx({0: 1e-3, 1: 2e-3, 2: 4e-3})
    other = {1: 1e-3, 2: 3e-3, 7: 1.0}  # seed 7 has no partner, seed 0 neither
    r, se, n = study.paired_ratio(other, summary["run_mse"])
    assert n == 2
    assert r == pytest.approx(np.sqrt(0.5 * 0.75))  # geometric mean
    assert se == pytest.approx(r * np.std(np.log([0.5, 0.75]), ddof=1) / np.sqrt(2))
    # a doubling and a halving cancel on the log scale
    assert study.paired_ratio({0: 2.0, 1: 0.5}, {0: 1.0, 1: 1.0})[0] == pytest.approx(1.0)
    assert np.isnan(study.paired_ratio({0: 1.0}, {0: 2.0})[0])


def test_calibration_gap_names_its_place_and_its_standard_error_across_runs():
    """The curve is the mean over runs and windows; its s.e. is the runs' spread / sqrt(runs);
    the largest gap is reported with its level, action and that s.e."""
    data = synthetic([1e-3, 1e-3, 1e-3])
    levels = np.array([0.5, 0.8, 0.9, 0.95])[:, None]
    data["w_calibration"] = np.broadcast_to(levels, (3, 8, 4, 4)).copy()
    data["w_calibration"][:, -study.LAST_WINDOWS :, 0, 3] = np.array([0.6, 0.7, 0.8])[:, None]
    summary = study.aggregate(data)
    assert summary["calibration"][0, 3] == pytest.approx(0.7)
    assert summary["calibration_se"][0, 3] == pytest.approx(0.1 / np.sqrt(3))
    assert summary["calibration_se"][1, 0] == pytest.approx(0.0)
    gap, level, action, se = study.calibration_gap_where(summary)
    assert (gap, level, action) == (pytest.approx(0.2), 0.5, 3)
    assert se == pytest.approx(0.1 / np.sqrt(3))
    assert np.isnan(study.aggregate(synthetic([1e-3]))["calibration_se"]).all()  # one run
    summaries = {"lktd_a": summary, "dqn": study.aggregate(synthetic([1e-3])), "explore_b": {}}
    summaries["explore_b"]["calibration"] = levels + np.zeros((4, 4)) + 0.01
    assert study.nearest_calibrated(summaries, 2) == ["explore_b", "lktd_a"]  # DQN is no candidate
    summaries["explore_b"]["runs"] = 2  # nearer, but over too few runs for the targets
    assert study.nearest_calibrated(summaries, 1, min_runs=3) == ["lktd_a"]


def test_trimmed_calibration_curve_keeps_the_equal_tailed_columns_windows():
    """The trimmed curve leaves out the windows outside Tukey's fences on the equal-tailed
    coverage, so its 95% point is that column's mean; the targets give it and the curve averaged
    over the actions beside the strict verdict (plain mean, every action), which stays."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    data = synthetic([1e-4] * 5)
    data["w_coverage_equal_tailed"][:] = 0.95
    data["w_coverage_equal_tailed"][4] = 0.3  # one run whose shared error nothing covers
    data["w_calibration"] = np.broadcast_to(levels[:, None], (5, 8, 4, 4)).copy()
    data["w_calibration"][4] = np.array([0.1, 0.2, 0.25, 0.3])[:, None]
    summary = study.aggregate(data)
    assert summary["calibration"][:, 0] == pytest.approx((4 * levels + [0.1, 0.2, 0.25, 0.3]) / 5)
    assert summary["calibration_trimmed"] == pytest.approx(np.broadcast_to(levels[:, None], (4, 4)))
    assert summary["calibration_trimmed"][3] == pytest.approx(
        summary["coverage_equal_tailed"]["mean"]
    )
    lines = study.targets({"explore_x": summary})
    assert any("largest calibration gap" in ln and "0.130" in ln and "missed" in ln for ln in lines)
    (info,) = [ln for ln in lines if "for comparison only" in ln]
    assert "averaged over the actions = 0.130" in info and "(Tukey's fences) = 0.000" in info
    (plain,) = [ln for ln in lines if "no fences" in ln]  # the run left out, put back
    assert "= 0.820/0.820/0.820/0.820; 5 of 25 windows fall outside" in plain


near_point = _experiment("near_point_calibration")


def test_near_point_chains_match_the_distribution_free_limits():
    """Five near-point chains: with the truth at their centre the 50% interval (2nd to 4th
    point) covers it when 2 or 3 of the 5 fall below, 20/32; the 80-95% intervals (1st to 5th)
    30/32. With the truth one more draw its rank among 6 is uniform: 2/6 and 4/6."""
    centred = near_point.near_point_curve(5, shared=0.0, within=0.01, draws=20_000)
    assert near_point.binomial_centred(5) == pytest.approx([20 / 32, 30 / 32, 30 / 32, 30 / 32])
    assert centred == pytest.approx(near_point.binomial_centred(5), abs=0.02)
    one_more = near_point.near_point_curve(5, shared=1.0, within=0.01, draws=20_000)
    assert near_point.rank_uniform(5) == pytest.approx([2 / 6, 4 / 6, 4 / 6, 4 / 6])
    assert one_more == pytest.approx(near_point.rank_uniform(5), abs=0.02)
    # chains that move as much as they scatter, about one more draw from the truth: near the diagonal
    moving = near_point.near_point_curve(5, shared=1.2, within=1.0, draws=20_000)
    assert near_point.gap(moving) < 0.04
    with pytest.raises(ValueError, match="within >= 0"):
        near_point.near_point_curve(5, shared=0.0, within=-1.0)


def test_near_point_fit_finds_the_grid_point_that_made_the_curve():
    curves = np.zeros((len(near_point.SHARED_GRID), len(near_point.WITHIN_GRID), 4))
    curves[3, 2] = [0.6, 0.9, 0.95, 0.97]
    curves[5, 1] = [0.5, 0.8, 0.9, 0.95]
    sh, w, c, err = near_point.nearest(curves, np.array([0.52, 0.8, 0.9, 0.94]))
    assert (sh, w, err) == (
        near_point.SHARED_GRID[5],
        near_point.WITHIN_GRID[1],
        pytest.approx(0.02),
    )
    assert c == pytest.approx([0.5, 0.8, 0.9, 0.95])


per_run_cal = _experiment("per_run_calibration")


def test_per_run_ratio_is_rmse_over_gaussian_sd():
    """per_run: RMSE over the last 5 windows (all actions), the mean width, their ratio to a
    Gaussian's 95% width / 3.92, and the per-action coverage and level curve of each run."""
    w, a, levels = 7, 4, 4
    mse = np.full((2, w, a), 1e-4)
    mse[1, -5:] = 4e-4  # the second run errs twice as much (RMSE 0.02) in its last windows
    width = np.full((2, w), 0.0392)
    cal = np.zeros((2, w, levels, a))
    cal[1, -5:, 0] = 0.5
    et = np.ones((2, w, a))
    data = dict(
        seeds=np.array([3, 4]),
        w_mse=mse,
        w_width=width,
        w_coverage_equal_tailed=et,
        w_calibration=cal,
    )
    rows = per_run_cal.per_run(data)
    assert [r["seed"] for r in rows] == [3, 4]
    assert rows[0]["rmse"] == pytest.approx(0.01)
    assert rows[0]["ratio"] == pytest.approx(1.0)
    assert rows[1]["ratio"] == pytest.approx(2.0)
    assert rows[1]["curve"] == pytest.approx([0.5, 0, 0, 0])


def test_paired_change_is_taken_seed_by_seed_on_the_common_seeds():
    """paired: B - A per common seed (seed 9 of B alone is left out), its mean and standard error
    across seeds, and the geometric-mean width ratio."""

    def run(seed: int, c50: float, width: float) -> dict:
        return dict(
            seed=seed,
            rmse=0.01,
            width=width,
            curve=np.array([c50, 0.8, 0.9, 0.95]),
            et95=np.full(4, 0.95),
        )

    a = [run(0, 0.5, 0.04), run(1, 0.7, 0.04), run(2, 0.3, 0.02)]
    b = [run(2, 0.2, 0.01), run(0, 0.4, 0.02), run(1, 0.7, 0.02), run(9, 0.0, 1.0)]
    p = per_run_cal.paired(a, b)
    assert p["seeds"] == [2, 0, 1]
    assert p["curve"] == pytest.approx([-0.2 / 3, 0, 0, 0])
    assert p["curve_se"][0] == pytest.approx(np.std([-0.1, -0.1, 0.0], ddof=1) / np.sqrt(3))
    assert p["et95"] == pytest.approx(np.zeros(4))
    assert p["width_ratio"] == pytest.approx(0.5)
    assert p["rmse_ratio"] == pytest.approx(1.0)


def test_bootstrap_meets_the_gap_as_often_as_the_binomial_says():
    """Nine calibrated runs and one whose 50% level reads 0.8: the row's gap is 0.03 (met); a
    draw of 10 runs misses it when that run comes twice or more (gap >= 0.06), which happens
    with probability 1 - P(Binomial(10, 0.1) <= 1) = 0.264; the band and the MSE always hold."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    data = synthetic([1e-4] * 10)
    data["w_coverage_equal_tailed"][:] = 0.95
    data["w_calibration"] = np.broadcast_to(levels[:, None], (10, 8, 4, 4)).copy()
    data["w_calibration"][7, :, 0] = 0.8
    assert study.calibrated_verdict(study.aggregate(data)) == dict(
        equal_tailed=True, gap=True, mse=True, all=True
    )
    b = study.bootstrap_calibrated(data, 10, draws=400)
    p_met = 0.9**10 + 10 * 0.1 * 0.9**9
    assert b["gap"] == pytest.approx(p_met, abs=0.07)  # 3 s.e. of 400 draws
    assert b["all"] == b["gap"]
    assert b["equal_tailed"] == b["mse"] == 1.0


held_out = _experiment("held_out")


def test_held_out_judges_the_seeds_the_choice_was_made_on_apart_from_the_rest():
    """Seeds 0-3 calibrated, seeds 4-5 with E's 50% level at 0.8: the first set meets all three
    targets and its bootstrap gives the held-out pair 100% odds; the held-out pair misses the gap
    by 0.30 (at E, 50%); a split that leaves a set empty names the flag."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    data = synthetic([1e-4] * 6)
    data["w_coverage_equal_tailed"][:] = 0.95
    data["w_calibration"] = np.broadcast_to(levels[:, None], (6, 8, 4, 4)).copy()
    data["w_calibration"][4:, :, 0, 0] = 0.8
    chosen, held = held_out.split_by_seed(data, 4)
    assert chosen["seeds"].tolist() == [0, 1, 2, 3] and held["seeds"].tolist() == [4, 5]
    assert study.calibrated_verdict(study.aggregate(chosen))["all"]
    assert study.calibration_gap(study.aggregate(held)) == pytest.approx(0.3)
    text = "\n".join(held_out.held_out_lines("row", data, 4))
    assert "## Seeds 0-3 (chosen on, 4 runs)" in text
    assert "## Seeds 4-5 (held out, 2 runs)" in text
    assert "= 0.300 (E at 50%" in text and "**missed**" in text
    assert "all three 100% of the time" in text
    with pytest.raises(SystemExit, match="--held-out-from 6 leaves a set empty"):
        held_out.split_by_seed(data, 6)


def test_prediction_reads_only_the_seeds_below_the_held_out_ones():
    """Seeds 0-1 err 1e-4 and 3e-4 (calibrated otherwise); seeds 2-3, held out, err 1e-2 and
    miss the band. A draw of 2 runs from seeds 0-1 averages 1e-4, 2e-4 or 3e-4 with odds
    1/4, 1/2, 1/4: the 10th/50th/90th percentiles are those three, the gap and the band stay at
    their seeds' 0 and 0.95, and every target is met in every draw."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    data = synthetic([1e-4, 3e-4, 1e-2, 1e-2])
    data["w_coverage_equal_tailed"][:] = 0.95
    data["w_coverage_equal_tailed"][2:] = 0.5
    data["w_calibration"] = np.broadcast_to(levels[:, None], (4, 8, 4, 4)).copy()
    r = held_out.predicted_ranges(data, 2, draws=50)
    assert r["mse"][1] > 1e-3  # all four seeds in: the held-out ones count
    below = study.take_runs(data, np.arange(4) < 2)
    r = held_out.predicted_ranges(below, 2, draws=200)
    assert r["mse"] == pytest.approx([1e-4, 2e-4, 3e-4])
    assert r["gap"] == pytest.approx([0, 0, 0], abs=1e-12)
    assert r["equal_tailed"] == pytest.approx(np.full((3, 4), 0.95))
    text = "\n".join(held_out.predicted_lines("row", data, 2, 2))
    assert "From seeds 0-1 (2 runs) alone" in text
    assert "MSE average: 2.0e-04 (1.0e-04-3.0e-04)" in text
    assert "all three 100%" in text
    with pytest.raises(SystemExit, match="no seed below --held-out-from 0"):
        held_out.predicted_lines("row", data, 0, 2)


def test_projection_moves_each_run_by_its_own_seeds_change_once_more():
    """project: B's seeds 0 and 1 moved by their own change from A (+0.03, +0.05 on the
    equal-tailed column), seed 2 (not in A) by the mean change (+0.04, clipped at 1); widths
    and RMSE scaled by the paired ratios again (width 0.04 -> 0.02 -> 0.01, MSE 4e-4 -> 1e-4 ->
    2.5e-5)."""
    a = synthetic([4e-4] * 2)
    b = synthetic([1e-4] * 3)
    a["w_width"][:], b["w_width"][:] = 0.04, 0.02
    a["w_coverage_equal_tailed"][:] = 0.90
    for seed, et in enumerate((0.93, 0.95, 0.99)):
        b["w_coverage_equal_tailed"][seed] = et
    p = per_run_cal.project(a, b)
    assert p["w_coverage_equal_tailed"][:, 0, 0] == pytest.approx([0.96, 1.0, 1.0])
    assert p["w_coverage_equal_tailed"].shape == b["w_coverage_equal_tailed"].shape
    assert p["w_calibration"] == pytest.approx(b["w_calibration"])  # no change from A to B
    assert p["w_width"] == pytest.approx(np.full_like(b["w_width"], 0.01))
    assert p["w_mse"] == pytest.approx(np.full_like(b["w_mse"], 2.5e-5))
    assert b["w_coverage_equal_tailed"][0, 0, 0] == pytest.approx(0.93)  # B itself untouched


def test_bootstrap_interval_is_the_mean_plus_minus_1_96_standard_errors():
    """Forty runs whose 95% coverage follows a normal law (mean 0.95, sd 0.02; few windows
    outside the fences): a resample of forty averages 0.95 with sd 0.02 / sqrt(40), so the 95%
    interval is about 0.95 +- 0.0062; the MSE, constant, has a point interval."""
    from statistics import NormalDist

    data = synthetic([1e-4] * 40)
    law = NormalDist(0.95, 0.02)
    values = [law.inv_cdf((i + 0.5) / 40) for i in range(40)]
    data["w_coverage_equal_tailed"][:] = np.array(values)[:, None, None]
    ci = study.bootstrap_interval(data, draws=2000)
    half = 1.96 * np.std(values) / np.sqrt(40)
    assert ci["equal_tailed"][:, 0] == pytest.approx([0.95 - half, 0.95 + half], abs=0.0015)
    assert ci["mse_avg"] == pytest.approx([1e-4, 1e-4])
    lines = study.calibrated_lines("row", {**study.aggregate(data), "interval": ci})
    assert any("95% bootstrap interval over these runs" in line for line in lines)


def test_held_out_reads_only_the_seeds_below_a_bound(tmp_path):
    """A row run further since a verdict: --seeds-below keeps the verdict's seeds (4 and 5 held
    out, not 6 and 7) and says so in its Made-by line."""
    data = synthetic([1e-4] * 6 + [5e-4] * 2)
    folder = tmp_path / "runs" / "row"
    folder.mkdir(parents=True)
    for i in range(8):
        run = {**study.take_runs(data, np.array([i])), "wall_time": 1.0}
        np.savez(folder / f"seeds_{i:03d}-{i:03d}.npz", **run)
    out = tmp_path / "v.md"
    args = ["row", "--held-out-from", "4", "--seeds-below", "6", "--results", str(tmp_path)]
    assert held_out.main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Seeds 4-5 (held out, 2 runs)" in text and "--seeds-below 6" in text
    assert "MSE avg = 1.0e-04" in text.split("## Seeds 4-5")[1]


error_correlation = _experiment("error_correlation")


def _mode_fields(rng, runs: int, n: int, modes: int, scale_sd: float = 0.0) -> np.ndarray:
    """Fields that are sums of ``modes`` equal independent modes (orthogonal, unit mean square
    over the n entries), each run's field times exp(scale_sd * N(0, 1))."""
    basis = np.linalg.qr(rng.standard_normal((n, modes)))[0].T * np.sqrt(n / modes)
    fields = rng.standard_normal((runs, modes)) @ basis
    return fields * np.exp(scale_sd * rng.standard_normal((runs, 1)))


def test_effective_modes_count_independent_entries_and_shared_modes():
    """n independent entries read about n; a field of 4 equal independent modes about 4: the
    pair average over runs is unbiased, so 40 runs suffice for 400 entries."""
    rng = np.random.default_rng(0)
    assert error_correlation.effective_modes(rng.standard_normal((40, 400))) == pytest.approx(
        400, rel=0.15
    )
    assert error_correlation.effective_modes(_mode_fields(rng, 40, 400, 4)) == pytest.approx(
        4, rel=0.25
    )


def test_calibrated_null_covers_at_the_nominal_levels_and_keeps_the_correlation():
    rng = np.random.default_rng(1)
    u = _mode_fields(rng, 40, 360, 5)
    null = error_correlation.calibrated_null(u, 4000, rng)
    cov = error_correlation.per_run_coverage(null, np.arange(360) % 4)
    assert cov.shape == (4000, 4, 4)
    np.testing.assert_allclose(cov.mean(axis=(0, 2)), [0.5, 0.8, 0.9, 0.95], atol=0.01)
    assert error_correlation.effective_modes(null[:200]) == pytest.approx(5, rel=0.3)
    # five modes: a calibrated run covers 95% of its entries only on average
    assert np.percentile(cov[:, 3].mean(-1), 10) < 0.85


def test_spread_test_flags_widths_that_do_not_follow_the_errors():
    """Calibrated runs (their scale only the modes' luck) are not flagged; the same runs each
    scaled by a log-normal factor of sd 0.5 (widths blind to the run's error) are."""
    rng = np.random.default_rng(2)
    for scale_sd, flagged in ((0.0, False), (0.5, True)):
        z = _mode_fields(rng, 40, 360, 5, scale_sd)
        u = z / error_correlation.run_scale(z)[:, None]
        null = error_correlation.calibrated_null(u, 4000, rng)
        measured, typical, p = error_correlation.spread_test(z, null, rng, sets=500)
        assert (p < 0.01) == flagged, (scale_sd, measured, typical, p)


def test_batch_odds_of_calibrated_independent_runs_are_near_certain():
    """Runs with 360 independent entries, calibrated: a batch of 20 meets the band and the gap
    nearly always (per action, 90 entries: a run's 95% coverage has sd 0.023, a batch mean
    0.005); with 3 modes far less often."""
    rng = np.random.default_rng(3)
    actions = np.arange(360) % 4
    indep = error_correlation.per_run_coverage(rng.standard_normal((500, 360)), actions)
    assert error_correlation.batch_odds(indep, 20, 100, rng)["both"] >= 0.95
    few = error_correlation.calibrated_null(_mode_fields(rng, 40, 360, 3), 500, rng)
    few_cov = error_correlation.per_run_coverage(few, actions)
    assert error_correlation.batch_odds(few_cov, 20, 100, rng)["both"] < 0.7


def test_behaviour_q_is_the_truth_when_the_chains_act_optimally():
    """Chains whose mean Q-grid prefers the spec's optimal action act by the truth's policy, so
    their Q is the truth (Q(0,0,E) = -8.5233); a second chain that prefers N everywhere it can
    adds its own policy's Q, and the two are averaged."""
    from lktd_ppl.envs import truth

    best = truth.optimal_actions(10)
    grid = np.zeros((100, 4))
    grid[np.flatnonzero(best >= 0), best[best >= 0]] = 1.0
    q = error_correlation.behaviour_q(grid[..., None], 0.9, 0.01)
    np.testing.assert_allclose(q, truth.q_epsilon_greedy(10), atol=1e-12, equal_nan=True)
    assert q[0, 0] == pytest.approx(-8.5233, abs=1e-4)
    north = np.zeros((100, 4))
    north[:, 1] = 1.0  # N where it is legal, else the first legal action
    legal = truth.evaluation_mask(10)
    acts = np.where(legal[:, 1], 1, np.where(legal, 0.0, -np.inf).argmax(axis=1))
    acts[truth.exit_cell(10)] = -1
    two = error_correlation.behaviour_q(np.stack([grid, north], axis=-1), 0.9, 0.01)
    np.testing.assert_allclose(
        two, (truth.q_epsilon_greedy(10) + truth.q_epsilon_greedy_of(acts)) / 2, equal_nan=True
    )
    diff = two - truth.q_epsilon_greedy(10)  # N-first is no better anywhere, worse on average
    assert np.nanmax(diff) <= 1e-12 and np.nanmean(diff) < -1e-3


def test_systematic_share_is_one_for_a_shared_error_and_zero_for_opposite_ones():
    field = np.random.default_rng(4).standard_normal(50)
    assert error_correlation.systematic_share(np.stack([field] * 3)) == pytest.approx(1.0)
    assert error_correlation.systematic_share(np.stack([field, -field])) == pytest.approx(0.0)
