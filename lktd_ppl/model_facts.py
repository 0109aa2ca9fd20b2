"""What an abstract trace of a model file tells, and the model against the run's environment.

:func:`model_facts` traces a NumPyro model on a batch of the environment's sizes
(``jax.eval_shape`` and jaxprs: nothing runs or compiles) for its parameter count, the shape of its
``q`` site, its file's ``GAMMA`` and whether it reads the run's discount; :func:`model_problems`
lists where it does not fit the environment.  :func:`lktd_ppl.validation.check_spec` raises the
first as a one-line :class:`~lktd_ppl.settings.RunError`.

Imports no JAX at import time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What an abstract trace of a model tells: its parameter count, the shape of its ``q`` site
    (None if it has none), the discount ``GAMMA`` of its file (None if it declares none) and
    whether its measurement reads the protocol's discount, ``batch["discount"]`` (the LKTD agent
    hands it over; a model that reads it discounts as the run says, whatever its GAMMA)."""

    p: int
    q_shape: tuple[int, ...] | None
    gamma: float | None
    reads_discount: bool = False


def model_facts(
    spec: str, obs_dim: int, num_actions: int, rows: int = 5, target: bool = False
) -> ModelFacts:
    """Trace the model ``spec`` abstractly (``jax.eval_shape``: shapes only, nothing compiled) on
    ``rows`` transitions of the environment's sizes (``target``: with the target copy's Q-values
    at s', ``batch["next_q_target"]``)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from lktd_ppl.api import load_model
    from lktd_ppl.replay import example_transition
    from lktd_ppl.ssm import STAGE_KEY, ModelError

    fn = load_model(spec)
    observed: dict[str, bool] = {}

    def example() -> dict:
        item = example_transition(obs_dim, num_actions)
        batch = {k: jnp.broadcast_to(v, (rows, *v.shape)) for k, v in item.items()}
        batch[STAGE_KEY] = jnp.int32(0)
        if target:
            batch["next_q_target"] = jnp.zeros((rows, num_actions), jnp.float32)
        return batch

    def shapes() -> dict:
        tr = handlers.trace(handlers.seed(fn, rng_seed=0)).get_trace(example())
        kept = {}
        for name, site in tr.items():
            if site["type"] in ("sample", "deterministic"):
                observed[name] = site["type"] == "deterministic" or bool(site["is_observed"])
                kept[name] = site["value"]
        return kept

    try:
        out = jax.eval_shape(shapes)
    except Exception as e:  # the model failed on the environment's batch: one line
        raise ModelError(
            f"model {spec}: calling it on a batch of {rows} transitions (obs_dim {obs_dim}, "
            f"{num_actions} actions) failed: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    p = sum(math.prod(v.shape) for k, v in out.items() if not observed[k])
    q_shape = tuple(out["q"].shape) if "q" in out else None
    gamma = getattr(fn, "__globals__", {}).get("GAMMA")
    return ModelFacts(
        p, q_shape, None if gamma is None else float(gamma), _reads_discount(fn, example, rows)
    )


def _reads_discount(fn: Any, example: Callable[[], dict], rows: int) -> bool:
    """Whether the model's observed sites' log density depends on ``batch["discount"]`` (traced
    abstractly to a jaxpr: nothing runs or compiles)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from lktd_ppl.ssm import outputs_computed_from

    def observed_log_density(discount: Any) -> Any:
        batch = {**example(), "discount": discount}
        tr = handlers.trace(handlers.seed(fn, rng_seed=0)).get_trace(batch)
        sites = [s for s in tr.values() if s["type"] == "sample" and s["is_observed"]]
        return sum(jnp.sum(s["fn"].log_prob(s["value"])) for s in sites)

    computed = outputs_computed_from(
        observed_log_density, jax.ShapeDtypeStruct((rows,), jnp.float32)
    )
    return bool(computed and computed[0])


def model_problems(
    facts: ModelFacts, spec: str, protocol: Any, name: str, num_actions: int
) -> list[str]:
    """The model against the environment: its ``q`` site's action count and its discount: a model
    that does not read the protocol's (``batch["discount"]``) must declare no GAMMA or the
    protocol's (the escape room's truth is scored at ``escape.gamma``; a control task's gamma is
    its protocol's)."""
    out = []
    if facts.q_shape is not None and facts.q_shape[-1:] != (num_actions,):
        out.append(
            f"model {spec}: its deterministic site q of shape {facts.q_shape} (for 5 "
            f"observations) has {facts.q_shape[-1] if facts.q_shape else 0} action(s); the "
            f"environment has {num_actions}: pick a model for this environment (e.g. "
            "mlp_control:... for control tasks)"
        )
    gamma = facts.gamma
    own = gamma is not None and not facts.reads_discount
    if own and not math.isclose(gamma, protocol.gamma):
        out.append(
            f"{name}.gamma ({protocol.gamma}) differs from the discount GAMMA ({gamma}) of model "
            f"{spec}, which does not read batch['discount'] (the run's gamma (1 - terminated)); "
            f"set {name}.gamma={gamma} or make the model read it (as models/mlp_q.py does)"
        )
    return out
