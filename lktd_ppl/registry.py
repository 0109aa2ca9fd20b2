"""The one registry of algorithms: name -> config class, learner factory, members per seed, flat
parameters.  The CLI, run folders and studies look an algorithm up here; nothing else dispatches
on its name.  Agent modules are imported on first use, so reading the registry imports no JAX.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """How the harness runs one algorithm.

    ``module`` holds ``config_class`` (the settings), ``learner`` (``(config, protocol) ->
    Learner``, the protocol an escape or a control-task config)
    and ``parameters`` (``learner state -> (dims, flat array)``, leading axis seeds).
    ``fixed``: settings the name implies (the LKTD family's ``method``), not settable.
    ``members``: the config field that counts members per seed (chains, heads), or None (one).
    """

    name: str
    module: str
    config_class_name: str
    learner_name: str
    parameters_name: str
    members_field: str | None = None
    samples_model: bool = False  # the LKTD family: samples a NumPyro model (``--model``)
    fixed: tuple[tuple[str, Any], ...] = ()
    summary: str = ""

    def _attr(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)

    @property
    def config_class(self) -> type:
        return self._attr(self.config_class_name)

    def make_learner(self, config: Any, protocol: Any) -> Any:
        """The harness's ``Learner`` (loads and checks the model, KOVA's memory need, ...)."""
        return self._attr(self.learner_name)(config, protocol)

    def members(self, config: Any) -> int:
        return 1 if self.members_field is None else int(getattr(config, self.members_field))

    def flat_parameters(self, learner_state: Any) -> tuple[list[str], Any]:
        """The final flat parameters: (dims, array), ``dims`` ``["chain", "param"]`` (seed-major
        chains) for the LKTD family, ``["seed", "param"]`` otherwise."""
        fn: Callable[[Any], tuple[list[str], Any]] = self._attr(self.parameters_name)
        return fn(learner_state)


_LKTD = dict(
    module="lktd_ppl.agents.lktd",
    config_class_name="LKTDAgentConfig",
    learner_name="lktd_learner",
    parameters_name="flat_parameters",
    members_field="num_chains",
    samples_model=True,
)
_NET = dict(learner_name="make_learner", parameters_name="flat_parameters")

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("lktd", **_LKTD, fixed=(("method", "lktd"),), summary="LKTD (the paper's)"),
        Algorithm("sgld", **_LKTD, fixed=(("method", "sgld"),), summary="SGLD on the same model"),
        Algorithm(
            "sghmc", **_LKTD, fixed=(("method", "sghmc"),), summary="SGHMC on the same model"
        ),
        Algorithm("dqn", "lktd_ppl.agents.dqn", "DQNConfig", **_NET, summary="double DQN"),
        Algorithm(
            "bootdqn",
            "lktd_ppl.agents.bootdqn",
            "BootDQNConfig",
            **_NET,
            members_field="heads",
            summary="Bootstrapped DQN",
        ),
        Algorithm("qrdqn", "lktd_ppl.agents.qrdqn", "QRDQNConfig", **_NET, summary="QR-DQN"),
        Algorithm("kova", "lktd_ppl.agents.kova", "KOVAConfig", **_NET, summary="KOVA (EKF)"),
        Algorithm(
            "lmcdqn",
            "lktd_ppl.agents.lmcdqn",
            "LMCDQNConfig",
            **_NET,
            summary="Adam LMCDQN (Langevin peer)",
        ),
    )
}


def get(name: str) -> Algorithm:
    """The registered algorithm ``name``; a ValueError naming the choices otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
