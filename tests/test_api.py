"""lktd_ppl.sample takes the sampler's settings as one SamplerConfig (or its fields as keywords)."""

import jax
import numpy as np
import pytest

import lktd_ppl
from lktd_ppl import SamplerConfig


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=40)).astype(np.float32)}


def test_a_sampler_config_and_its_fields_as_keywords_give_the_same_draws():
    model = lktd_ppl.load_model("linear_regression:model")
    common = dict(key=jax.random.key(3), num_chains=2, num_samples=20)
    a = lktd_ppl.sample(
        model, _data(), sampler=SamplerConfig(pseudo_population=40.0, step_size=5e-4), **common
    )
    b = lktd_ppl.sample(model, _data(), step_size=5e-4, **common)  # N defaults to the rows: 40
    np.testing.assert_array_equal(a.posterior["theta"].values, b.posterior["theta"].values)
    c = lktd_ppl.sample(model, _data(), step_size=5e-4, alpha=0.5, **common)
    assert np.abs(c.posterior["theta"].values - a.posterior["theta"].values).max() > 1e-4
    assert (b.attrs["pseudo_population"], b.attrs["step_size"]) == (40.0, 5e-4)


def test_an_unknown_setting_names_the_sampler_fields():
    model = lktd_ppl.load_model("linear_regression:model")
    with pytest.raises(lktd_ppl.ModelError, match="unknown setting.*stepsize.*step_size"):
        lktd_ppl.sample(model, _data(), key=jax.random.key(0), stepsize=1e-4)
