"""The installed package holds every subpackage and the shipped models."""

import tomllib
from pathlib import Path

import pytest

from lktd_ppl.api import load_model, model_file, shipped_models
from lktd_ppl.ssm import ModelError

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_installation():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lktd_ppl").rglob("__init__.py")
    }
    assert found | {"lktd_ppl.models"} == listed


def test_shipped_models_load_by_name_and_name_their_choices():
    assert set(shipped_models()) == {p.stem for p in (ROOT / "models").glob("[!_]*.py")}
    assert model_file("mlp_q") == model_file("mlp_q.py")
    assert callable(load_model("mlp_q:sarsa_spike_slab"))
    with pytest.raises(ModelError, match="no shipped model 'nosuch'; shipped: linear_regression"):
        load_model("nosuch:fn")
    with pytest.raises(ModelError, match="has no function 'nosuch'"):
        load_model("mlp_q:nosuch")
