"""The classic-control study's statistics and bookkeeping: the IQM and the stratified bootstrap on
cases with known answers, per-seed scores, resumable batch files, and the zoo rows' settings as the
config layer resolves them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lktd_ppl.study import control as cs
from lktd_ppl.study.data import write_npz
from lktd_ppl.study.iqm import iqm, stratified_bootstrap, stratified_resamples

ROOT = Path(__file__).resolve().parents[1]


def study_script():
    spec = importlib.util.spec_from_file_location(
        "control_study", ROOT / "experiments" / "control_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([[0.0, 100.0], [1.0, 2.0], [3.0, -50.0], [4.0, 5.0]])) == pytest.approx(
        (1 + 2 + 3 + 4) / 4
    )


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory():
    """400 standard-normal runs: the 95% percentile interval of the mean is +-1.96 s/sqrt(n)."""
    x = np.random.default_rng(0).normal(size=400)
    point, lo, hi = stratified_bootstrap(x, np.mean, reps=4000, seed=1)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.15 * half)


def test_bootstrap_resamples_within_each_task():
    """Task 0 is constant, task 1 varies: resampled values stay in their task's column, and the
    bootstrap sd of the pooled mean is the plug-in sd of task 1's mean, halved."""
    scores = np.stack([np.full(8, 7.0), np.arange(8.0)], axis=1)
    boot = stratified_resamples(scores, 4000, np.random.default_rng(2))
    assert (boot[..., 0] == 7.0).all() and set(np.unique(boot[..., 1])) <= set(range(8))
    sd = boot.mean(axis=(1, 2)).std()
    assert sd == pytest.approx(np.arange(8.0).std() / np.sqrt(8) / 2, rel=0.06)
    assert np.isnan(stratified_bootstrap(np.array([3.0]))[1])  # one run: no interval


