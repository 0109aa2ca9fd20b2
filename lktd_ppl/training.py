"""Training driver: a :class:`~lktd_ppl.config.RunSpec` -> the harness's jitted ``train`` ->
a run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lktd_ppl.config import RunError, RunSpec, env_kind
from lktd_ppl.run_folder import write_run


def make_learner(spec: RunSpec) -> Any:
    """The harness's :class:`~lktd_ppl.agents.harness.Learner` of ``spec`` (loads and checks the
    model of the LKTD family, KOVA's memory need, ...) for the run's protocol."""
    return spec.algorithm.make_learner(spec.agent, spec.protocol)


def make_train(spec: RunSpec) -> Callable[..., dict]:
    """The harness's ``train(keys, progress, log)`` for ``spec`` (the escape room's, the control
    harness on a gymnax task, or the host loop on a Gymnasium one); the learner is built (and the
    model checked) before anything runs."""
    learner = make_learner(spec)
    if spec.control is not None and env_kind(spec.env) == "gymnasium":
        from lktd_ppl.agents.host_loop import make_host_train

        return make_host_train(spec.control, learner)
    if spec.control is not None:
        from lktd_ppl.agents.control import make_control_train

        return make_control_train(spec.control, learner)
    from lktd_ppl.agents.harness import make_train as harness_train

    return harness_train(spec.escape, learner)


def prepare_folder(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {str(out)!r} exists and is not a folder")
    if (out / "config.json").exists() and not overwrite:
        raise RunError(
            f"{str(out)!r} already holds a run (config.json); pick another --out or pass "
            "--overwrite"
        )
    return out


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    train: Callable[..., dict] | None = None,
) -> dict:
    """Train ``spec`` and write the run folder ``out``; returns the harness's results.

    ``train``: ``make_train(spec)`` if already built (it loads and checks the model)."""
    import jax
    import jax.numpy as jnp

    out = prepare_folder(out, overwrite)
    if train is None:  # model / memory problems surface here, before the folder exists
        train = make_train(spec)
    keys = jnp.stack([jax.random.key(s) for s in spec.seed_list])
    results = train(keys, progress=progress, log=log)
    write_run(out, spec, results)
    return results
