"""The kernel's N/n factors, checked where they matter: at N/n = 100 and N/n = 10, against numbers
computed by hand.

At N/n = 1 (full batch) the factor n/N of the Gibbs draw of xi and the factor N/n of the drift are
both 1, so the static tests there cannot see them; these tests can.  Each measured statistic is a
module-level function, which ``experiments/mutants.py`` reuses to show that the tests fail when a
factor is dropped (its table: ``experiments/results/mutants.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import distributions as dist

import lktd_ppl
from lktd_ppl import filter as lktd_filter
from lktd_ppl.exact import linear_gaussian_posterior
from lktd_ppl.ssm import Measurement

# -- the Gibbs draw of xi ----------------------------------------------------------------------------
#
# Two measurements (n = 2) standing in for N = 200 (N/n = 100), alpha = 0.8:
#   r = (2, 0.5), h = (-1, 3), sigma = (5, 2.5)
#   mean = 0.8 r + 0.2 h               = (1.6 - 0.2, 0.4 + 0.6)             = (1.4, 1.0)
#   var  = 0.8 * 0.2 * sigma^2 * n/N   = (0.16 * 25 / 100, 0.16 * 6.25 / 100) = (0.04, 0.01)
#   sd   = (0.2, 0.1); at temperature 0.25 the variance is a quarter: sd = (0.1, 0.05)
GIBBS_MEAS = Measurement(
    loc=jnp.array([-1.0, 3.0]),
    scale=jnp.array([5.0, 2.5]),
    weight=jnp.ones(2),
    value=jnp.array([2.0, 0.5]),
)
GIBBS_CASES = {  # temperature: (mean, sd), by hand
    1.0: (np.array([1.4, 1.0]), np.array([0.2, 0.1])),
    0.25: (np.array([1.4, 1.0]), np.array([0.1, 0.05])),
}
GIBBS_EXACT_TOL = 1e-5  # float32 round-off on numbers of order 1
GIBBS_DRAWS = 20_000
GIBBS_DRAWS_TOL = 0.03  # sd of the relative error of a sd from 20000 draws: 0.5%; of a mean: 0.7%


def _gibbs_config(temperature: float) -> lktd_filter.SamplerConfig:
    return lktd_filter.SamplerConfig(pseudo_population=200.0, alpha=0.8, temperature=temperature)


def gibbs_moments() -> dict[str, float]:
    """Largest relative errors of the Gibbs draw of xi against the hand-computed mean and sd.

    ``exact_mean``, ``exact_sd``: from the draw at z = 0 and z = 1 (the deterministic parts);
    ``draws_mean``, ``draws_sd``: from ``GIBBS_DRAWS`` draws with keys (the kernel's own noise),
    the mean's error in units of the hand sd.
    """
    out = {"exact_mean": 0.0, "exact_sd": 0.0, "draws_mean": 0.0, "draws_sd": 0.0}
    draws = jax.jit(jax.vmap(lktd_filter.gibbs_xi, in_axes=(None, None, 0)))
    for temperature, (mean, sd) in GIBBS_CASES.items():
        config = _gibbs_config(temperature)
        zero = jnp.zeros(2)
        at0 = np.asarray(lktd_filter.gibbs_xi(config, GIBBS_MEAS, None, z=zero))
        at1 = np.asarray(lktd_filter.gibbs_xi(config, GIBBS_MEAS, None, z=zero + 1.0))
        out["exact_mean"] = max(out["exact_mean"], float(np.max(np.abs(at0 / mean - 1))))
        out["exact_sd"] = max(out["exact_sd"], float(np.max(np.abs((at1 - at0) / sd - 1))))
        keys = jax.random.split(jax.random.key(0), GIBBS_DRAWS)
        xs = np.asarray(draws(config, GIBBS_MEAS, keys))
        out["draws_mean"] = max(out["draws_mean"], float(np.max(np.abs(xs.mean(0) - mean) / sd)))
        out["draws_sd"] = max(out["draws_sd"], float(np.max(np.abs(xs.std(0) / sd - 1))))
    return out


def test_gibbs_draw_of_xi_at_n_over_N_one_hundredth():
    m = gibbs_moments()
    assert m["exact_mean"] < GIBBS_EXACT_TOL, m
    assert m["exact_sd"] < GIBBS_EXACT_TOL, m
    assert m["draws_mean"] < GIBBS_DRAWS_TOL, m
    assert m["draws_sd"] < GIBBS_DRAWS_TOL, m


# -- the augmented drift ------------------------------------------------------------------------------
#
# h(theta) = X theta, n = 4 rows standing in for N = 400 (c = N/n = 100), alpha = 0.5, sigma = 2
# (alpha sigma^2 = 2), prior theta ~ N(0, 2^2) (grad log pi = -theta / 4):
#   X = [[1, 0], [0, 1], [1, 1], [2, -1]],  theta = (1, 2)  ->  h = (1, 2, 3, 0)
#   xi = (2, 2, 1, 1)  ->  xi - h = (1, 0, -2, 1),  X^T (xi - h) = (1 - 2 + 2, -2 - 1) = (1, -3)
# default: theta-block = c/(alpha sigma^2) X^T (xi - h) - theta/4 = 50 (1, -3) - (0.25, 0.5)
#                      = (49.75, -150.5)
#          xi-block    = -c (xi - h)/(alpha sigma^2) = -50 (1, 0, -2, 1) = (-50, 0, 100, -50)
# compat (likelihood drifts doubled, no c on the xi-block):
#          theta-block = 100 (1, -3) - (0.25, 0.5) = (99.75, -300.5)
#          xi-block    = -2 (xi - h)/(alpha sigma^2) = (-1, 0, 2, -1)
DRIFT_X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], np.float32)
DRIFT_THETA = jnp.array([1.0, 2.0])
DRIFT_XI = jnp.array([2.0, 2.0, 1.0, 1.0])
DRIFT_EXPECTED = {  # compat: (theta-block, xi-block), by hand
    False: (np.array([49.75, -150.5]), np.array([-50.0, 0.0, 100.0, -50.0])),
    True: (np.array([99.75, -300.5]), np.array([-1.0, 0.0, 2.0, -1.0])),
}
DRIFT_TOL = 1e-5


def _drift_model(batch):
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    numpyro.sample("y", dist.Normal(batch["x"] @ theta, 2.0), obs=batch["y"])


def drift_values() -> dict[str, float]:
    """Largest relative errors of ``augmented_drift``'s blocks against the hand-computed ones
    (relative to the largest hand value of the block), for the default and the compat mode."""
    batch = {"x": jnp.asarray(DRIFT_X), "y": jnp.zeros(4)}
    ssm = lktd_ppl.from_numpyro(_drift_model, batch)
    state = lktd_filter.LKTDState(DRIFT_THETA, DRIFT_XI)
    out = {}
    for compat, expected in DRIFT_EXPECTED.items():
        config = lktd_filter.SamplerConfig(pseudo_population=400.0, alpha=0.5, compat=compat)
        blocks, _ = lktd_filter.augmented_drift(ssm, config, state, batch)
        mode = "compat" if compat else "default"
        for name, got, want in zip(("theta", "xi"), blocks, expected, strict=True):
            err = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
            out[f"{mode}_{name}"] = float(err)
    return out


def test_augmented_drift_at_n_over_N_one_hundredth():
    errors = drift_values()
    assert set(errors) == {"default_theta", "default_xi", "compat_theta", "compat_xi"}
    assert max(errors.values()) < DRIFT_TOL, errors


# -- a static regression at N/n = 10 and alpha = 0.5 --------------------------------------------------
#
# 200 rows, minibatches of 20 (N/n = 10 with pseudo_population = 200, the number of rows).  The
# responses lie exactly on the line (no noise in the data; the model's sigma is 1), so the
# minibatch gradient noise nearly vanishes at the posterior and what is left of the sampler's
# error is its own: with the n/N of the Gibbs draw dropped the xi-noise alone widens the posterior
# by about 35% at this step size (measured: relative Frobenius error 0.32-0.38 against 0.03-0.08).
# With xi <- r at alpha = 0.5 the posterior variance is about half the exact one; without N/n on
# the theta-drift ten times the exact one.
REG_ROWS, REG_BATCH, REG_PRIOR_SD = 200, 20, 10.0
REG_SETTINGS = dict(
    num_chains=16, num_samples=2000, num_warmup=300, step_size=3e-3, alpha=0.5, kappa=5
)
REG_COV_TOL = 0.15
REG_MEAN_TOL = 0.25  # in posterior sds


def _regression_model(batch):
    x = batch["x"]
    theta = numpyro.sample("theta", dist.Normal(0.0, REG_PRIOR_SD).expand([3]).to_event(1))
    numpyro.sample("y", dist.Normal(x @ theta, 1.0), obs=batch["y"])


def regression_data() -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(REG_ROWS, 3)).astype(np.float32)
    return {"x": x, "y": x @ np.array([1.0, -2.0, 0.5], np.float32)}


def regression_errors(seed: int = 0) -> tuple[float, float]:
    """(relative Frobenius error of the sampled covariance, largest error of the sampled mean in
    posterior sds) of LKTD at N/n = 10, alpha = 0.5, against the closed-form posterior."""
    data = regression_data()
    exact = linear_gaussian_posterior(
        jnp.asarray(data["x"]),
        jnp.asarray(data["y"]),
        1.0,
        jnp.zeros(3),
        REG_PRIOR_SD**2 * jnp.eye(3),
    )
    tree = lktd_ppl.sample(
        _regression_model,
        data,
        key=jax.random.key(seed),
        batch_size=REG_BATCH,
        pseudo_population=float(REG_ROWS),
        **REG_SETTINGS,
    )
    samples = tree.posterior["theta"].values.reshape(-1, 3)
    cov, want = np.cov(samples.T), np.asarray(exact.cov)
    cov_err = float(np.linalg.norm(cov - want) / np.linalg.norm(want))
    mean_err = np.abs(samples.mean(0) - np.asarray(exact.mean)) / np.sqrt(np.diag(want))
    return cov_err, float(np.max(mean_err))


def regression_cov_error(seed: int = 0) -> float:
    return regression_errors(seed)[0]


def test_minibatch_regression_at_n_over_N_one_tenth():
    cov_err, mean_err = regression_errors(0)
    assert cov_err < REG_COV_TOL, cov_err
    assert mean_err < REG_MEAN_TOL, mean_err
