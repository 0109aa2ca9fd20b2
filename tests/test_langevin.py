"""The Langevin moves are BlackJAX's (the explicit-noise forms agree with them given the same noise),
and the step-size convention is pinned."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.sgmcmc import diffusions
from conftest import MODELS

import lktd_ppl
from lktd_ppl.filter import InnerNoise, LKTDState, SamplerConfig, inner_step
from lktd_ppl.langevin import (
    blackjax_noise,
    langevin_step,
    sghmc_move,
    sghmc_step,
    sgld_move,
)
from lktd_ppl.rng import fast_key, standard_normal


def test_explicit_noise_equals_blackjax_sgld():
    key = jax.random.key(0)
    pos = (jnp.arange(3.0), jnp.ones((2, 2)))
    grad = (jnp.array([1.0, -2.0, 0.5]), -jnp.ones((2, 2)))
    sgld = blackjax.sgld(lambda p, batch: grad)
    expected = jax.jit(sgld.step)(key, pos, None, 0.01)
    ours = jax.jit(langevin_step)(pos, grad, 0.01, blackjax_noise(key, pos))
    for e, a in zip(jax.tree.leaves(expected), jax.tree.leaves(ours), strict=True):
        np.testing.assert_array_equal(e, a)


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_sgld_move_is_blackjax_sgld_on_the_fast_key(temperature):
    """The product path's move is blackjax.sgld's step with the key made fast; its noise is
    BlackJAX's draw from that key, scaled by sqrt(T) (T: noise variance factor)."""
    key = jax.random.key(3)
    pos = (jnp.arange(3.0), jnp.ones((2, 2)))
    grad = (jnp.array([1.0, -2.0, 0.5]), -jnp.ones((2, 2)))
    ours = jax.jit(sgld_move, static_argnums=2)(
        key, pos, lambda p, b: grad, None, 0.01, temperature
    )
    sgld = blackjax.sgld(lambda p, batch: grad)
    expected = jax.jit(sgld.step)(fast_key(key), pos, None, 0.01, temperature)
    noise = jax.tree.map(lambda z: np.sqrt(temperature) * z, blackjax_noise(fast_key(key), pos))
    by_hand = langevin_step(pos, grad, 0.01, noise)
    for e, a, h in zip(*map(jax.tree.leaves, (expected, ours, by_hand)), strict=True):
        np.testing.assert_array_equal(e, a)
        np.testing.assert_allclose(h, a, rtol=1e-6)


def test_sghmc_explicit_noise_equals_blackjax_and_official_form():
    key = jax.random.key(1)
    x, u, g = jnp.array([0.3, -0.2]), jnp.array([0.01, 0.02]), jnp.array([1.0, -1.0])
    eta, beta = 1e-3, 0.1
    z = blackjax_noise(fast_key(key), x)
    b = sghmc_step(x, u, g, eta, beta, z)
    # BlackJAX's own integrator, called directly, in its own variables (momentum u / h)
    h = np.sqrt(eta)
    xb, pb = diffusions.sghmc(alpha=beta / h)(fast_key(key), x, u / h, g, h)
    np.testing.assert_allclose(b[0], xb, rtol=1e-6)
    np.testing.assert_allclose(b[1], h * pb, rtol=1e-5, atol=1e-9)
    # the product path's move is that integrator
    moved = sghmc_move(key, x, u, g, eta, beta)
    np.testing.assert_allclose(moved[0], xb, rtol=1e-6)
    np.testing.assert_allclose(moved[1], h * pb, rtol=1e-6)
    # official form: u' = (1 - beta) u + eta g + sqrt(2 beta eta) z; the position uses the old u
    np.testing.assert_allclose(
        b[1], (1 - beta) * u + eta * g + np.sqrt(2 * beta * eta) * z, rtol=1e-5
    )
    np.testing.assert_allclose(b[0], x + u, rtol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_langevin_stationary_variance_pins_the_convention(temperature):
    """BlackJAX's x + h grad + sqrt(2 T h) z on N(0, 1), as the product path runs it: the variance
    is T / (1 - h/2) (a sqrt(h) noise would give T/2; a drift scaled by T too would give 1)."""
    h = 0.05

    def body(x, key):
        x = sgld_move(key, x, lambda p, _: -p, None, h, temperature)
        return x, x

    _, xs = jax.lax.scan(body, jnp.zeros(1000), jax.random.split(jax.random.key(2), 4000))
    var = float(jnp.var(xs[500:]))
    assert abs(var - temperature / (1 - h / 2)) < 0.02 * temperature, var


def test_standard_normal_moments_and_independence():
    z = jax.jit(lambda k: standard_normal(k, (400_000,)))(jax.random.key(0))
    z2 = standard_normal(jax.random.key(1), (400_000,))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float(jnp.mean(z**4)) - 3) < 0.05  # Gaussian kurtosis
    assert abs(float(jnp.mean(z < -1.959964)) - 0.025) < 0.002  # tail mass
    assert abs(float(jnp.corrcoef(z, z2)[0, 1])) < 0.01  # different keys, unrelated streams
    assert abs(float(jnp.corrcoef(z[:-1], z[1:])[0, 1])) < 0.01
    assert standard_normal(jax.random.key(0), (3, 2)).shape == (3, 2)


