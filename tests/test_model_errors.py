"""Every model LKTD cannot use is refused with a message that names the problem, before compiling."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import distributions as dist

import lktd_ppl
from lktd_ppl import STAGE_KEY, ModelError
from lktd_ppl.exact import linear_gaussian_posterior

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


def _learned_scale_model(batch):
    t = numpyro.sample("theta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(batch["x"] @ t, s), obs=batch["y"])


def test_scale_depending_on_a_latent_refused_by_lktd_sampled_by_sgld():
    """LKTD needs a known sigma and says so, naming the site; SGLD and SGHMC, which the message
    points to, take the learned scale.  200 rows with noise sd 0.5: SGLD's posterior mean of the
    scale is the root mean square of the least-squares residuals (0.506 here; the posterior sd
    is about 0.025) and the coefficients are the least-squares ones."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0]) + 0.5 * rng.normal(size=200)).astype(np.float32)
    data = {"x": x, "y": y}
    with pytest.raises(
        ModelError, match=r"scale of the measurement site 'y' depends on a latent.*'sgld'"
    ):
        _sample(_learned_scale_model, data)
    ssm = lktd_ppl.from_numpyro(_learned_scale_model, data)
    with pytest.raises(ModelError, match="site 'y'.*LKTD needs a known noise scale"):
        ssm.require_gaussian("LKTD")
    dt = lktd_ppl.sample(
        _learned_scale_model,
        data,
        key=jax.random.key(0),
        method="sgld",
        num_chains=2,
        num_samples=1000,
        num_warmup=500,
        step_size=2e-4,
        init_positions=jnp.zeros((2, 3)),  # s = 1, theta = 0 (a prior draw of theta, about 10
        # from the truth, would have the chain fit the residuals with a large s first)
    )
    ls = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    rms = np.sqrt(np.mean((y - x @ ls) ** 2))
    s_mean = float(dt.posterior["s"].mean())
    assert abs(s_mean - rms) < 0.02, (s_mean, rms)
    assert abs(s_mean - 0.5) < 0.05, s_mean
    theta = dt.posterior["theta"].values.reshape(-1, 2).mean(0)
    np.testing.assert_allclose(theta, ls, atol=0.02)
    dt = _sample(_learned_scale_model, data, method="sghmc", step_size=1e-6, num_chains=2)
    assert np.all(np.isfinite(dt.posterior["s"].values))


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


def _posterior_check(samples, exact, mean_sd=0.15, var_tol=0.2):
    sd = np.sqrt(np.diag(exact.cov))
    err = np.abs(samples.mean(0) - np.asarray(exact.mean)) / sd
    assert np.all(err < mean_sd), f"mean error in posterior sds: {err}"
    ratio = np.var(samples, axis=0) / np.diag(exact.cov)
    assert np.all(np.abs(ratio - 1) < var_tol), f"variance ratios {ratio}"


def test_factor_is_part_of_the_log_prior():
    """A numpyro.factor adds to log pi(theta), untempered; one that follows the training stage
    (as an annealed prior does) is accepted."""

    def model(batch):
        t = _theta(batch)
        numpyro.factor("pull", -0.5 * jnp.sum((t - 3.0) ** 2) * (1.0 + batch[STAGE_KEY]))
        numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    batch = {**DATA, STAGE_KEY: jnp.int32(1)}
    ssm = lktd_ppl.from_numpyro(model, batch)
    assert ssm.factors == ("pull",) and ssm.obs_name == "y"
    # theta = (1, 2): N(0, 1) log-densities -0.5 - 2 - log(2 pi), factor -0.5 (4 + 1) * 2 = -5
    want = -2.5 - np.log(2 * np.pi) - 5.0
    np.testing.assert_allclose(ssm.log_prior(jnp.array([1.0, 2.0]), batch), want, rtol=1e-6)


def test_factor_shifts_the_posterior_as_a_gaussian_prior_term():
    """theta ~ N(0, 10^2) and a factor equal to log N(theta; 3, 0.5^2) make the prior
    N(m0, s0^2) with 1/s0^2 = 1/100 + 1/0.25 = 4.01 and m0 = (3 / 0.25) / 4.01 = 2.9925: with 10
    rows of noise-sd-1 data the factor moves the posterior mean by about 3 posterior sds, and LKTD
    (full batch) samples the closed form with that prior."""

    def model(batch):
        t = numpyro.sample("theta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        numpyro.factor("pull", dist.Normal(3.0, 0.5).log_prob(t).sum())
        numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) + rng.normal(size=10)).astype(np.float32)
    prec0 = 1 / 100 + 1 / 0.25
    exact = linear_gaussian_posterior(
        jnp.asarray(x), jnp.asarray(y), 1.0, jnp.full(2, 12.0 / prec0), jnp.eye(2) / prec0
    )
    without = linear_gaussian_posterior(
        jnp.asarray(x), jnp.asarray(y), 1.0, jnp.zeros(2), 100.0 * jnp.eye(2)
    )
    shift = np.abs(exact.mean - without.mean) / np.sqrt(np.diag(exact.cov))
    assert np.all(shift > 2.0), shift  # the check below can tell the factor from no factor
    dt = lktd_ppl.sample(
        model,
        {"x": x, "y": y},
        key=jax.random.key(0),
        num_chains=4,
        num_samples=6000,
        num_warmup=500,
        step_size=5e-3,
    )
    _posterior_check(dt.posterior["theta"].values.reshape(-1, 2), exact)


def test_factor_depending_on_the_data_refused():
    def model(batch):
        t = _theta(batch)
        numpyro.factor("extra", -0.5 * jnp.sum((batch["y"] - batch["x"] @ t) ** 2))
        numpyro.sample("y", dist.Normal(batch["x"] @ t, 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"numpyro.factor site 'extra' depends on the data"):
        _sample(model, method="sgld")


def test_masked_rows_count_in_n():
    """n of the tempering N/n counts masked rows: with N = the number of rows (the default), the
    full batch samples the ordinary posterior of the unmasked rows.  (Were n the unmasked rows
    only, N/n would be 2 here and the posterior variance half the exact one.)"""

    def model(batch):
        t = numpyro.sample("theta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        obs = dist.Normal(batch["x"] @ t, 1.0).mask(batch["keep"])
        numpyro.sample("y", obs, obs=batch["y"])

    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) + rng.normal(size=20)).astype(np.float32)
    keep = np.arange(20) % 2 == 0
    data = {"x": x, "y": y, "keep": keep}
    ssm = lktd_ppl.from_numpyro(model, data)
    assert ssm.obs_size == 20
    exact = linear_gaussian_posterior(
        jnp.asarray(x[keep]), jnp.asarray(y[keep]), 1.0, jnp.zeros(2), 100.0 * jnp.eye(2)
    )
    dt = lktd_ppl.sample(
        model,
        data,
        key=jax.random.key(0),
        num_chains=4,
        num_samples=6000,
        num_warmup=500,
        step_size=5e-3,
    )
    _posterior_check(dt.posterior["theta"].values.reshape(-1, 2), exact)


def test_support_depending_on_a_latent_refused():
    def model(batch):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        b = numpyro.sample("b", dist.Uniform(a, a + 1.0))
        numpyro.sample("y", dist.Normal(batch["x"] @ jnp.stack([a, b]), 1.0), obs=batch["y"])

    with pytest.raises(ModelError, match=r"support of latent site 'b'.*depends on other latent"):
        _sample(model, method="sgld")
