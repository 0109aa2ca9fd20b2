"""LKTD on a static linear-Gaussian regression against its closed-form posterior (spec section 5)."""

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODELS, draws, rel_frobenius

import lktd_ppl
from lktd_ppl.exact import kalman_filter_static, linear_gaussian_posterior

MODEL = lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model")
PRIOR_SD = 10.0


@pytest.fixture(scope="module")
def exact(regression_data):
    x, y = jnp.asarray(regression_data["x"]), jnp.asarray(regression_data["y"])
    return linear_gaussian_posterior(x, y, 1.0, jnp.zeros(3), PRIOR_SD**2 * jnp.eye(3))


def _check(samples, exact, mean_sd, cov_tol=None, var_tol=None):
    sd = np.sqrt(np.diag(exact.cov))
    err = np.abs(samples.mean(0) - np.asarray(exact.mean)) / sd
    assert np.all(err < mean_sd), f"mean error in posterior sds: {err}"
    cov = np.cov(samples.T)
    if cov_tol is not None:
        rel = rel_frobenius(cov, exact.cov)
        assert rel < cov_tol, f"relative Frobenius error of the covariance: {rel:.3f}"
    if var_tol is not None:
        ratio = np.diag(cov) / np.diag(exact.cov)
        assert np.all(np.abs(ratio - 1) < var_tol), f"variance ratios {ratio}"


def test_full_batch_matches_closed_form(regression_data, exact):
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(0),
        num_chains=4,
        num_samples=6000,
        num_warmup=1000,
        step_size=5e-4,
    )
    _check(draws(dt, "theta"), exact, mean_sd=0.1, cov_tol=0.10)
    rhat = azs.rhat(dt)["theta"].values
    assert np.all(rhat < 1.01), rhat
    assert dt.posterior["theta"].dims == ("chain", "draw", "theta_dim_0")
    assert set(dt.sample_stats.data_vars) == {"log_prior", "log_likelihood"}


def test_minibatch_matches_closed_form(regression_data, exact):
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(1),
        num_chains=4,
        num_samples=10000,
        num_warmup=1000,
        batch_size=50,
        step_size=5e-4,
    )
    _check(draws(dt, "theta"), exact, mean_sd=0.2, var_tol=0.25)


def test_compat_mode_is_narrower(regression_data, exact):
    """Official-code mode: xi <- r and the doubled drift give a posterior variance of about alpha/2
    of the exact one when the data dominate the prior; below 0.75 of it with minibatches."""
    alpha = 0.9
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(2),
        num_chains=4,
        num_samples=6000,
        num_warmup=1000,
        step_size=5e-4,
        compat=True,
        alpha=alpha,
    )
    ratio = np.diag(np.cov(draws(dt, "theta").T)) / np.diag(exact.cov)
    assert np.all(np.abs(ratio / (alpha / 2) - 1) < 0.15), ratio
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(3),
        num_chains=4,
        num_samples=4000,
        num_warmup=1000,
        batch_size=50,
        step_size=2e-4,
        compat=True,
        alpha=alpha,
    )
    ratio = np.diag(np.cov(draws(dt, "theta").T)) / np.diag(exact.cov)
    assert np.all(ratio < 0.75), ratio


@pytest.mark.parametrize("method", ["sgld", "sghmc"])
def test_ablation_samplers_match_closed_form(regression_data, exact, method):
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(4),
        num_chains=4,
        num_samples=6000,
        num_warmup=1000,
        step_size=5e-4 if method == "sgld" else 2e-5,
        method=method,
    )
    _check(draws(dt, "theta"), exact, mean_sd=0.1, var_tol=0.15)


