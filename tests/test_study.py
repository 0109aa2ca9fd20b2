"""The study library (lktd_ppl.study): aggregation on synthetic runs with known answers, and a
tiny row run, resumed and compacted."""

import numpy as np
import pytest

from lktd_ppl.study import aggregate as agg
from lktd_ppl.study import data as study_data
from lktd_ppl.study.plots import labelled_rows
from lktd_ppl.study.runner import DeadlineError, Row, run_row
from lktd_ppl.study.tables import calibrated_lines, targets


def synthetic(mse_per_run: list[float]) -> dict:
    """Runs x 8 windows x 4 actions, every metric constant per run."""
    runs = len(mse_per_run)
    shape = (runs, 8, 4)
    mse = np.array(mse_per_run, dtype=float)[:, None, None] * np.ones(shape)
    data = {"seeds": np.arange(runs), "window_steps": np.arange(1, 9) * 10_000}
    for k, key in agg.FAMILY_KEYS.items():
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
    assert agg.calibration_gap(summaries["explore_1"]) == pytest.approx(0.04)
    assert agg.calibration_gap(summaries["explore_9"]) == pytest.approx(0.09)
    named = labelled_rows(list(summaries), summaries, explore=2)
    assert named == ["lktd_N10000", "dqn", "explore_1", "explore_3"]  # in the table's order


def test_diverged_runs_are_left_out_and_counted():
    data = synthetic([1e-3, np.nan, 3e-3])
    kept, bad = agg.split_diverged(data)
    assert bad == 1
    np.testing.assert_array_equal(kept["seeds"], [0, 2])
    np.testing.assert_array_equal(kept["window_steps"], data["window_steps"])  # shared, not per run
    summary = agg.aggregate(kept)
    assert summary["runs"] == 2
    np.testing.assert_allclose(summary["mse"]["mean"], 2e-3)
    assert agg.split_diverged(synthetic([np.nan, np.inf])) == (None, 2)
    assert agg.split_diverged(synthetic([1e-3]))[1] == 0


def test_trimmed_mean_drops_the_outlying_run_and_median_keeps_it():
    summary = agg.aggregate(synthetic([1e-3] * 6 + [1.0]))
    np.testing.assert_allclose(summary["mse"]["mean"], 1e-3)  # the 5 rows of the 1.0 run dropped
    assert summary["mse"]["kept"] == 30 and summary["mse"]["rows"] == 35
    np.testing.assert_allclose(summary["mse"]["median"], 1e-3)


TINY = Row("lktd", "paper", dict(compat=False, escape=dict(sample_size=50)), 2)


