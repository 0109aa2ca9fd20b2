"""The product path goes through BlackJAX: LKTD's forecast and the SGLD / SGHMC moves call BlackJAX's
Langevin integrators, draw from per-chain fast keys, and sample the right posterior."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.sgmcmc import diffusions
from conftest import MODELS

import lktd_ppl
from lktd_ppl import filter as lktd_filter
from lktd_ppl import samplers
from lktd_ppl.exact import linear_gaussian_posterior
from lktd_ppl.filter import SamplerConfig

MODEL = lktd_ppl.load_model(f"{MODELS}/linear_regression.py:model")
KERNELS = {"lktd": lktd_filter.lktd, "sgld": samplers.sgld, "sghmc": samplers.sghmc}


@pytest.fixture
def integrator_calls(monkeypatch):
    """Counts calls of the one-step functions BlackJAX's kernels build: ``blackjax.sgld`` builds
    ``diffusions.overdamped_langevin()`` when it is constructed, and SGHMC calls
    ``diffusions.sghmc(alpha)``; both are looked up on the module at call time."""
    calls = Counter()

    def counting(name, factory):
        def make(*args, **kwargs):
            one_step = factory(*args, **kwargs)

            def counted(*a, **kw):
                calls[name] += 1
                return one_step(*a, **kw)

            return counted

        return make

    monkeypatch.setattr(
        diffusions,
        "overdamped_langevin",
        counting("overdamped_langevin", diffusions.overdamped_langevin),
    )
    monkeypatch.setattr(diffusions, "sghmc", counting("sghmc", diffusions.sghmc))
    return calls


def _setup(regression_data, n=50):
    batch = {k: jnp.asarray(v[:n]) for k, v in regression_data.items()}
    ssm = lktd_ppl.from_numpyro(MODEL, batch)
    return ssm, batch


@pytest.mark.parametrize(
    "method, options, expected",
    [
        ("lktd", {}, "overdamped_langevin"),
        ("lktd", {"precondition_max": 10.0, "temperature": 0.5}, "overdamped_langevin"),
        ("sgld", {}, "overdamped_langevin"),
        ("sghmc", {}, "sghmc"),
        ("sghmc", {"compat": True}, "overdamped_langevin"),
    ],
    ids=["lktd", "lktd_precond_cold", "sgld", "sghmc", "sghmc_compat"],
)
def test_stage_step_calls_blackjax_integrators(
    regression_data, integrator_calls, method, options, expected
):
    ssm, batch = _setup(regression_data)
    kernel = KERNELS[method](ssm, SamplerConfig(pseudo_population=200.0, **options))
    state = kernel.init(jnp.zeros(ssm.p))
    new, _ = jax.jit(kernel.step)(jax.random.key(0), state, batch)
    # traced once: the first inner step, and the scan's body (LKTD), or the scan's body
    assert integrator_calls[expected] >= 1, dict(integrator_calls)
    other = {"overdamped_langevin": "sghmc", "sghmc": "overdamped_langevin"}[expected]
    assert integrator_calls[other] == 0, dict(integrator_calls)
    assert float(jnp.max(jnp.abs(new.position - state.position))) > 0
    # the explicit-noise path (tests, pre-drawn noise) is the hand-written form: no BlackJAX call
    integrator_calls.clear()
    kernel.step(None, state, batch, jnp.zeros(kernel.noise_size))
    assert sum(integrator_calls.values()) == 0


def test_lktd_step_looks_up_gibbs_and_drift_at_trace_time(regression_data, monkeypatch):
    """Mutants replace ``lktd_ppl.filter.gibbs_xi`` / ``augmented_drift`` after the kernel is built."""
    ssm, batch = _setup(regression_data)
    kernel = lktd_filter.lktd(ssm, SamplerConfig(pseudo_population=200.0))
    state = kernel.init(jnp.zeros(ssm.p))
    key = jax.random.key(1)
    before, _ = kernel.step(key, state, batch)
    seen = Counter()
    gibbs, drift = lktd_filter.gibbs_xi, lktd_filter.augmented_drift

    def gibbs_spy(*a, **kw):
        seen["gibbs"] += 1
        return gibbs(*a, **kw) + 1.0

    def drift_spy(*a, **kw):
        seen["drift"] += 1
        return drift(*a, **kw)

    monkeypatch.setattr(lktd_filter, "gibbs_xi", gibbs_spy)
    monkeypatch.setattr(lktd_filter, "augmented_drift", drift_spy)
    after, _ = kernel.step(key, state, batch)
    assert seen["gibbs"] == 1 and seen["drift"] >= 1
    assert not np.allclose(before.xi, after.xi)


@pytest.mark.parametrize("method", ["lktd", "sgld", "sghmc"])
def test_vmapped_chains_equal_chains_one_by_one(regression_data, method):
    """Each chain's key draws its own noise under vmap (XLA's rbg would give every chain the first
    chain's noise)."""
    ssm, batch = _setup(regression_data)
    kernel = KERNELS[method](ssm, SamplerConfig(pseudo_population=200.0))
    keys = jax.random.split(jax.random.key(2), 3)
    states = jax.vmap(kernel.init)(jnp.zeros((3, ssm.p)))
    step = jax.jit(lambda k, s: kernel.step(k, s, batch)[0])
    batched = jax.jit(jax.vmap(lambda k, s: kernel.step(k, s, batch)[0]))(keys, states)
    for i in range(3):
        one = step(keys[i], jax.tree.map(lambda x, i=i: x[i], states))
        np.testing.assert_allclose(batched.position[i], one.position, rtol=1e-5, atol=1e-6)
    assert len({np.asarray(p).tobytes() for p in batched.position}) == 3


@pytest.mark.parametrize("method", ["lktd", "sgld", "sghmc"])
def test_product_path_matches_the_closed_form_posterior(regression_data, method):
    """Stages with keys (BlackJAX's moves, fast keys), 4 vmapped chains, full batch, on the static
    regression: the posterior mean within 0.1 sd and each variance within 15% of the exact ones."""
    x, y = jnp.asarray(regression_data["x"]), jnp.asarray(regression_data["y"])
    exact = linear_gaussian_posterior(x, y, 1.0, jnp.zeros(3), 100.0 * jnp.eye(3))
    batch = {"x": x, "y": y}
    ssm = lktd_ppl.from_numpyro(MODEL, batch)
    step_size = 2e-5 if method == "sghmc" else 5e-4  # as tests/test_static_regression.py
    config = SamplerConfig(pseudo_population=200.0, step_size=step_size)
    kernel = KERNELS[method](ssm, config)
    warmup, draws = 1000, 6000

    def chain(key, position):
        def stage(s, k):
            s, _ = kernel.step(k, s, batch)
            return s, s.position

        _, out = jax.lax.scan(stage, kernel.init(position), jax.random.split(key, warmup + draws))
        return out[warmup:]

    keys = jax.random.split(jax.random.key(3), 4)
    starts = jnp.asarray(exact.mean) + jax.random.normal(jax.random.key(4), (4, 3))
    samples = np.asarray(jax.jit(jax.vmap(chain))(keys, starts)).reshape(-1, 3)
    sd = np.sqrt(np.diag(exact.cov))
    err = np.abs(samples.mean(0) - np.asarray(exact.mean)) / sd
    assert np.all(err < 0.1), err
    ratio = samples.var(0) / np.diag(exact.cov)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
