"""Presets and defaults: the recommended configuration is the study row that backs it, an escape
run without --preset starts from it, and the demo's verdict names each goal met or missed."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lktd_ppl import demo
from lktd_ppl.config import build_spec
from lktd_ppl.names import ACTION_NAMES
from lktd_ppl.presets import DEFAULT_PRESETS, PRESETS, preset
from lktd_ppl.study.runner import row_settings

ROOT = Path(__file__).resolve().parents[1]
RECOMMENDED_ROW = "explore_N50000_buffer50000_m10_drop150_after"


def _study_rows() -> dict:
    spec = importlib.util.spec_from_file_location(
        "escape_study", ROOT / "experiments" / "escape_study.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rows()


def _plain(x):
    """JSON round trip: tuples and lists compare equal."""
    return json.loads(json.dumps(x))


def test_recommended_preset_is_the_study_row_that_backs_it():
    row = _study_rows()[RECOMMENDED_ROW]
    from_row = row_settings(row.algo, row.preset, row.overrides)
    assert _plain(from_row) == _plain(preset("recommended", "lktd"))
    # and the row's committed runs were made with these settings
    saved = json.loads(
        (ROOT / "experiments/results/escape/runs" / RECOMMENDED_ROW / "config.json").read_text()
    )
    assert saved["num_chains"] == 10 and saved["pseudo_population"] == 50_000
    assert saved["model"].endswith("mlp_q.py:sarsa_afterstate_spike_slab")
    assert np.allclose(
        saved["step_size_drops"], [[70_000, 0.1], [80_000, 1 / 30], [88_000, 1 / 150]]
    )


def test_recommended_row_is_the_one_the_committed_runs_choose():
    """Of the rows with 20+ fresh runs inside 0.90-0.99 on every action, the lowest MSE."""
    import sys

    sys.path.insert(0, str(ROOT / "experiments"))
    import published_numbers as script

    from lktd_ppl.study import published

    source = published.Source(script.RESULTS, script.study_choices())
    assert source.recommended() == RECOMMENDED_ROW
    et95 = source.value(RECOMMENDED_ROW, "et95", "fresh")
    assert np.all((et95 >= 0.90) & (et95 <= 0.99))
    assert source.value(RECOMMENDED_ROW, "runs", "fresh") >= published.DEFAULTS_MIN_RUNS


def test_escape_lktd_without_preset_starts_from_recommended():
    assert DEFAULT_PRESETS == {"lktd": "recommended"}
    plain = build_spec(algo="lktd", check_memory=False)
    rec = build_spec(algo="lktd", preset="recommended", check_memory=False)
    assert plain.agent == rec.agent and plain.escape == rec.escape
    assert plain.agent.num_chains == 10
    assert plain.agent.sampler.pseudo_population == 50_000.0
    assert plain.agent.model.endswith("sarsa_afterstate_spike_slab")
    assert plain.escape.buffer_size == 50_000
    # --set and the paper preset still win over it
    paper = build_spec(algo="lktd", preset="paper", check_memory=False)
    assert paper.agent.num_chains == 1 and paper.agent.sampler.compat
    assert paper.agent.model.split(":")[-1] == "sarsa_spike_slab"
    two = build_spec(algo="lktd", sets=["num_chains=2"], check_memory=False)
    assert two.agent.num_chains == 2 and two.escape.buffer_size == 50_000
    # algorithms without a recommended configuration keep their classes' defaults
    assert build_spec(algo="sgld", check_memory=False).agent.num_chains == 1


def test_demo_preset_is_the_recommended_one_shortened():
    d, r = preset("demo", "lktd"), preset("recommended", "lktd")
    assert d["model"] == r["model"] and d["compat"] is False and d["step_size"] == r["step_size"]
    stages = d["escape"]["total_steps"] // d["escape"]["train_every"]
    # the drops at 70%, 80% and 88% of the run's stages, as the recommended ones are of 100 000
    assert [s / stages for s, _ in d["step_size_drops"]] == pytest.approx([0.7, 0.8, 0.88])
    assert sorted(PRESETS) == ["demo", "paper", "recommended"]


def _means(et95, level50, mse):
    out = {}
    for i, a in enumerate(ACTION_NAMES):
        out[f"coverage_equal_tailed_{a}"] = et95[i]
        out[f"calibration50_{a}"] = level50[i]
        out[f"mse_{a}"] = mse[i]
        out[f"coverage_{a}"] = 0.8
        out[f"width_{a}"] = 0.05
    return out


def test_demo_goals_name_what_is_missed_with_its_value():
    good = _means([0.93, 0.95, 0.91, 0.99], [0.5, 0.35, 0.65, 0.4], [1e-4, 1e-4, 3e-3, 4e-3])
    assert [ok for _, _, ok in demo.goals(good)] == [True, True, True]  # MSE avg 1.8e-3
    assert demo.verdict(good).rstrip().endswith("Every goal met.")
    bad = _means([0.93, 0.95, 0.89, 0.995], [0.5, 0.34, 0.5, 0.5], [1e-4, 1e-4, 4e-3, 4.3e-3])
    checks = demo.goals(bad)
    assert [ok for _, _, ok in checks] == [False, False, False]
    assert checks[0][1] == "0.930/0.950/0.890/0.995" and checks[2][1] == "2.1e-03"
    text = demo.verdict(bad)
    assert "0.930/0.950/0.890/0.995 (MISSED)" in text and "Missed: equal-tailed" in text
    nan = _means([np.nan] * 4, [0.5] * 4, [1e-4] * 4)
    assert demo.goals(nan)[0][2] is False


def test_demo_results_file_is_what_its_rows_give():
    """experiments/results/demo/demo.md is demo_seeds.py's report of the committed seeds.csv."""
    import sys

    sys.path.insert(0, str(ROOT / "experiments"))
    import demo_seeds

    folder = ROOT / "experiments" / "results" / "demo"
    rows = demo_seeds.read_rows(folder / "seeds.csv")
    assert sorted(int(r["seed"]) for r in rows) == list(range(10))
    written = (folder / "demo.md").read_text().splitlines()
    again = demo_seeds.report(rows, "x").splitlines()
    # every line but the one that names the command and the date
    assert [w for w in written if not w.startswith("Made by")] == [
        a for a in again if not a.startswith("Made by")
    ]