def test_batched_seeds_are_written_one_file_per_seed_resume_and_compact(tmp_path, capsys):
    """A vmapped batch writes one file per seed, with the run's last window per cell; a rerun
    skips seeds that have a run; load_runs joins them in seed order; compact_row folds them into
    the row's compact file (and removes them), which loads the same and still counts as run."""
    run_row("tiny", TINY, seeds=2, batch=2, steps=20_000, out=tmp_path)
    assert "seeds 0..1 (2) done" in capsys.readouterr().out
    folder = tmp_path / "runs" / "tiny"
    assert sorted(f.name for f in folder.glob("*.npz")) == [
        "seeds_000-000.npz",
        "seeds_001-001.npz",
    ]
    # each run keeps its last window per cell: 8 quantiles, ordered, around the pooled mean
    raw = [dict(np.load(f)) for f in study_data.seed_files(folder)]
    q = np.concatenate([r["c_quantiles"] for r in raw])
    mean, mask = np.concatenate([r["c_mean"] for r in raw]), raw[0]["c_mask"][0]
    assert q.shape == (2, 8, 100, 4) and raw[0]["c_chain_mean"].shape[-1] == 1
    assert (np.diff(q, axis=1)[:, :, mask] >= 0).all()
    assert ((q[:, 0] <= mean) & (mean <= q[:, -1]))[:, mask].all()
    np.testing.assert_allclose(raw[0]["c_truth"][0, 0, :2], [-8.5233, -8.5233], atol=1e-3)
    data = study_data.load_runs(tmp_path, "tiny")
    assert data["seeds"].tolist() == [0, 1]
    assert data["w_mse"].shape == (2, 2, 4) and np.isfinite(data["w_mse"][:, -1]).all()
    assert list(data["backend"]) == ["cpu", "cpu"]
    assert np.abs(data["w_mse"][0, -1] - data["w_mse"][1, -1]).max() > 0  # different seeds
    curves = np.concatenate([np.nanmean(r["w_coverage"], -1) for r in raw])
    np.testing.assert_allclose(data["curve_coverage"], curves, atol=1e-3)  # float16 kept

    assert study_data.compact_row(folder) == 2
    assert sorted(f.name for f in folder.iterdir()) == ["config.json", "runs.npz"]
    compact = study_data.load_runs(tmp_path, "tiny")
    assert sorted(compact) == sorted(data)
    for k, v in data.items():
        np.testing.assert_array_equal(compact[k], v, err_msg=k)
    assert study_data.covered_seeds(folder) == {0, 1}
    run_row("tiny", TINY, seeds=2, batch=2, steps=20_000, out=tmp_path)
    assert "done" not in capsys.readouterr().out


def test_seeds_covered_by_files_of_any_batch_size_and_the_compact_file(tmp_path):
    for name in ("seeds_000-003.npz", "seeds_005-005.npz", "seeds_007-009.npz.part"):
        (tmp_path / name).touch()
    assert study_data.covered_seeds(tmp_path) == {0, 1, 2, 3, 5}
    np.savez(tmp_path / study_data.COMPACT, seeds=np.array([5, 6]))
    assert study_data.covered_seeds(tmp_path) == {0, 1, 2, 3, 5, 6}


def test_a_compact_file_and_newer_seed_files_join_in_seed_order(tmp_path):
    """A row folded once, then run further: the loader joins both in seed order, a per-seed
    file's run replacing the compact file's run of the same seed; compacting again keeps that."""
    runs = synthetic([1e-3, 2e-3, 3e-3, 4e-3])
    runs["policy_frequency"] = np.zeros((4, 100, 4))

    def seed_arrays(i: int, mse: float) -> dict:
        one = {**agg.take_runs(runs, np.array([i])), "wall_time": 1.0}
        return {**one, "w_mse": np.full_like(one["w_mse"], mse)}

    folder = tmp_path / "runs" / "row"
    folder.mkdir(parents=True)
    for i in (0, 2):
        study_data.write_npz(
            study_data.seed_file(folder, i), seed_arrays(i, runs["w_mse"][i, 0, 0])
        )
    assert study_data.compact_row(folder) == 2
    for i, mse in ((3, 4e-3), (1, 2e-3), (2, 5e-3)):  # seed 2 again, another run
        study_data.write_npz(study_data.seed_file(folder, i), seed_arrays(i, mse))
    data = study_data.load_runs(tmp_path, "row")
    assert data["seeds"].tolist() == [0, 1, 2, 3]
    assert data["w_mse"][:, 0, 0] == pytest.approx([1e-3, 2e-3, 5e-3, 4e-3])
    assert data["w_mse"].shape == (4, agg.LAST_WINDOWS, 4)  # the last windows only
    np.testing.assert_array_equal(data["window_steps"], runs["window_steps"])
    assert study_data.compact_row(folder) == 3
    again = study_data.load_runs(tmp_path, "row")
    np.testing.assert_array_equal(again["w_mse"], data["w_mse"])
    assert not list(folder.glob("*.part"))


