"""Training driver: a :class:`~lktd_ppl.config.RunSpec` -> the harness's jitted ``train`` ->
a run folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lktd_ppl import checkpoint, scale
from lktd_ppl import run_folder as rf
from lktd_ppl import run_status as rs
from lktd_ppl.config import RunError, RunSpec, env_kind, flatten, load_config

# seconds between checkpoints: saving costs a fraction of a percent of a run at this interval
CHECKPOINT_EVERY = 30.0


def make_learner(spec: RunSpec) -> Any:
    """The harness's :class:`~lktd_ppl.agents.harness.Learner` of ``spec`` (loads and checks the
    model of the LKTD family, KOVA's memory need, ...) for the run's protocol."""
    return spec.algorithm.make_learner(spec.agent, spec.protocol)


def make_train(spec: RunSpec, devices: int | None = None) -> Callable[..., dict]:
    """The harness's ``train(keys, progress, log)`` for ``spec`` (the escape room's, the control
    harness on a gymnax task, or the host loop on a Gymnasium one); the learner is built (and the
    model checked) before anything runs.  ``devices``: the seeds are split over this many
    devices of every process (:mod:`lktd_ppl.scale`; not on a Gymnasium task, whose host loop
    runs in one process on one device)."""
    chain_devices = getattr(spec.agent, "chain_devices", 1)
    if chain_devices > 1 and ((devices or 1) > 1 or scale.job_size() > 1):
        raise RunError(
            f"chain_devices {chain_devices} with the seeds split too (--devices {devices or 1}, "
            f"{scale.job_size()} process(es)): split the seeds or the chains, not both"
        )
    learner = make_learner(spec)
    if spec.control is not None and env_kind(spec.env) == "gymnasium":
        if (devices or 1) > 1 or scale.job_size() > 1:
            raise RunError(
                f"--devices {devices or 1} on {scale.job_size()} process(es): a Gymnasium task "
                f"({spec.env}) runs on one device in one process; the escape room and gymnax "
                "tasks split their seeds"
            )
        from lktd_ppl.agents.host_loop import make_host_train

        return make_host_train(spec.control, learner)
    if spec.control is not None:
        from lktd_ppl.agents.control import make_control_train

        return make_control_train(spec.control, learner, devices=devices)
    from lktd_ppl.agents.harness import make_train as harness_train

    return harness_train(spec.escape, learner, devices=devices)


def check_folder(out: str | Path, overwrite: bool) -> Path:
    """Refuse ``out`` (a :class:`RunError`) if a run cannot go there: it is a file, a folder
    that holds something other than a run, a run in progress, or (without ``overwrite``) a
    finished run.  Changes nothing; :func:`prepare_folder` clears and creates it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {str(out)!r} exists and is not a folder")
    state = rs.folder_state(out)
    if state == "other":
        raise RunError(
            f"--out {str(out)!r} is a folder that holds no run (no {rs.STATUS_FILE} or "
            "config.json) and is not empty; pick another --out"
        )
    if state == "in progress":
        raise RunError(f"{str(out)!r}: {rs.read_status(out).get('message', 'a run is going on')}")
    if state == "finished" and not overwrite:
        raise RunError(
            f"{str(out)!r} already holds a finished run; pick another --out or pass --overwrite "
            "to replace it"
        )
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(
            f"cannot write the run folder {str(out)!r}: {str(probe)!r} is not a writable folder"
        )
    return out


