"""Divergence: a seed whose learner blows up is frozen and marked, the others go on.

After every training stage the harnesses call :func:`guard` inside the jitted code with the
learner state before and after the stage and the new state's Q-values at some states (every
member's).  The stage is *bad* when a floating-point leaf of the learner state is not finite, a
Q-value is not finite, or some |Q| exceeds ``10 * R / (1 - gamma)`` (``R``: the protocol's
``q_bound_reward``, or the largest |reward| seen so far; no bound while that is 0, or with
``q_bound=False``).  A bad stage is undone (the seed keeps its last finite learner state), the seed
stops updating for the rest of the run, and :class:`Health` records the stage, the environment
step, the member (the first whose Q-values are bad; -1 when only the parameters tell) and why.

JAX is imported inside the functions that trace, so the host-side helpers import cheaply.
On the host, :func:`run_message` turns the final :class:`Health` into the one-line message of the
run's exit status 3, and :func:`mask_after` blanks a diverged seed's metrics from its divergence on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import jax

Q_BOUND_FACTOR = 10.0  # |Q| beyond this many times the largest possible return R / (1 - gamma)
CAUSES = {
    1: "non-finite parameters",
    2: "non-finite Q-values",
    3: "|Q| beyond the bound 10 R/(1 - gamma)",
}


class RunDiverged(RuntimeError):
    """A run that finished with at least one diverged seed (``lktd`` exits with status 3)."""


class Health(NamedTuple):
    """One seed's divergence record (leaves are scalars; vmapped: leading axis seeds)."""

    diverged: jax.Array  # bool
    stage: jax.Array  # int32: the training stage that diverged (-1: none)
    step: jax.Array  # int32: the environment step at that stage's end (-1: none)
    member: jax.Array  # int32: the chain / head whose Q-values were bad (-1: not told)
    cause: jax.Array  # int32: a key of CAUSES (0: none)
    q_abs: jax.Array  # float32: the largest finite |Q| at the divergence
    bound: jax.Array  # float32: the |Q| bound in force then (inf: none)
    reward_max: jax.Array  # float32: the largest |reward| seen so far


def healthy() -> Health:
    """A seed that has not diverged."""
    import jax.numpy as jnp

    minus = jnp.full((), -1, jnp.int32)
    zero = jnp.zeros((), jnp.float32)
    return Health(
        jnp.zeros((), bool), minus, minus, minus, jnp.zeros((), jnp.int32), zero, zero, zero
    )


def see_rewards(health: Health, rewards: jax.Array) -> Health:
    """``health`` with the largest |reward| updated by ``rewards``."""
    import jax.numpy as jnp

    biggest = jnp.max(jnp.abs(jnp.asarray(rewards, jnp.float32)))
    return health._replace(reward_max=jnp.maximum(health.reward_max, biggest))


def q_limit(health: Health, gamma: float, reward: float | None, enabled: bool) -> jax.Array:
    """The |Q| bound ``10 R / (1 - gamma)``: R = ``reward``, or (None) the largest |reward| seen
    so far; infinite when switched off, while R is 0, or with gamma 1."""
    import jax.numpy as jnp

    if not enabled:
        return jnp.full((), jnp.inf, jnp.float32)
    r = health.reward_max if reward is None else jnp.float32(reward)
    horizon = jnp.float32(1.0) - jnp.float32(gamma)
    return jnp.where((r > 0) & (horizon > 0), Q_BOUND_FACTOR * r / horizon, jnp.inf)