def test_a_batch_projected_past_the_deadline_stops_and_writes_nothing(tmp_path):
    import time

    with pytest.raises(DeadlineError, match="after the deadline"):
        run_row(  # the batch of the test above: its compiled program is read back
            "tiny",
            TINY,
            seeds=2,
            batch=2,
            steps=20_000,
            out=tmp_path,
            deadline=time.time() + 0.01,
        )
    assert not list((tmp_path / "runs" / "tiny").glob("*.npz"))


def test_paired_ratio_compares_runs_seed_by_seed():
    """Per-run MSE by seed in the summaries; the ratio is taken over the seeds both rows have."""
    summary = agg.aggregate(synthetic([1e-3, 2e-3, 4e-3]))
    assert summary["run_mse"] == pytest.approx({0: 1e-3, 1: 2e-3, 2: 4e-3})
    other = {1: 1e-3, 2: 3e-3, 7: 1.0}  # seed 7 has no partner, seed 0 neither
    r, se, n = agg.paired_ratio(other, summary["run_mse"])
    assert n == 2
    assert r == pytest.approx(np.sqrt(0.5 * 0.75))  # geometric mean
    assert se == pytest.approx(r * np.std(np.log([0.5, 0.75]), ddof=1) / np.sqrt(2))
    # a doubling and a halving cancel on the log scale
    assert agg.paired_ratio({0: 2.0, 1: 0.5}, {0: 1.0, 1: 1.0})[0] == pytest.approx(1.0)
    assert np.isnan(agg.paired_ratio({0: 1.0}, {0: 2.0})[0])


def test_calibration_gap_names_its_place_and_its_standard_error_across_runs():
    """The curve is the mean over runs and windows; its s.e. is the runs' spread / sqrt(runs);
    the largest gap is reported with its level, action and that s.e."""
    data = synthetic([1e-3, 1e-3, 1e-3])
    levels = np.array([0.5, 0.8, 0.9, 0.95])[:, None]
    data["w_calibration"] = np.broadcast_to(levels, (3, 8, 4, 4)).copy()
    data["w_calibration"][:, -agg.LAST_WINDOWS :, 0, 3] = np.array([0.6, 0.7, 0.8])[:, None]
    summary = agg.aggregate(data)
    assert summary["calibration"][0, 3] == pytest.approx(0.7)
    assert summary["calibration_se"][0, 3] == pytest.approx(0.1 / np.sqrt(3))
    assert summary["calibration_se"][1, 0] == pytest.approx(0.0)
    gap, level, action, se = agg.calibration_gap_where(summary)
    assert (gap, level, action) == (pytest.approx(0.2), 0.5, 3)
    assert se == pytest.approx(0.1 / np.sqrt(3))
    assert np.isnan(agg.aggregate(synthetic([1e-3]))["calibration_se"]).all()  # one run
    summaries = {"lktd_a": summary, "dqn": agg.aggregate(synthetic([1e-3])), "explore_b": {}}
    summaries["explore_b"]["calibration"] = levels + np.zeros((4, 4)) + 0.01
    assert agg.nearest_calibrated(summaries, 2) == ["explore_b", "lktd_a"]  # DQN is no candidate
    summaries["explore_b"]["runs"] = 2  # nearer, but over too few runs for the targets
    assert agg.nearest_calibrated(summaries, 1, min_runs=3) == ["lktd_a"]


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
    summary = agg.aggregate(data)
    assert summary["calibration"][:, 0] == pytest.approx((4 * levels + [0.1, 0.2, 0.25, 0.3]) / 5)
    assert summary["calibration_trimmed"] == pytest.approx(np.broadcast_to(levels[:, None], (4, 4)))
    assert summary["calibration_trimmed"][3] == pytest.approx(
        summary["coverage_equal_tailed"]["mean"]
    )
    lines = targets({"explore_x": summary})
    assert any("largest calibration gap" in ln and "0.130" in ln and "missed" in ln for ln in lines)
    (info,) = [ln for ln in lines if "averaged over the actions" in ln]
    assert "averaged over the actions = 0.130" in info and "(Tukey's fences) = 0.000" in info
    (verdict,) = [ln for ln in lines if "equal-tailed 95% coverage, untrimmed" in ln]
    assert "= 0.820/0.820/0.820/0.820 (s.e. across runs 0.130/0.130/0.130/0.130)" in verdict
    assert verdict.endswith("**missed**")  # the run the fences leave out counts
    (paper,) = [ln for ln in lines if "paper's trimmed mean" in ln]
    assert "= 0.950/0.950/0.950/0.950; 5 of 25 windows fall outside" in paper