def test_lktd_forecast_uses_half_eps_times_n_over_N():
    """One inner step on the regression model, by hand: drift (eps/2)(n/N) grad, noise var eps n/N."""
    rng = np.random.default_rng(0)
    n, d, N, alpha, eps = 8, 2, 80.0, 0.9, 1e-2
    batch = {"x": jnp.asarray(rng.normal(size=(n, d)), jnp.float32), "y": jnp.zeros(n)}
    model = lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model")
    ssm = lktd_ppl.from_numpyro(model, batch)
    cfg = SamplerConfig(pseudo_population=N, alpha=alpha)
    theta, xi = jnp.array([0.5, -1.0]), jnp.asarray(rng.normal(size=n), jnp.float32)
    c = N / n
    x = np.asarray(batch["x"])
    g_theta = (
        -np.asarray(theta) / 100.0 + c * x.T @ (np.asarray(xi) - x @ np.asarray(theta)) / alpha
    )
    zero = InnerNoise(jnp.zeros(d), jnp.zeros(n), jnp.zeros(n))
    out = inner_step(ssm, cfg, LKTDState(theta, xi), batch, eps, noise=zero)
    np.testing.assert_allclose(out.position - theta, 0.5 * eps / c * g_theta, rtol=1e-4)
    unit = zero._replace(theta=jnp.array([1.0, 0.0]))
    moved = inner_step(ssm, cfg, LKTDState(theta, xi), batch, eps, noise=unit)
    np.testing.assert_allclose(moved.position[0] - out.position[0], np.sqrt(eps / c), rtol=1e-4)


def test_sghmc_compat_is_the_official_momentum_free_step():
    """The official optimiser never stores its momentum: theta += eta g + sqrt(2 beta eta) z."""
    from lktd_ppl.samplers import SGHMCState, sghmc_inner_step, tempered_grad

    rng = np.random.default_rng(1)
    batch = {"x": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32), "y": jnp.ones(8)}
    model = lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model")
    ssm = lktd_ppl.from_numpyro(model, batch)
    cfg = SamplerConfig(pseudo_population=80.0, step_size=1e-3, compat=True, friction=0.1)
    state = SGHMCState(jnp.array([0.3, -0.2]), jnp.array([5.0, 5.0]))  # stale momentum: ignored
    z = jnp.array([0.7, -1.1])
    out = sghmc_inner_step(ssm, cfg, state, batch, 1, noise=z)
    g, _ = tempered_grad(ssm, cfg, state.position, batch)
    eta = 1e-3 * 8 / 80.0
    expected = state.position + eta * g + np.sqrt(2 * 0.1 * eta) * z
    np.testing.assert_allclose(out.position, expected, rtol=1e-5)


