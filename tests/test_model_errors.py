"""Every model LKTD cannot use is refused with a message that names the problem, before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import distributions as dist

import lktd_ppl
from lktd_ppl import ModelError

DATA = {"x": np.ones((10, 2), np.float32), "y": np.zeros(10, np.float32)}


def _sample(model, data=DATA, **kw):
    return lktd_ppl.sample(model, data, key=jax.random.key(0), num_samples=2, num_warmup=0, **kw)


def _theta(batch):
    return numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


def test_no_observed_site():
    def model(batch):
        _theta(batch)

    with pytest.raises(ModelError, match="no observed site"):
        _sample(model)


def test_two_observed_sites():
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])
        numpyro.sample("y2", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"2 observed sites \('y', 'y2'\)"):
        _sample(model)


def test_non_gaussian_measurement_refused_by_lktd_accepted_by_sgld():
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", dist.StudentT(3.0, batch["x"] @ t, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"site 'y' has a StudentT distribution.*'sgld'"):
        _sample(model)
    dt = _sample(model, method="sgld")
    assert dt.posterior["theta"].shape == (4, 2, 2)


def test_scale_depending_on_a_latent():
    def model(batch):
        t = _theta(batch)
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(batch["x"] @ t, s), obs=batch["y"])

    with pytest.raises(ModelError, match="scale of the measurement site 'y' depends on a latent"):
        _sample(model)


def test_subsampled_plate():
    def model(batch):
        t = _theta(batch)
        with numpyro.plate("data", 100, subsample_size=10):
            numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"site 'y' is scaled by 10.*plate 'data'.*temper twice"):
        _sample(model)


def test_loc_broadcasting_against_observation():
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", dist.Normal((batch["x"] @ t)[:, None], 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"site 'y' has distribution shape \(10, 1\).*\(10,\)"):
        _sample(model)


def test_data_without_common_leading_axis():
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    bad = {"x": np.ones((10, 2), np.float32), "y": np.zeros(9, np.float32)}
    with pytest.raises(ModelError, match=r"common leading axis \(x: 10, y: 9\)"):
        _sample(model, data=bad)


def test_not_a_numpyro_model():
    def model(batch):
        return batch["x"].sum()

    with pytest.raises(ModelError, match="no numpyro.sample sites"):
        _sample(model)


def test_discrete_latent():
    def model(batch):
        t = _theta(batch)
        k = numpyro.sample("k", dist.Bernoulli(0.5))
        numpyro.sample("y", dist.Normal(batch["x"] @ t + k, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match="latent site 'k' is discrete"):
        _sample(model)


def test_model_that_raises():
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", dist.Normal(batch["missing"] @ t, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"calling model model\(batch\) failed: KeyError"):
        _sample(model)


def test_missing_model_file_and_function(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        lktd_ppl.load_model(str(tmp_path / "nope.py") + ":model")
    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    with pytest.raises(ModelError, match="has no function 'model'"):
        lktd_ppl.load_model(f"{f}:model")
    with pytest.raises(ModelError, match="must look like"):
        lktd_ppl.load_model(str(f))


@pytest.mark.parametrize(
    "wrap, weight",
    [
        (lambda d: d, np.ones(10)),
        (lambda d: d.to_event(1), np.ones(10)),
        (lambda d: d.mask(jnp.arange(10) % 2 == 0), np.arange(10) % 2 == 0),
        (lambda d: d.to_event(1).mask(False), np.zeros(10)),
    ],
    ids=["plain", "independent", "masked", "independent-masked"],
)
def test_wrapped_gaussians_accepted(wrap, weight):
    def model(batch):
        t = _theta(batch)
        numpyro.sample("y", wrap(dist.Normal(batch["x"] @ t, 0.5)), obs=batch["y"])

    ssm = lktd_ppl.from_numpyro(model, DATA)
    ssm.require_gaussian()
    meas = ssm.measure(jnp.array([1.0, 2.0]), DATA)
    np.testing.assert_allclose(meas.loc, 3.0)
    np.testing.assert_allclose(meas.scale, 0.5)
    np.testing.assert_allclose(meas.weight, weight)


def test_expanded_gaussian_accepted_and_masked_weights():
    def model(batch):
        _theta(batch)
        loc = jnp.zeros(())
        numpyro.sample(
            "y", dist.Normal(loc, 2.0).expand([10]).mask(jnp.arange(10) < 3), obs=batch["y"]
        )

    ssm = lktd_ppl.from_numpyro(model, DATA)
    meas = ssm.measure(jnp.zeros(2), DATA)
    assert meas.loc.shape == (10,)
    np.testing.assert_allclose(meas.scale, 2.0)
    np.testing.assert_allclose(meas.weight, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