def params_finite(learner_state: Any) -> jax.Array:
    """Whether every floating-point leaf of ``learner_state`` is finite."""
    import jax
    import jax.numpy as jnp

    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(learner_state)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def assess(
    learner_state: Any, q: jax.Array, limit: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(bad, member, cause, largest finite |Q|) of a learner state and its Q-values ``q``
    (members, ...); ``mask`` (broadcast to one member's Q): the entries the bound applies to."""
    import jax.numpy as jnp

    members = q.shape[0]
    flat = q.reshape(members, -1)
    finite = jnp.all(jnp.isfinite(flat), axis=1)
    size = jnp.where(jnp.isfinite(flat), jnp.abs(flat), 0.0)
    if mask is not None:
        size = jnp.where(jnp.broadcast_to(mask, q.shape[1:]).reshape(1, -1), size, 0.0)
    over = jnp.max(size, axis=1) > limit
    bad_member = ~finite | over
    ok_params = params_finite(learner_state)
    cause = jnp.where(
        ~ok_params, 1, jnp.where(~jnp.all(finite), 2, jnp.where(jnp.any(over), 3, 0))
    ).astype(jnp.int32)
    member = jnp.where(jnp.any(bad_member), jnp.argmax(bad_member), -1).astype(jnp.int32)
    return cause > 0, member, cause, jnp.max(size)


def guard(
    health: Health,
    before: Any,
    after: Any,
    q_after: jax.Array,
    limit: jax.Array,
    trained: jax.Array,
    stage: jax.Array,
    step: jax.Array,
    mask: jax.Array | None = None,
) -> tuple[Any, Health]:
    """(the learner state to go on with, the updated health) after a training stage.

    ``trained``: whether the stage ran; a seed already diverged, or whose stage was bad, keeps
    ``before`` (its last finite state)."""
    import jax
    import jax.numpy as jnp

    bad, member, cause, q_abs = assess(after, q_after, limit, mask)
    new = trained & bad & ~health.diverged
    keep = health.diverged | new
    state = jax.tree.map(lambda old, x: jnp.where(keep, old, x), before, after)

    def mark(old: jax.Array, value: jax.Array) -> jax.Array:
        return jnp.where(new, jnp.asarray(value, old.dtype), old)

    marked = Health(
        diverged=keep,
        stage=mark(health.stage, stage),
        step=mark(health.step, step),
        member=mark(health.member, member),
        cause=mark(health.cause, cause),
        q_abs=mark(health.q_abs, q_abs),
        bound=mark(health.bound, limit),
        reward_max=health.reward_max,
    )
    return state, marked


# -- on the host -------------------------------------------------------------------------------


def as_dict(health: Health) -> dict[str, np.ndarray]:
    """The seeds' health as NumPy arrays (leading axis seeds), for the results dict."""
    import jax

    return {k: np.asarray(v) for k, v in jax.device_get(health)._asdict().items()}


def log_new(health: Health, seen: set[int], log: Callable[[str], None] | None) -> None:
    """Log one line per seed index that diverged since the last call (``seen`` is updated)."""
    if log is None:
        return
    d = as_dict(health)
    for i in np.flatnonzero(d["diverged"]):
        if int(i) not in seen:
            seen.add(int(i))
            log(f"seed index {i} diverged at training stage {int(d['stage'][i])}: frozen")


def mask_after(
    values: np.ndarray, steps: np.ndarray, divergence: dict[str, np.ndarray] | None
) -> np.ndarray:
    """``values`` (seeds, evals, ...) as floats with NaN at every evaluation step at or after a
    seed's divergence."""
    out = np.array(values, dtype=np.float64)
    if divergence is None:
        return out
    gone = after_divergence(steps, divergence)
    out[gone] = np.nan
    return out


def after_divergence(steps: np.ndarray, divergence: dict[str, np.ndarray]) -> np.ndarray:
    """(seeds, evals) bool: the evaluations at or after each seed's divergence."""
    steps = np.asarray(steps)[None, :]
    at = np.asarray(divergence["step"])[:, None]
    return np.asarray(divergence["diverged"])[:, None] & (steps >= at)


def likely_cause(agent: Any) -> str:
    """What to change, from the agent's settings: the LKTD family's step size against N and
    sigma, or a network baseline's learning rate."""
    sampler = getattr(agent, "sampler", None)
    if sampler is not None:
        return (
            f"likely cause: the step size eps0 (sampler.step_size={sampler.step_size:g}) is too "
            f"large for the pseudo-population N (sampler.pseudo_population="
            f"{sampler.pseudo_population:g}) and the model's measurement sd sigma (the drift "
            "grows with eps0 N / sigma^2): lower sampler.step_size"
        )
    for name in ("learning_rate", "lr"):
        if hasattr(agent, name):
            return f"likely cause: the learning rate ({name}={getattr(agent, name):g}) is too large"
    return "likely cause: the learner's step size is too large"


def describe_seed(seed: int, members: int, d: dict[str, np.ndarray], i: int) -> str:
    """'seed S chain C diverged at training stage T (environment step N): why'."""
    member = int(d["member"][i])
    who = f"seed {seed}"
    if members > 1 or member >= 0:
        who += f" chain {member}" if member >= 0 else " (chain not told)"
    cause = int(d["cause"][i])
    why = CAUSES.get(cause, "unknown")
    if cause == 3:
        why = f"|Q| {float(d['q_abs'][i]):.3g} beyond the bound 10 R/(1 - gamma) = {float(d['bound'][i]):.3g}"
    return (
        f"{who} diverged at training stage {int(d['stage'][i])} (environment step "
        f"{int(d['step'][i]):,}): {why}"
    )


def diverged_seeds(seeds: Sequence[int], divergence: dict[str, np.ndarray] | None) -> list[int]:
    """The seeds that diverged."""
    if divergence is None:
        return []
    return [int(s) for s, bad in zip(seeds, divergence["diverged"], strict=True) if bad]


def run_message(
    seeds: Sequence[int], members: int, agent: Any, divergence: dict[str, np.ndarray] | None
) -> str | None:
    """The one-line message of a run with diverged seeds (None: none diverged): the earliest
    divergence, how many others, the likely cause and what is on disk."""
    if divergence is None or not np.any(divergence["diverged"]):
        return None
    bad = np.flatnonzero(divergence["diverged"])
    first = int(bad[np.argmin(np.asarray(divergence["stage"])[bad])])
    others = len(bad) - 1
    line = describe_seed(int(seeds[first]), members, divergence, first)
    if others:
        line += f" (and {others} more seed{'s' if others > 1 else ''})"
    healthy_count = len(seeds) - len(bad)
    return (
        f"{line}; {likely_cause(agent)}. {healthy_count} of {len(seeds)} seed(s) finished; "
        "metrics.csv holds the metrics up to the divergence and checkpoint.npz the last finite "
        "state (summary.md lists the diverged seeds)"
    )


def summary_lines(
    seeds: Sequence[int], members: int, divergence: dict[str, np.ndarray] | None
) -> list[str]:
    """The run summary's lines on diverged seeds (empty: none diverged)."""
    if divergence is None or not np.any(divergence["diverged"]):
        return []
    lines = ["", "Diverged (frozen at their last finite state, kept in checkpoint.npz):", ""]
    for i in np.flatnonzero(divergence["diverged"]):
        lines.append(f"- {describe_seed(int(seeds[i]), members, divergence, int(i))}")
    lines += [
        "",
        "Their metrics.csv rows from the divergence on are NaN (column diverged = 1); samples.nc "
        "leaves their chains out.",
    ]
    return lines
