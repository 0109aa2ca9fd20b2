"""The config layer: presets, nested sampler settings, config files and --set agree."""

import json

import pytest

from lktd_ppl import cli
from lktd_ppl.config import RunError, build_spec, to_dict
from lktd_ppl.presets import PRESETS


def test_paper_preset_names_every_setting_of_every_algorithm():
    """A preset leaves no setting to the defaults: every settable key of the algorithm is there."""
    from lktd_ppl.agents.harness import EscapeConfig
    from lktd_ppl.config import agent_keys, field_types

    for algo, values in PRESETS["paper"].items():
        # where the chains run (one after another or side by side, on which devices) is the
        # machine's choice, not the configuration's
        bare = {k.rsplit(".", 1)[-1] for k in agent_keys(algo)} - {
            "chain_batching",
            "chain_devices",
        }
        assert bare <= set(values), (algo, bare - set(values))
        assert set(values["escape"]) == set(field_types(EscapeConfig)), algo


def test_paper_preset_is_the_official_configuration():
    spec = build_spec(algo="lktd", preset="paper")
    s = spec.agent.sampler
    assert (s.compat, s.pseudo_population, s.step_size, s.alpha, s.kappa) == (
        True,
        10_000.0,
        1e-5,
        0.9,
        5,
    )
    assert spec.members == 1 and spec.agent.model == "mlp_q:sarsa_spike_slab"
    # --set applies on top of the preset; a bare sampler field resolves to sampler.FIELD
    again = build_spec(algo="lktd", preset="paper", sets=["step_size=2e-5", "sampler.alpha=0.5"])
    assert (again.agent.sampler.step_size, again.agent.sampler.alpha) == (2e-5, 0.5)
    assert again.agent.sampler.compat is True


def test_a_spec_survives_its_config_file():
    spec = build_spec(algo="sghmc", sets=["friction=0.2", "num_chains=3"], steps=20_000)
    back = build_spec(config=json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    assert spec.to_dict()["agent"]["sampler"]["friction"] == 0.2
    assert "method" not in spec.to_dict()["agent"]  # the algorithm's, not a setting
    assert "schedule" not in to_dict(spec.agent.sampler)  # a callable is not a file setting


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(RunError, match="unknown preset 'nosuch'; choose one of paper"):
        build_spec(algo="lktd", preset="nosuch")


def test_experiments_outside_a_checkout_say_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "EXPERIMENTS_DIR", tmp_path / "experiments")
    assert cli.main(["experiment", "escape"]) == 2
    err = capsys.readouterr().err
    assert "script of a checkout of the project (experiments/escape_study.py)" in err
