"""Lemma 1 (spec section 3): the scalar-gain LKTD step, the dense exact-gain LEnKF step and the
preconditioned SGLD step have the same one-step mean and covariance (float64, noise as inputs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import MODELS

import lktd_ppl
from lktd_ppl.exact import preconditioned_sgld_step
from lktd_ppl.filter import InnerNoise, LKTDState, SamplerConfig, exact_gain_step, inner_step

P, N = 3, 4


def _moments(step, noise_size):
    """Mean and covariance of an affine-in-noise step: mean at zero noise, cov = L L^T."""
    flat = lambda z: jnp.concatenate([a.ravel() for a in step(z)])  # noqa: E731
    z0 = jnp.zeros(noise_size)
    L = jax.jacfwd(flat)(z0)
    return flat(z0), L @ L.T


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        batch = {"x": jnp.asarray(rng.normal(size=(N, P))), "y": jnp.asarray(rng.normal(size=N))}
        model = lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model")
        ssm = lktd_ppl.from_numpyro(model, batch)
        state = LKTDState(jnp.asarray(rng.normal(size=P)), jnp.asarray(rng.normal(size=N)))
        config = SamplerConfig(pseudo_population=40.0, alpha=0.7)
        yield ssm, batch, state, config


def _scalar(ssm, config, state, batch, eps, r_factor=2.0):
    def step(z):
        noise = InnerNoise(z[:P], z[P : P + N], z[P + N :])
        s = inner_step(ssm, config, state, batch, eps, noise=noise, analysis_r_factor=r_factor)
        return s.position, s.xi

    return _moments(step, P + 2 * N)


def _dense(ssm, config, state, batch, eps):
    def step(z):
        s = exact_gain_step(
            ssm, config, state, batch, eps, InnerNoise(z[:P], z[P : P + N], z[P + N :])
        )
        return s.position, s.xi

    return _moments(step, P + 2 * N)


def _precond(ssm, config, state, batch, eps):
    def step(z):
        return preconditioned_sgld_step(ssm, config, state.position, state.xi, batch, eps, z)

    return _moments(step, P + N)


@pytest.mark.parametrize("eps", [1e-3, 5e-2])
def test_three_forms_agree(setup, eps):
    with jax.enable_x64(True):
        ssm, batch, state, config = setup
        m1, c1 = _scalar(ssm, config, state, batch, eps)
        m2, c2 = _dense(ssm, config, state, batch, eps)
        m3, c3 = _precond(ssm, config, state, batch, eps)
        assert m1.dtype == jnp.float64
        for m, c in [(m2, c2), (m3, c3)]:
            np.testing.assert_allclose(m1, m, atol=1e-6, rtol=0)
            np.testing.assert_allclose(c1, c, atol=1e-6 * float(jnp.max(jnp.abs(c1))), rtol=0)
        # the step really moves: the comparison is not between zeros
        assert float(jnp.max(jnp.abs(m1 - jnp.concatenate([state.position, state.xi])))) > 1e-4


def test_negative_control_wrong_r_fails(setup):
    """R = (1 - alpha) sigma^2 instead of 2 (1 - alpha) sigma^2 breaks the equality."""
    with jax.enable_x64(True):
        ssm, batch, state, config = setup
        m1, c1 = _scalar(ssm, config, state, batch, 5e-2, r_factor=1.0)
        m3, c3 = _precond(ssm, config, state, batch, 5e-2)
        assert float(jnp.max(jnp.abs(m1 - m3))) > 1e-3
        assert float(jnp.max(jnp.abs(c1 - c3))) > 1e-4