def prepare_folder(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` (:func:`check_folder`), remove the run it holds (a finished one with
    ``overwrite``; an interrupted or failed one always), so no file of it stays beside the new
    run, and create it, writable, with a ``running`` status."""
    out = check_folder(out, overwrite)
    if rs.folder_state(out) not in ("absent", "empty"):
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rs.write_status(out, "running")
    except OSError as e:
        raise RunError(f"cannot write the run folder {str(out)!r}: {e.strerror or e}") from None
    return out


def _differences(saved: dict, now: dict) -> list[str]:
    """``key: saved -> now`` for every setting that differs between two flat dicts."""
    keys = sorted(set(saved) | set(now))
    return [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def resume_identity(spec: RunSpec) -> dict:
    """What a resumed run must share with the interrupted one: its settings (the model by the
    contents of its file) and the package versions."""
    config = json.loads(json.dumps(spec.to_dict()))
    config.get("agent", {}).pop("model", None)
    if spec.algorithm.samples_model:
        from lktd_ppl.api import resolve_model

        source, name = resolve_model(spec.agent.model)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        config["model"] = f"{name} (sha256 {digest})"
    return {"config": config, "versions": rs.package_versions()}


def check_resume(out: str | Path, spec: RunSpec) -> Path:
    """Refuse to resume ``out`` (a :class:`RunError` naming the reason) unless it holds an
    unfinished run with a checkpoint, made by the same settings and package versions."""
    out = Path(out)
    state = rs.folder_state(out)
    if state in ("absent", "empty", "other"):
        raise RunError(f"--resume {str(out)!r}: not a run folder")
    if state == "finished":
        raise RunError(f"--resume {str(out)!r}: the run is finished; there is nothing to resume")
    if state == "in progress":
        raise RunError(f"--resume {str(out)!r}: {rs.read_status(out).get('message')}")
    path = out / rs.RESUME_FILE
    if not path.is_file():
        raise RunError(
            f"--resume {str(out)!r}: the run stopped before its first checkpoint; rerun its "
            "command to start again"
        )
    saved = checkpoint.read_meta(path)
    now = resume_identity(spec)
    config = _differences(flatten(saved["config"]), flatten(now["config"]))
    if config:
        raise RunError(
            f"--resume {str(out)!r}: the settings differ from the interrupted run's: "
            + "; ".join(config)
        )
    versions = _differences(saved["versions"], now["versions"])
    if versions:
        raise RunError(
            f"--resume {str(out)!r}: the package versions differ from the interrupted run's: "
            + "; ".join(versions)
        )
    return out


def _mark(out: Path, state: str, step: int | None = None, message: str = "") -> None:
    """Write the status of a run that stopped; a folder that cannot take it any more (removed,
    full disk) leaves the error that stopped the run to be reported."""
    try:
        rs.write_status(out, state, step=step, message=message)
    except OSError:
        pass


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    train: Callable[..., dict] | None = None,
    resume: bool = False,
    checkpoint_every: float = CHECKPOINT_EVERY,
    command: str | None = None,
) -> dict:
    """Train ``spec`` and write the run folder ``out``; returns the harness's results.

    The folder is made (or cleared, see :func:`prepare_folder`) before anything compiles; while
    training, ``resume.npz`` (the whole run state and the outputs so far) and ``metrics.csv`` are
    written every ``checkpoint_every`` seconds, and SIGTERM / SIGINT save them and raise
    :class:`~lktd_ppl.checkpoint.Interrupted`; ``status.json`` says whether the run is running,
    finished, interrupted or failed.  ``resume``: continue the run in ``out`` from its
    checkpoint (:func:`check_resume`).  ``train``: ``make_train(spec)`` if already built (it loads
    and checks the model); ``command``: the command line recorded in ``run.json``."""
    import jax
    import jax.numpy as jnp

    out = Path(out)
    if resume:
        check_resume(out, spec)
    if train is None:  # model / memory problems surface here, before the folder changes
        train = make_train(spec)
    if resume:
        config = load_config(out)
        rs.write_status(out, "running")
    else:
        prepare_folder(out, overwrite)
        config = rf.write_config(out, spec)
    rs.record_command(out, command, resumed=resume)
    identity = resume_identity(spec)
    ckpt = checkpoint.Checkpointer(
        out / rs.RESUME_FILE,
        every_seconds=checkpoint_every,
        meta=identity,
        on_save=lambda partial: rf.write_progress(out, spec, partial),
        resume=resume,
    )
    keys = jnp.stack([jax.random.key(s) for s in spec.seed_list])
    try:
        with ckpt.catching_signals():
            # several processes: no mid-run checkpoint (each save would be a collective gather)
            several = scale.job_size() > 1
            results = train(keys, progress=progress, log=log, checkpoint=None if several else ckpt)
        rf.write_run(out, spec, results, config=config)
    except checkpoint.Interrupted as stop:
        _mark(out, "interrupted", step=stop.step, message=str(stop))
        raise
    except BaseException as e:
        state = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        _mark(out, state, message=str(e).strip().split("\n")[0] or type(e).__name__)
        raise
    (out / rs.RESUME_FILE).unlink(missing_ok=True)
    results["checkpoint_saves"], results["checkpoint_seconds"] = ckpt.saves, ckpt.save_seconds
    # a run with diverged seeds is finished, and says so (lktd train then exits with status 3)
    from lktd_ppl.divergence import run_message

    diverged = run_message(spec.seed_list, spec.members, spec.agent, results.get("divergence"))
    rs.write_status(out, "finished", step=spec.protocol.total_steps, message=diverged or "")
    return results