def test_bootstrap_meets_the_gap_as_often_as_the_binomial_says():
    """Nine calibrated runs and one whose 50% level reads 0.8: the row's gap is 0.03 (met); a
    draw of 10 runs misses it when that run comes twice or more (gap >= 0.06), which happens
    with probability 1 - P(Binomial(10, 0.1) <= 1) = 0.264; the band and the MSE always hold."""
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    data = synthetic([1e-4] * 10)
    data["w_coverage_equal_tailed"][:] = 0.95
    data["w_calibration"] = np.broadcast_to(levels[:, None], (10, 8, 4, 4)).copy()
    data["w_calibration"][7, :, 0] = 0.8
    assert agg.calibrated_verdict(agg.aggregate(data)) == dict(
        equal_tailed=True, gap=True, mse=True, all=True
    )
    b = agg.bootstrap_calibrated(data, 10, draws=400)
    p_met = 0.9**10 + 10 * 0.1 * 0.9**9
    assert b["gap"] == pytest.approx(p_met, abs=0.07)  # 3 s.e. of 400 draws
    assert b["all"] == b["gap"]
    assert b["equal_tailed"] == b["mse"] == 1.0


def test_bootstrap_interval_is_the_mean_plus_minus_1_96_standard_errors():
    """Forty runs whose 95% coverage follows a normal law (mean 0.95, sd 0.02; few windows
    outside the fences): a resample of forty averages 0.95 with sd 0.02 / sqrt(40), so the 95%
    interval is about 0.95 +- 0.0062; the MSE, constant, has a point interval.  The ends' error
    is not the resampling's: 0.0007 with 500 draws as with 2000 (seed 0; at most 0.0011 over
    seeds 0-5)."""
    from statistics import NormalDist

    data = synthetic([1e-4] * 40)
    law = NormalDist(0.95, 0.02)
    values = [law.inv_cdf((i + 0.5) / 40) for i in range(40)]
    data["w_coverage_equal_tailed"][:] = np.array(values)[:, None, None]
    ci = agg.bootstrap_interval(data, draws=500)
    half = 1.96 * np.std(values) / np.sqrt(40)
    assert ci["equal_tailed"][:, 0] == pytest.approx([0.95 - half, 0.95 + half], abs=0.0015)
    assert ci["mse_avg"] == pytest.approx([1e-4, 1e-4])
    lines = calibrated_lines("row", {**agg.aggregate(data), "interval": ci})
    assert any("95% bootstrap interval over these runs" in line for line in lines)


def test_standard_errors_count_each_run_once_not_each_window():
    """Two runs whose five windows read 0.9 and 1.0 (within a run the windows vary too): the
    untrimmed mean is 0.95 and its s.e. is that of the two run means, sd 0.0707 / sqrt(2) = 0.05,
    not the windows' sd / sqrt(10)."""
    data = synthetic([1e-4, 1e-4])
    wiggle = np.array([-0.02, 0.02, -0.01, 0.01, 0.0])[:, None]
    data["w_coverage_equal_tailed"][0, -agg.LAST_WINDOWS :] = 0.9 + wiggle
    data["w_coverage_equal_tailed"][1, -agg.LAST_WINDOWS :] = 1.0 + wiggle
    et = agg.aggregate(data)["coverage_equal_tailed"]
    assert et["plain"] == pytest.approx([0.95] * 4)
    assert et["se"] == pytest.approx([0.05] * 4)
    assert et["avg_se"] == pytest.approx(0.05)
    assert np.isnan(agg.aggregate(synthetic([1e-4]))["mse"]["se"]).all()