def fake_batch(out: Path, row: cs.ControlRow, seeds: list[int], offset: float) -> None:
    evals = np.arange(1, 6, dtype=np.float32)
    path = cs.batch_path(out, row, seeds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(
        path,
        {
            "seeds": np.asarray(seeds),
            "eval_steps": np.arange(1, 6) * 100,
            "eval_return": np.stack([evals + offset + s for s in seeds]),
            "train_return": np.stack([np.r_[np.nan, evals[1:]] for _ in seeds]),
            "train_episodes": np.ones((len(seeds), 5), np.int32),
            "best_return": np.asarray([10.0 + s for s in seeds], np.float32),
            "wall_time": np.float64(8.0),
            "batch_size": np.int32(len(seeds)),
        },
    )


def test_batches_resume_load_and_score(tmp_path):
    row = cs.ControlRow("CartPole-v1", "dqn", {}, {})
    fake_batch(tmp_path, row, [2, 3], 0.0)
    fake_batch(tmp_path, row, [0, 1], 0.0)
    assert cs.pending(row, [0, 1, 2, 3, 4, 5], 2, tmp_path) == [[4, 5]]
    data = cs.load_row(tmp_path, row, [0, 1, 2, 3])
    np.testing.assert_array_equal(data["seeds"], [0, 1, 2, 3])
    np.testing.assert_allclose(data["wall_time"], 4.0)  # a batch's 8 s over its 2 seeds
    scores = cs.seed_scores(data)
    np.testing.assert_allclose(scores["final"], [4.0, 5.0, 6.0, 7.0])  # mean of evals 3-5 + seed
    np.testing.assert_allclose(scores["train"], 4.0)
    np.testing.assert_allclose(scores["best"], [10, 11, 12, 13])
    summaries = cs.write_tables(tmp_path, [row], [0, 1, 2, 3])
    assert summaries["CartPole-v1/dqn"]["final"][0] == pytest.approx(5.5)  # IQM of 4..7
    assert "| dqn | 4 (0-3) | 5.5 [" in (tmp_path / "table.md").read_text()


def test_zoo_rows_resolve_to_the_zoo_settings():
    study = study_script()
    rows = {r.name: r for r in study.study_rows(["CartPole-v1"], ["dqn", "qrdqn", "lktd", "kova"])}
    dqn = cs.row_spec(rows["dqn"], [0, 1])
    assert (dqn.agent.hidden, dqn.agent.loss, dqn.agent.double_q) == ((256, 256), "huber", False)
    assert (dqn.agent.learning_rate, dqn.agent.target_every, dqn.agent.init_sd) == (
        2.3e-3,
        125,
        "torch",
    )
    c = dqn.control
    assert (c.total_steps, c.buffer_size, c.train_every, c.gradient_steps) == (
        50_000,
        100_000,
        250,
        125,
    )
    assert (c.eps_fraction, c.eps_end, c.eval_every, dqn.seed_list) == (0.16, 0.04, 2500, [0, 1])
    qr = cs.row_spec(rows["qrdqn"], [0])
    assert (qr.agent.num_quantiles, qr.agent.max_grad_norm) == (10, None)
    lktd = cs.row_spec(rows["lktd"], [0])
    assert (lktd.control.buffer_size, lktd.control.train_every, lktd.agent.sampler.step_size) == (
        10_000,
        4,
        1e-4,
    )
    assert cs.row_spec(rows["kova_64x64"], [0]).agent.hidden == (64, 64)


RESULTS = ROOT / "experiments" / "results" / "control"
SCORE_COLUMNS = {"final": "final", "train": "train", "best-model": "best"}


def recomputed(folder: Path, seeds: list[int], sweep: bool, tmp: Path) -> tuple[str, dict]:
    """The study's table from the committed runs under ``folder``, written in ``tmp``."""
    study = study_script()
    tmp.mkdir()
    (tmp / "runs").symlink_to(folder / "runs")
    summaries = cs.write_tables(tmp, study.table_rows(folder, seeds, sweep), seeds)
    return (tmp / "table.md").read_text(), summaries


def readme_cells(text: str) -> list[tuple[str, str, str, str]]:
    """(environment, row, score, cell) of every score cell in the README's tables; a table's
    environment is the last environment id named in a heading or a line ending in ':' above it,
    its row the first word of the row's first cell."""
    envs = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3")
    out, env, header = [], None, None
    for line in text.splitlines():
        if line.startswith("#") or line.rstrip().endswith(":"):
            named = [e for e in envs if e in line]
            env, header = (named[-1] if named else env), None
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(cells[0]) <= set("-"):
            for col, score in SCORE_COLUMNS.items():
                if col in header:
                    out.append((env, cells[0].split()[0], score, cells[header.index(col)]))
    return out


def test_committed_control_tables_and_readme_recompute_from_the_runs(tmp_path):
    """table.md (the evaluation seeds 0-9) and sweeps/table.md (seeds 100-102) are what the
    aggregation writes from the committed batch files, and every score in the study's README
    tables is the recomputed IQM [interval] of its environment and row (a study row or a sweep's
    setting)."""
    table, summaries = recomputed(RESULTS, list(range(10)), False, tmp_path / "study")
    assert table == (RESULTS / "table.md").read_text()
    sweep_seeds = list(range(100, 103))
    sweep_table, swept = recomputed(RESULTS / "sweeps", sweep_seeds, True, tmp_path / "sweeps")
    assert sweep_table == (RESULTS / "sweeps" / "table.md").read_text()
    assert not set(summaries) & set(swept)  # sweep rows are labelled apart from the study's
    summaries.update(swept)
    cells = readme_cells((RESULTS / "README.md").read_text())
    assert len(cells) >= 3 * 20  # the four environments' tables
    for env, row, score, cell in cells:
        assert cell == cs.fmt_interval(summaries[f"{env}/{row}"][score]), (env, row, score)


def test_seeds_option_counts_or_ranges():
    """``--seeds N`` runs and tabulates the first N; ``A-B`` runs A..B and tabulates the row's
    first 10 as well (a process running part of a row writes the whole row's tables)."""
    parse = study_script().parse_seeds
    assert parse("3", sweep=False) == ([0, 1, 2], [0, 1, 2])
    assert parse("2", sweep=True) == ([100, 101], [100, 101])
    assert parse("6-9", sweep=False) == ([6, 7, 8, 9], list(range(10)))
    assert parse("11-12", sweep=False) == ([11, 12], [*range(10), 11, 12])
    assert parse("101-102", sweep=True) == ([101, 102], list(range(100, 110)))
    for bad, sweep, message in [
        ("0", False, "a count N >= 1"),
        ("9-6", False, "A <= B"),
        ("98-101", False, "seeds from 100 on are the sweeps'"),
        ("5-7", True, "sweep seeds start at 100"),
    ]:
        with pytest.raises(SystemExit, match=message):
            parse(bad, sweep=sweep)