def test_static_kalman_filter_equals_closed_form(regression_data, exact):
    x, y = jnp.asarray(regression_data["x"]), jnp.asarray(regression_data["y"])
    with jax.enable_x64(True):
        x64, y64 = x.astype(jnp.float64), y.astype(jnp.float64)
        prior = (jnp.zeros(3), PRIOR_SD**2 * jnp.eye(3))
        final, steps = kalman_filter_static(x64, y64, 1.0, *prior)
        closed = linear_gaussian_posterior(x64, y64, 1.0, *prior)
        np.testing.assert_allclose(final.mean, closed.mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(final.cov, closed.cov, rtol=1e-8, atol=1e-12)
        # after 50 observations the filter equals the closed form on those 50
        half = linear_gaussian_posterior(x64[:50], y64[:50], 1.0, *prior)
        np.testing.assert_allclose(steps.mean[49], half.mean, rtol=1e-9, atol=1e-9)


def test_static_kalman_filter_equals_dynamax(regression_data):
    pytest.importorskip("dynamax")
    from dynamax.linear_gaussian_ssm import lgssm_filter
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM,
        ParamsLGSSMDynamics,
        ParamsLGSSMEmissions,
        ParamsLGSSMInitial,
    )

    with jax.enable_x64(True):
        x = jnp.asarray(regression_data["x"], jnp.float64)
        y = jnp.asarray(regression_data["y"], jnp.float64)
        d = x.shape[1]
        params = ParamsLGSSM(
            initial=ParamsLGSSMInitial(mean=jnp.zeros(d), cov=PRIOR_SD**2 * jnp.eye(d)),
            dynamics=ParamsLGSSMDynamics(
                weights=jnp.eye(d),
                bias=jnp.zeros(d),
                input_weights=jnp.zeros((d, 0)),
                cov=jnp.zeros((d, d)),
            ),
            emissions=ParamsLGSSMEmissions(
                weights=x[:, None, :],
                bias=jnp.zeros(1),
                input_weights=jnp.zeros((1, 0)),
                cov=jnp.eye(1),
            ),
        )
        post = lgssm_filter(params, y[:, None])
        ours, _ = kalman_filter_static(x, y, 1.0, jnp.zeros(d), PRIOR_SD**2 * jnp.eye(d))
        np.testing.assert_allclose(post.filtered_means[-1], ours.mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(post.filtered_covariances[-1], ours.cov, rtol=1e-6, atol=1e-12)


def test_same_key_same_samples_different_key_different(regression_data):
    kw = dict(num_chains=2, num_samples=50, num_warmup=10, step_size=5e-4)
    a = draws(lktd_ppl.sample(MODEL, regression_data, key=jax.random.key(7), **kw), "theta")
    b = draws(lktd_ppl.sample(MODEL, regression_data, key=jax.random.key(7), **kw), "theta")
    c = draws(lktd_ppl.sample(MODEL, regression_data, key=jax.random.key(8), **kw), "theta")
    np.testing.assert_array_equal(a, b)
    assert np.min(np.abs(a - c)) > 0


def test_temperature_scales_the_posterior_variance(regression_data, exact):
    """temperature T (beyond the paper; every noise of a stage scaled by sqrt(T)): the theta-
    variance is T times the posterior's (0.25: measured 0.248/0.248/0.257), the mean unmoved;
    other methods refuse it."""
    dt = lktd_ppl.sample(
        MODEL,
        regression_data,
        key=jax.random.key(0),
        num_chains=4,
        num_samples=6000,
        num_warmup=1000,
        step_size=5e-4,
        temperature=0.25,
    )
    samples = draws(dt, "theta")
    ratio = np.var(samples, axis=0) / np.diag(exact.cov)
    assert np.all(np.abs(ratio / 0.25 - 1) < 0.15), ratio
    _check(samples, exact, mean_sd=0.1)
    with pytest.raises(lktd_ppl.ModelError, match="temperature"):
        lktd_ppl.sample(
            MODEL, regression_data, key=jax.random.key(0), method="sgld", temperature=0.5
        )


def test_preconditioner_mixes_a_flat_direction_the_plain_step_leaves_behind():
    """A feature scaled by 0.02 makes theta_3's posterior 50x wider than the others'.  In 1000 + 3000
    stages the plain step leaves it near the prior's spread (variance ratio 5.3, mean 1.8 sd off,
    key 0); the preconditioner (cap 100) moves it across the posterior (ratio 0.73, -0.29 sd) and
    keeps the others.  It samples that direction only roughly: over keys 0-3 with 16 chains the
    ratio was 1.10-1.76 (a drifting M, whose dM/dtheta term pSGLD drops, over-disperses it), so
    the test asks for a factor of 2, not the 15% of the well-determined directions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    x[:, 2] *= 0.02
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + rng.normal(size=200)).astype(np.float32)
    data = {"x": x, "y": y}
    post = linear_gaussian_posterior(
        jnp.asarray(x), jnp.asarray(y), 1.0, jnp.zeros(3), PRIOR_SD**2 * jnp.eye(3)
    )
    kw = dict(key=jax.random.key(0), num_chains=4, num_samples=3000, num_warmup=1000)
    plain = draws(lktd_ppl.sample(MODEL, data, step_size=5e-4, **kw), "theta")
    pre = draws(lktd_ppl.sample(MODEL, data, step_size=5e-4, precondition_max=100.0, **kw), "theta")
    exact_var = np.diag(np.asarray(post.cov))
    assert np.var(plain[:, 2]) / exact_var[2] > 2.5  # the negative control: not mixed
    ratio = np.var(pre, axis=0) / exact_var
    z = (pre.mean(axis=0) - np.asarray(post.mean)) / np.sqrt(exact_var)
    np.testing.assert_allclose(ratio[:2], 1.0, atol=0.15)
    assert 0.5 < ratio[2] < 2.0, ratio
    assert np.all(np.abs(z) < 0.4), z
    with pytest.raises(lktd_ppl.ModelError, match="precondition_max"):
        lktd_ppl.sample(MODEL, data, key=jax.random.key(0), method="sgld", precondition_max=10.0)