def test_preconditioned_forecast_scales_drift_by_m_and_noise_by_sqrt_m():
    """precond M: theta moves by (eps/2)(n/N) M g + sqrt(eps n/N M) z; M from the drifts' RMS."""
    from lktd_ppl.filter import update_preconditioner

    rng = np.random.default_rng(2)
    n, d, N, eps = 8, 2, 80.0, 1e-2
    batch = {"x": jnp.asarray(rng.normal(size=(n, d)), jnp.float32), "y": jnp.zeros(n)}
    ssm = lktd_ppl.from_numpyro(lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model"), batch)
    cfg = SamplerConfig(pseudo_population=N)
    theta, xi = jnp.array([0.5, -1.0]), jnp.asarray(rng.normal(size=n), jnp.float32)
    m = jnp.array([1.0, 7.0])
    zero = InnerNoise(jnp.zeros(d), jnp.zeros(n), jnp.zeros(n))
    plain = inner_step(ssm, cfg, LKTDState(theta, xi), batch, eps, noise=zero)
    pre = inner_step(ssm, cfg, LKTDState(theta, xi), batch, eps, noise=zero, precond=m)
    np.testing.assert_allclose(pre.position - theta, m * (plain.position - theta), rtol=1e-4)
    unit = zero._replace(theta=jnp.array([0.0, 1.0]))
    kicked = inner_step(ssm, cfg, LKTDState(theta, xi), batch, eps, noise=unit, precond=m)
    np.testing.assert_allclose(
        kicked.position[1] - pre.position[1], np.sqrt(7 * eps * n / N), rtol=1e-5
    )
    # M = clip(median(sqrt v) / sqrt v, 1, cap); the running mean starts at the first g^2
    capped = SamplerConfig(precondition_max=10.0, precondition_decay=0.5)
    v, m = update_preconditioner(capped, jnp.zeros(3), jnp.array([4.0, 1.0, 0.01]))
    np.testing.assert_allclose(v, [16.0, 1.0, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(m, [1.0, 1.0, 10.0], rtol=1e-6)
    v, m = update_preconditioner(capped, v, jnp.array([0.0, 1.0, 0.3]))
    np.testing.assert_allclose(v, [8.0, 1.0, 0.04505], rtol=1e-4)
    np.testing.assert_allclose(m, [1.0, 1.0, 1.0 / np.sqrt(0.04505)], rtol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 7, 1284])
def test_partial_sort_median_equals_numpy_median(n):
    from lktd_ppl.filter import _median

    x = jax.random.exponential(jax.random.key(n), (n,))
    assert float(_median(x)) == float(np.median(np.asarray(x)))


def _regression(seed, n=8, d=2):
    rng = np.random.default_rng(seed)
    batch = {"x": jnp.asarray(rng.normal(size=(n, d)), jnp.float32), "y": jnp.ones(n)}
    ssm = lktd_ppl.from_numpyro(lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model"), batch)
    return ssm, batch, rng


@pytest.mark.parametrize(
    "options", [{}, {"temperature": 0.3}, {"compat": True}], ids=["default", "cold", "compat"]
)
@pytest.mark.parametrize("preconditioned", [False, True])
def test_lktd_key_path_is_the_explicit_step_with_blackjax_noise(options, preconditioned):
    """inner_step with a key (BlackJAX's SGLD, in theta / sqrt(M) coordinates when preconditioned)
    equals the explicit-noise step fed the noise BlackJAX draws from that key."""
    ssm, batch, rng = _regression(3)
    cfg = SamplerConfig(pseudo_population=80.0, alpha=0.8, **options)
    state = LKTDState(jnp.array([0.5, -1.0]), jnp.asarray(rng.normal(size=8), jnp.float32))
    precond = jnp.array([1.0, 9.0]) if preconditioned else None
    key, v = jax.random.key(4), jnp.asarray(rng.normal(size=8), jnp.float32)
    eps = 1e-2
    out = inner_step(ssm, cfg, state, batch, eps, key=key, v=v, precond=precond)
    z_theta, z_xi = blackjax_noise(fast_key(key), (state.position, state.xi))
    noise = InnerNoise(z_theta, z_xi, v)
    ref = inner_step(ssm, cfg, state, batch, eps, noise=noise, precond=precond)
    np.testing.assert_allclose(out.position, ref.position, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.xi, ref.xi, rtol=1e-5, atol=1e-7)
    assert float(jnp.max(jnp.abs(out.position - state.position))) > 1e-3  # the step moved


@pytest.mark.parametrize("method", ["sgld", "sghmc"])
@pytest.mark.parametrize("compat", [False, True])
def test_ablation_key_path_is_the_explicit_step_with_blackjax_noise(method, compat):
    from lktd_ppl import samplers

    ssm, batch, _ = _regression(4)
    cfg = SamplerConfig(pseudo_population=80.0, step_size=1e-3, compat=compat)
    pos = jnp.array([0.3, -0.2])
    if method == "sgld":
        state, inner = samplers.SGLDState(pos), samplers.sgld_inner_step
    else:
        state, inner = samplers.SGHMCState(pos, jnp.array([0.01, -0.02])), samplers.sghmc_inner_step
    key = jax.random.key(5)
    out = inner(ssm, cfg, state, batch, 2, key=key)
    ref = inner(ssm, cfg, state, batch, 2, noise=blackjax_noise(fast_key(key), pos))
    for a, b in zip(out, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
