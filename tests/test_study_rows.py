"""The escape study's rows (experiments/escape_study.py) resolve to the settings their committed
runs were made with, and the committed compact run data reproduce the committed table."""

import importlib.util
import json
from pathlib import Path

import pytest

from lktd_ppl.study.runner import make_train_for, row_settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "escape"


def _study():
    spec = importlib.util.spec_from_file_location(
        "escape_study", ROOT / "experiments/escape_study.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


study = _study()
ROWS = study.rows()
RECORDED = {n: RESULTS / "runs" / n / "config.json" for n in ROWS}
RECORDED = {n: p for n, p in RECORDED.items() if p.is_file()}
# settings a config.json may lack: it was written before the setting existed, and the setting's
# value then was the one behaviour the code had.  The baselines' init_sd came with the official
# initialisation; before it they had flax's (None), which their *_flax_init rows name.
BEFORE_THE_FIELD = {
    "dqn": {"init_sd": None},
    "qrdqn": {"init_sd": None},
    "bootdqn": {"init_sd": None},
}
# protocol fields added after the committed runs, at defaults that leave a healthy run unchanged
ESCAPE_SINCE = {"q_bound": True, "q_bound_reward": None}


def _as_recorded(escape: dict, recorded: dict) -> dict:
    """``escape`` without the fields added since ``recorded`` was written, where at their defaults."""
    return {
        k: v
        for k, v in escape.items()
        if k in recorded or k not in ESCAPE_SINCE or v != ESCAPE_SINCE[k]
    }


def _plain(value):
    """Tuples as lists, as JSON gives them back."""
    return json.loads(json.dumps(value))


def _model(name: str) -> str:
    """A recorded model in the rows' form: "" was the paper's, ``models/mlp_q.py:X`` is ``mlp_q:X``."""
    if name == "":
        return "mlp_q:sarsa_spike_slab"
    return name.replace("models/mlp_q.py:", "mlp_q:")


def _bare(agent: dict) -> dict:
    """A config's nested settings (``sampler``) by their bare names, as the rows write them."""
    out = {}
    for k, v in agent.items():
        out.update(_bare(v) if isinstance(v, dict) else {k: v})
    return out


def _defaults(cls) -> dict:
    """A config class's settable defaults by bare name (a nested config's fields included)."""
    from lktd_ppl.config import to_dict

    return _bare(to_dict(cls()))


# one row per algorithm, each with settings beyond its preset's (a model, drops, a mask rule...)
BUILT = (
    "explore_N50000_buffer50000_m10_drop225_after",
    "sgld_N10000_compat",
    "sghmc_N10000_compat",
    "dqn_flax_init",
    "bootdqn_official_masks",
    "qrdqn",
    "kova",
)


@pytest.fixture(scope="module")
def built() -> dict:
    """The run specs of the ``BUILT`` rows (make_train_for, 1M steps)."""
    out = {}
    for name in BUILT:
        row = ROWS[name]
        out[name] = make_train_for(row.algo, row.preset, row.overrides, 1_000_000)[1]
    return out


@pytest.fixture(scope="module")
def config_classes(built) -> dict:
    """The config class of every algorithm the rows use."""
    classes = {ROWS[n].algo: type(spec.agent) for n, spec in built.items()}
    assert set(classes) == {row.algo for row in ROWS.values()}
    return classes


def test_every_row_resolves_to_the_settings_its_runs_recorded(config_classes):
    """Every field of a row's committed config.json equals the row's resolved setting (the
    algorithm for ``method``); a setting the file lacks equals the config class's default of
    today (the default when the file was written), or the behaviour before the field existed."""
    from lktd_ppl.agents.harness import EscapeConfig

    assert len(RECORDED) >= 75, "the committed rows' config.json files"
    escape_defaults = _defaults(EscapeConfig)
    for name, path in RECORDED.items():
        row = ROWS[name]
        recorded = json.loads(path.read_text())
        settings = _plain(row_settings(row.algo, row.preset, row.overrides))
        defaults = {**_defaults(config_classes[row.algo]), **BEFORE_THE_FIELD.get(row.algo, {})}
        for key, value in recorded.items():
            if key in ("method", "algo"):
                assert value == row.algo, (name, key)
            elif key == "preset":
                assert value == row.preset, name
            elif key == "model":
                assert _model(value) == settings["model"], name
            elif key == "escape":
                assert value == _as_recorded(settings["escape"], value), name
            else:
                assert key in settings or value == defaults[key], (name, key)
                assert value == settings.get(key, value), (name, key, value, settings.get(key))
        for key in set(settings) - set(recorded) - {"escape"}:
            assert settings[key] == _plain(defaults[key]), (name, key)
        if "escape" not in recorded:  # the baselines' files hold their agent settings only
            expected = _as_recorded(escape_defaults, settings["escape"])
            assert settings["escape"] == expected | {"total_steps": 1_000_000}, name


def test_rows_build_the_recorded_configs(built):
    """One row per algorithm built with today's classes equals its config.json field by field
    (the model as the shipped file's path)."""
    for name, spec in built.items():
        fields = {**_bare(_plain(spec.to_dict()["agent"])), "method": spec.algo}
        for key, value in json.loads((RESULTS / "runs" / name / "config.json").read_text()).items():
            if key == "model":
                assert fields[key] == _model(value), name
            elif key == "escape":
                assert _as_recorded(_plain(spec.to_dict()["escape"]), value) == value, name
            else:
                assert fields[key] == value, (name, key)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="no setting.*pseudo_populaton.*escape.batch"):
        row_settings("lktd", "paper", {"pseudo_populaton": 1.0, "escape": {"batch": 5}})


def test_committed_runs_reproduce_the_committed_table_csv(tmp_path):
    """Aggregating the committed compact run data writes the committed table.csv byte for byte."""
    from lktd_ppl.study.aggregate import summarise
    from lktd_ppl.study.data import load_runs
    from lktd_ppl.study.tables import write_tables

    all_data = {n: d for n in ROWS if (d := load_runs(RESULTS, n)) is not None}
    q_star = {n for n, row in ROWS.items() if row.algo in study.Q_STAR_ALGOS}
    summaries, diverged = summarise(all_data, q_star, bootstrap=False, choices=study.CHOICES)
    write_tables(summaries, tmp_path, diverged)
    assert (tmp_path / "table.csv").read_text() == (RESULTS / "table.csv").read_text()
