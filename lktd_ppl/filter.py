"""The LKTD kernel (spec sections 2-3): variance-split augmented state, Langevin forecast by
BlackJAX, scalar-gain Kalman analysis.  Pure ``init`` / ``step`` functions over NamedTuple states.

Notation: ``c = N / n`` (pseudo-population over minibatch size), ``theta`` the flat unconstrained
parameters, ``xi`` the auxiliary measurement (shaped like the observation ``r``).

Default mode samples the consistent tempered target of spec section 2::

    log pi~(phi) = log pi(theta) + c * log N(xi; h(theta), alpha sigma^2)
    log lik(phi) = c * log N(r; xi, (1 - alpha) sigma^2)

Where each equation lives:

- grad of log pi~ w.r.t. (theta, xi), one forward and one backward pass: :func:`augmented_drift`
  (the forward pass itself: :func:`forward`);
- stage start, the exact conditional xi | theta, r ~ N(alpha r + (1-alpha) h, alpha(1-alpha)
  sigma^2 / c) (spec eq. (7), tempered): :func:`gibbs_xi`;
- forecast, ``phi <- phi + (eps_k/2)(1/c) grad log pi~(phi) + N(0, (eps_k/c) I)``: in
  :func:`inner_step`, one ``blackjax.sgld`` step with step size ``(eps_k/2)(1/c)``
  (:func:`lktd_ppl.langevin.sgld_move`); with explicit noise (tests, pre-drawn noise) its
  hand-written form :func:`lktd_ppl.langevin.langevin_step`;
- analysis, ``xi <- xi + g_k (r - xi - v)``, ``v ~ N(0, R/c)``, ``R = 2(1-alpha)sigma^2``,
  ``g_k = eps_k / (eps_k + R)``: the end of :func:`inner_step` (hand-written: a Kalman update
  with a scalar gain, which BlackJAX does not have);
- one stage (the Gibbs draw, then kappa inner steps with ``eps_k = schedule(eps0, k)``, restarting
  every stage): ``step`` of the kernel :func:`lktd` returns;
- the dense-gain LEnKF step the scalar gain replaces: :func:`exact_gain_step`; Lemma 1's
  preconditioned-SGLD form: :func:`lktd_ppl.exact.preconditioned_sgld_step`.

``compat=True`` reproduces the official code: xi <- r at the stage start, no c on the xi-block of
the drift, and both likelihood drifts doubled (its loss is a sum of squares without 1/2).

``temperature`` T (beyond the paper) multiplies the variance of every noise of a stage: the Gibbs
draw of xi, the forecast's (BlackJAX's ``temperature`` argument) and the analysis's v.

Beyond the paper, ``precondition_max > 1`` preconditions the theta-forecast with a diagonal M
(the pSGLD idea, Li et al. 2016), fixed within a stage (:func:`update_preconditioner`)::

    v <- beta v + (1 - beta) g^2               (g: the theta-drift at the stage start)
    M  = clip(median(sqrt v) / sqrt v, 1, precondition_max)
    theta <- theta + (eps_k/2)(1/c) M g + N(0, (eps_k/c) M)

which is BlackJAX's SGLD step in the coordinates ``y = theta / sqrt(M)`` (drift ``sqrt(M) g``),
mapped back.  Parameters whose drift is large (the well-determined ones) keep the spec's step;
those the data barely touch (e.g. the output weights of a rarely taken action) move up to
``precondition_max`` times faster.  For a fixed M the target is unchanged; M drifts slowly (the
term in dM/dtheta is dropped, as pSGLD drops it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from lktd_ppl import validation
from lktd_ppl.langevin import langevin_step, sgld_move
from lktd_ppl.rng import fast_key, standard_normal
from lktd_ppl.ssm import Batch, Measurement, StateSpaceModel


def polynomial_schedule(decay: float = 0.9) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """eps_k = eps0 * k^-decay for inner step k = 1..kappa (the spec's default, decay 0.9)."""

    def schedule(eps0: jax.Array, k: jax.Array) -> jax.Array:
        return eps0 * jnp.asarray(k, jnp.result_type(float)) ** (-decay)

    return schedule


def constant_schedule(eps0: jax.Array, k: jax.Array) -> jax.Array:
    del k
    return eps0


class SamplerConfig(struct.PyTreeNode):
    """Hyperparameters of the LKTD family.  Continuous ones are pytree leaves (vmap-able)."""

    pseudo_population: float = 10_000.0  # N, the tempering knob
    step_size: float = 1e-5  # eps0, the paper's epsilon (not BlackJAX's step size)
    alpha: float = 0.9  # variance split (LKTD only)
    friction: float = 0.1  # SGHMC only
    # beyond the paper (LKTD only): every noise of a stage (the Gibbs draw of xi, the forecast's, the
    # analysis's) with its variance times T: the target pi~^(1/T), a cold posterior for T < 1
    # (a Gaussian posterior's variance times T); 1: the spec's
    temperature: float = 1.0
    # beyond the paper (LKTD only): the diagonal preconditioner's cap (1: none, the spec's) and the
    # decay of its running mean of squared drifts, per stage
    precondition_max: float = struct.field(pytree_node=False, default=1.0)
    precondition_decay: float = 0.99
    kappa: int = struct.field(pytree_node=False, default=5)  # inner iterations per stage
    compat: bool = struct.field(pytree_node=False, default=False)  # official-code mode
    schedule: Callable = struct.field(pytree_node=False, default=polynomial_schedule(0.9))


def lktd_only_options_error(method: str, temperature: float, precondition_max: float) -> str | None:
    """Why these options do not go with ``method`` (they are LKTD's), or None if they do."""
    for name, value in (("temperature", temperature), ("precondition_max", precondition_max)):
        if value != 1.0 and method != "lktd":
            return (
                f"{name} applies to method 'lktd' only, got method {method!r} with {name} {value}"
            )
    if precondition_max < 1.0:
        return f"precondition_max must be >= 1 (1: no preconditioner), got {precondition_max}"
    return None


class LKTDState(NamedTuple):
    position: jax.Array  # theta, flat, unconstrained (p,)
    xi: jax.Array  # auxiliary measurement, the observation's shape
    # the preconditioner's running mean of squared theta-drifts (p,); () when not preconditioned
    sq_drift: jax.Array | tuple = ()


class InnerNoise(NamedTuple):
    """Standard-normal inputs of one inner step: forecast noise on (theta, xi), analysis noise v."""

    theta: jax.Array
    xi: jax.Array
    v: jax.Array


def split_noise(z: jax.Array, state: LKTDState) -> InnerNoise:
    """Cut one flat standard-normal vector of size p + 2 n into the inputs of an inner step."""
    p, m = state.position.size, state.xi.size
    shape = state.xi.shape
    return InnerNoise(z[:p], z[p : p + m].reshape(shape), z[p + m :].reshape(shape))


def noise_size(state: LKTDState) -> int:
    """Number of standard normals one inner step consumes: p (theta) + n (xi) + n (v)."""
    return state.position.size + 2 * state.xi.size


class StageInfo(NamedTuple):
    log_prior: jax.Array  # log pi(theta) at the start of the stage
    log_likelihood: jax.Array  # untempered Gaussian log-likelihood of the minibatch, stage start


def _scale(meas: Measurement) -> jax.Array:
    return meas.scale**2


class Forward(NamedTuple):
    """One forward pass at theta: log pi(theta), the measurement, and the pullback of (lp, loc)."""

    log_prior: jax.Array
    meas: Measurement
    vjp: Callable[[tuple[jax.Array, jax.Array]], tuple[jax.Array]]


def forward(ssm: StateSpaceModel, theta: jax.Array, batch: Batch) -> Forward:
    """Evaluate the model once at ``theta``, keeping what the backward pass needs."""

    def f(t):
        lp, meas = ssm.prior_and_measure(t, batch)
        return (lp, meas.loc), (lp, meas)

    _, vjp, (lp, meas) = jax.vjp(f, theta, has_aux=True)
    return Forward(lp, meas, vjp)


def augmented_drift(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    state: LKTDState,
    batch: Batch,
    fwd: Forward | None = None,
) -> tuple[tuple[jax.Array, jax.Array], Measurement]:
    """grad of log pi~(phi) w.r.t. (theta, xi): one forward and one backward pass, no Jacobian.

    ``fwd``: the forward pass at ``state.position`` if already computed (the stage start has it).
    """
    n = state.xi.size
    c = config.pseudo_population / n
    if fwd is None:
        fwd = forward(ssm, state.position, batch)
    meas = fwd.meas
    one = jnp.ones((), fwd.log_prior.dtype)
    resid = meas.weight * (state.xi - meas.loc) / (config.alpha * _scale(meas))
    if config.compat:  # doubled likelihood, and no c on the xi-block
        g_theta = fwd.vjp((one, 2.0 * c * resid))[0]
        g_xi = -2.0 * resid
    else:
        g_theta = fwd.vjp((one, c * resid))[0]
        g_xi = -c * resid
    return (g_theta, g_xi), meas


def inner_step(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    state: LKTDState,
    batch: Batch,
    eps: jax.Array,
    key: jax.Array | None = None,
    noise: InnerNoise | None = None,
    analysis_r_factor: float = 2.0,
    fwd: Forward | None = None,
    precond: jax.Array | None = None,
    drift: tuple[tuple[jax.Array, jax.Array], Measurement] | None = None,
    v: jax.Array | None = None,
) -> LKTDState:
    """One forecast + analysis.  Give either ``key`` or the standard-normal ``noise``.

    With ``key`` (the product path) the forecast is one ``blackjax.sgld`` step drawing its noise
    from ``key`` (converted to a fast key); ``v``, if given, is the analysis's standard-normal noise
    (else drawn from ``key`` too).  With ``noise`` the forecast is the hand-written explicit-noise
    form of the same step (:func:`lktd_ppl.langevin.langevin_step`), for exact comparisons.

    ``precond``: the diagonal M of the theta-forecast (see the module's docstring), or None;
    ``drift``: :func:`augmented_drift` at ``state``, if the caller has computed it.

    ``analysis_r_factor`` is the "2" of R = 2(1-alpha)sigma^2 (kept as an argument for the
    negative control of the Lemma-1 test; never change it otherwise).  ``fwd``: the forward pass
    at ``state.position``, if the caller has it (the first inner step of a stage reuses the one
    the Gibbs draw of xi needed).
    """
    n = state.xi.size
    c = config.pseudo_population / n
    (g_theta, g_xi), meas = drift or augmented_drift(ssm, config, state, batch, fwd)
    h_step = 0.5 * eps / c
    if noise is None:
        key = fast_key(key)
        if v is None:
            key, key_v = jax.random.split(key)
            v = standard_normal(key_v, state.xi.shape, state.xi.dtype)
        theta, xi = _forecast(
            key, config, (state.position, state.xi), (g_theta, g_xi), h_step, precond
        )
    else:
        root_t = jnp.sqrt(config.temperature).astype(noise.theta.dtype)
        z_theta = noise.theta * root_t
        if precond is not None:  # theta moves by h M g + sqrt(2 h M) z
            z_theta = z_theta * jnp.sqrt(precond)
            g_theta = g_theta * precond
        phi = (state.position, state.xi)
        theta, xi = langevin_step(phi, (g_theta, g_xi), h_step, (z_theta, noise.xi * root_t))
        v = noise.v
    v = v * jnp.sqrt(config.temperature).astype(v.dtype)
    r_var = analysis_r_factor * (1.0 - config.alpha) * _scale(meas)
    gain = eps / (eps + r_var)
    xi = xi + gain * (meas.value - xi - jnp.sqrt(r_var / c) * v)
    return LKTDState(theta, xi, state.sq_drift)


def _forecast(key, config, phi, grads, h_step, precond):
    """BlackJAX's SGLD step on phi = (theta, xi) at temperature ``config.temperature``; with a
    diagonal preconditioner M, the step in the coordinates (theta / sqrt(M), xi), mapped back."""
    if precond is None:
        return sgld_move(key, phi, lambda *_: grads, None, h_step, config.temperature)
    root = jnp.sqrt(precond)
    y = (phi[0] / root, phi[1])
    y = sgld_move(key, y, lambda *_: (grads[0] * root, grads[1]), None, h_step, config.temperature)
    return y[0] * root, y[1]


def _median(x: jax.Array) -> jax.Array:
    """``jnp.median`` of a vector (the same value) from a partial sort, cheaper than a full sort."""
    n = x.shape[0]
    low = -jax.lax.top_k(-x, n // 2 + 1)[0]  # the n // 2 + 1 smallest, ascending
    return low[-1] if n % 2 else 0.5 * (low[-1] + low[-2])


def update_preconditioner(
    config: SamplerConfig, sq_drift: jax.Array, g_theta: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(new running mean of squared drifts, M) from the stage start's theta-drift ``g_theta``.

    The running mean starts at the first stage's g^2 (an all-zero mean means "not started").
    """
    g2 = g_theta * g_theta
    started = jnp.any(sq_drift > 0)
    beta = config.precondition_decay
    v = jnp.where(started, beta * sq_drift + (1.0 - beta) * g2, g2)
    root = jnp.sqrt(v)
    ref = _median(root)
    tiny = jnp.finfo(root.dtype).tiny  # a parameter with no drift at all gets the cap
    m = jnp.clip(ref / jnp.maximum(root, tiny), 1.0, config.precondition_max)
    return v, m


def gibbs_xi(
    config: SamplerConfig, meas: Measurement, key: jax.Array | None, z: jax.Array | None = None
) -> jax.Array:
    """Stage start: xi ~ N(alpha r + (1-alpha) h, alpha(1-alpha) sigma^2 n/N); compat: xi <- r."""
    if config.compat:
        return meas.value
    n = meas.value.size
    c = config.pseudo_population / n
    if z is None:
        z = standard_normal(key, meas.value.shape, meas.value.dtype)
    a = config.alpha
    mean = a * meas.value + (1.0 - a) * meas.loc
    return mean + jnp.sqrt(config.temperature * a * (1.0 - a) * _scale(meas) / c) * z


def gaussian_loglik(meas: Measurement) -> jax.Array:
    var = _scale(meas)
    ll = -0.5 * ((meas.value - meas.loc) ** 2 / var + jnp.log(2 * jnp.pi * var))
    return jnp.sum(meas.weight * ll)


class Kernel(NamedTuple):
    """``init(position) -> state``; ``step(key, state, batch, noise=None) -> (state, StageInfo)``.

    Without ``noise`` (the product path) a stage's Langevin moves are BlackJAX's, drawing from
    keys split from ``key``.  ``noise``, if given, is the flat vector of ``noise_size`` standard
    normals that one stage consumes, and the moves are their hand-written explicit-noise forms.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    noise_size: int


def lktd(ssm: StateSpaceModel, config: SamplerConfig) -> Kernel:
    """The LKTD kernel: ``init(position) -> LKTDState``, ``step(key, state, batch) -> (state, info)``.

    One ``step`` is one training stage: the Gibbs draw of xi, then ``config.kappa`` inner steps with
    the restarting schedule.  Several chains: ``jax.vmap`` over ``key`` and ``state`` (in RL they
    share the minibatch: ``in_axes=(0, 0, None)``).
    """
    validation.check(config, "sampler.")  # concrete settings only: traced ones pass
    ssm.require_gaussian("LKTD")

    preconditioned = config.precondition_max > 1.0

    def init(position: jax.Array) -> LKTDState:
        sq_drift = jnp.zeros_like(position) if preconditioned else ()
        return LKTDState(position, jnp.zeros(ssm.obs_shape, position.dtype), sq_drift)

    m = ssm.obs_size
    per_step = ssm.p + 2 * m
    total = m + config.kappa * per_step  # the Gibbs draw, then kappa inner steps

    def step(
        key: jax.Array, state: LKTDState, batch: Batch, noise: jax.Array | None = None
    ) -> tuple[LKTDState, StageInfo]:
        # one forward pass at the stage's start serves the Gibbs draw of xi and the first inner step
        fwd = forward(ssm, state.position, batch)
        dtype = state.position.dtype
        if (
            noise is None
        ):  # BlackJAX's moves, one key each; the Gibbs and analysis noise in one draw
            keys = jax.random.split(fast_key(key), config.kappa + 1)
            z = standard_normal(keys[0], (config.kappa + 1, *ssm.obs_shape), dtype)
            z_gibbs, per_k = z[0], (keys[1:], z[1:])
        else:
            z_gibbs = noise[:m].reshape(ssm.obs_shape)
            per_k = noise[m:].reshape(config.kappa, per_step)
        state = state._replace(xi=gibbs_xi(config, fwd.meas, None, z=z_gibbs))
        precond = drift = None
        if preconditioned:  # M from the drift at the stage start (the first step's), then fixed
            drift = augmented_drift(ssm, config, state, batch, fwd)
            sq_drift, precond = update_preconditioner(config, state.sq_drift, drift[0][0])
            state = state._replace(sq_drift=sq_drift)

        def inner(s, xs, fwd=None, drift=None):
            k, rand = xs
            eps = config.schedule(config.step_size, k)
            if noise is None:
                key_k, v_k = rand
                kw = dict(key=key_k, v=v_k)
            else:
                kw = dict(noise=split_noise(rand, s))
            return inner_step(
                ssm, config, s, batch, eps, fwd=fwd, precond=precond, drift=drift, **kw
            )

        first = jax.tree.map(lambda x: x[0], per_k)
        state = inner(state, (jnp.asarray(1), first), fwd, drift)
        rest = jax.tree.map(lambda x: x[1:], per_k)
        ks = jnp.arange(2, config.kappa + 1)
        state, _ = jax.lax.scan(lambda s, xs: (inner(s, xs), None), state, (ks, rest))
        return state, StageInfo(fwd.log_prior, gaussian_loglik(fwd.meas))

    return Kernel(init, step, total)


# -- the exact-gain LEnKF step (dense K), for small models and the Lemma-1 check -------------------


def exact_gain_step(
    ssm: StateSpaceModel,
    config: SamplerConfig,
    state: LKTDState,
    batch: Batch,
    eps: jax.Array,
    noise: InnerNoise,
) -> LKTDState:
    """Forecast as in ``inner_step``, then the analysis with the dense Kalman gain on phi = (theta, xi):
    ``K = B H^T (H B H^T + R)^-1``, ``B = eps I``, ``H = (0, I_n)``.  O((p+n)^3): small models only.
    """
    n = state.xi.size
    c = config.pseudo_population / n
    (g_theta, g_xi), meas = augmented_drift(ssm, config, state, batch)
    h_step = 0.5 * eps / c
    theta, xi = langevin_step(
        (state.position, state.xi), (g_theta, g_xi), h_step, (noise.theta, noise.xi)
    )
    p = theta.size
    phi = jnp.concatenate([theta, xi.ravel()])
    H = jnp.concatenate([jnp.zeros((n, p), phi.dtype), jnp.eye(n, dtype=phi.dtype)], axis=1)
    B = eps * jnp.eye(p + n, dtype=phi.dtype)
    R = jnp.diag((2.0 * (1.0 - config.alpha) * _scale(meas)).ravel())
    K = jnp.linalg.solve(H @ B @ H.T + R, H @ B).T
    v = jnp.sqrt(jnp.diag(R) / c) * noise.v.ravel()
    phi = phi + K @ (meas.value.ravel() - H @ phi - v)
    return LKTDState(phi[:p], phi[p:].reshape(state.xi.shape))