def test_fresh_seeds_leave_out_those_a_row_or_its_parents_chose_on():
    """Row b's step was chosen on seeds 0-2 and b derives from a (chosen on 0-1): of b's seeds 0-5
    only 3-5 are fresh; their summary is that of those runs alone. A row nobody chose on is all
    fresh, and one whose every seed chose has no fresh summary."""
    choices = {"a": (range(0, 2), ()), "b": (range(0, 3), ("a",)), "c": ({0, 4}, ("b",))}
    assert agg.chosen_seeds("c", choices) == {0, 1, 2, 4}
    assert agg.chosen_seeds("dqn", choices) == set()
    np.testing.assert_array_equal(agg.fresh_mask(np.arange(6), {0, 1, 2, 4}), [0, 0, 0, 1, 0, 1])
    data = synthetic([1e-4] * 6)
    data["w_coverage_equal_tailed"][:] = np.array([0.5, 0.5, 0.5, 0.9, 0.9, 0.8])[:, None, None]
    all_data = {"b": data, "dqn": synthetic([1e-4] * 2), "a": synthetic([1e-4] * 2)}
    summaries, _ = agg.summarise(all_data, bootstrap=False, choices=choices)
    b = summaries["b"]
    assert (b["runs"], b["fresh_runs"]) == (6, 3)
    assert b["coverage_equal_tailed"]["plain"] == pytest.approx([4.1 / 6] * 4)
    assert b["fresh"]["coverage_equal_tailed"]["plain"] == pytest.approx([2.6 / 3] * 4)
    assert summaries["dqn"]["fresh_runs"] == 2 and "fresh" not in summaries["dqn"]
    assert summaries["a"]["fresh_runs"] == 0 and summaries["a"]["fresh"] is None
    lines = calibrated_lines("b", b)
    assert "on its 3 fresh seeds alone: equal-tailed 95% coverage 0.867/0.867/0.867/0.867" in (
        " ".join(lines)
    )


def test_tables_show_untrimmed_calibration_its_standard_error_and_the_fresh_seeds(tmp_path):
    """table.md: the equal-tailed column is untrimmed with the s.e. across runs, the fresh runs'
    column beside it; table.csv: the untrimmed mean and s.e. per metric, and the fresh runs'
    rows."""
    from lktd_ppl.study.tables import write_tables

    data = synthetic([1e-4] * 4)
    data["w_coverage_equal_tailed"][:] = np.array([0.9, 1.0, 0.9, 1.0])[:, None, None]
    all_data = {"b": data, "dqn": synthetic([1e-3] * 2)}
    summaries, _ = agg.summarise(all_data, bootstrap=False, choices={"b": ({0}, ())})
    write_tables(summaries, tmp_path)
    md = (tmp_path / "table.md").read_text()
    row = "| b | 4 | 0 | 3 | 0.900/0.900/0.900/0.900 (0.900) | 1.0e-04/1.0e-04/1.0e-04/1.0e-04 (1.0e-04) "
    row += "| 0.950/0.950/0.950/0.950 (0.950) | 0.029 | 0.967/0.967/0.967/0.967 (0.967) |"
    assert row in md
    assert "| dqn | 2 | 0 | 2 | 0.900/0.900/0.900/0.900 (0.900) |" in md and "| = all |" in md
    assert "| paper: dqn | 100 | - | - | 0.411/0.411/0.550/0.549 (0.480) |" in md  # E/N/W/S
    csv_text = (tmp_path / "table.csv").read_text()
    assert "b,4,coverage_equal_tailed,se,0.0288675,0.0288675,0.0288675,0.0288675,0.0288675" in (
        csv_text
    )
    assert "b [fresh seeds],3,coverage_equal_tailed,plain,0.966667," in csv_text
