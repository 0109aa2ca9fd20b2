"""Running a study's rows: each row's pending seeds, resumable, in batches split over devices and
the processes of a ``jax.distributed`` job (:mod:`lktd_ppl.scale`), within a deadline.

A row is (algorithm, preset, overrides, full seed count): its settings are the preset's
(:mod:`lktd_ppl.presets`: every setting written out) with the overrides on top, the ``escape``
settings merged key by key (:func:`row_settings`).  :func:`make_train_for` turns them into the
algorithm's config and train function; it is the one place that dispatches on the algorithm.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from lktd_ppl import scale
from lktd_ppl.presets import preset
from lktd_ppl.study.data import covered_seeds, write_seed_files


class Row(NamedTuple):
    """One configuration of a study: ``algo`` under preset ``preset`` with ``overrides`` (agent
    settings; ``escape``: a dict of escape settings), run on seeds 0..``seeds``-1."""

    algo: str
    preset: str
    overrides: dict
    seeds: int


def row_settings(algo: str, preset_name: str, overrides: dict) -> dict:
    """The settings a row runs with: preset ``preset_name``'s for ``algo``, ``overrides`` on top,
    the ``escape`` dicts merged key by key.  Unknown keys are refused."""
    settings = preset(preset_name, algo)
    changes = dict(overrides)
    escape = changes.pop("escape", {})
    unknown = sorted(set(changes) - set(settings)) + [
        f"escape.{k}" for k in sorted(set(escape) - set(settings["escape"]))
    ]
    if unknown:
        raise ValueError(
            f"{algo} under preset {preset_name!r} has no setting(s) {', '.join(unknown)}"
        )
    return {**settings, **changes, "escape": {**settings["escape"], **escape}}


def make_train_for(
    algo: str, preset_name: str, overrides: dict, steps: int, devices: int | None = None
) -> tuple[Callable, Any]:
    """(train function, :class:`~lktd_ppl.config.RunSpec`) of a row: its settings
    (:func:`row_settings`) with ``steps`` env steps, resolved by the config layer and the registry
    like any ``lktd train`` run; ``devices``: per process, the seeds are split over them."""
    from lktd_ppl.config import build_spec
    from lktd_ppl.training import make_train

    settings = row_settings(algo, preset_name, overrides)
    escape = settings.pop("escape")
    spec = build_spec(algo=algo, config={"agent": settings, "escape": escape}, steps=steps)
    return make_train(spec, devices=devices), spec


class DeadlineError(RuntimeError):
    """A batch would not finish before the study's deadline."""


def window_log(name: str, steps: int, deadline: float | None) -> Callable[[str], None]:
    """The per-window log line printer; with a deadline (a ``time.time()``), it stops a batch
    whose projected end (its last window's duration times the windows left) falls after it."""
    last = {"t": time.time(), "step": 0}

    def log(line: str) -> None:
        print(f"  {name} {line}", flush=True)
        if deadline is None:
            return
        now, step = time.time(), int(line.split()[1])  # "step N ..."
        first = last["step"] == 0  # the first window's time holds the compilation: not projected
        per_step = (now - last["t"]) / max(step - last["step"], 1)
        last.update(t=now, step=step)
        if first:
            return
        end = now + per_step * (steps - step)
        if end > deadline:
            raise DeadlineError(
                f"{name}: projected to end {end - deadline:.0f} s after the deadline "
                f"(at step {step}); stopped"
            )

    return log


def run_row(
    name: str,
    row: Row,
    seeds: int,
    batch: int,
    steps: int,
    out: Path,
    deadline: float | None = None,
    devices: int | None = None,
) -> None:
    """Runs the seeds 0..seeds-1 of row ``name`` that have no run yet, ``batch`` seeds vmapped at a
    time, one file per seed under ``out/runs/<name>/``, beside the row's settings
    (``config.json``).  A batch is split over ``devices`` devices of every process of the job
    (every process runs this with the same arguments; process 0 writes): ``batch`` is rounded up
    to a multiple of them, and the last batch is padded with copies of its last seed (dropped).

    ``deadline`` (a ``time.time()``): a batch projected to end after it is stopped with
    :class:`DeadlineError` (:func:`window_log`)."""
    import jax

    folder = out / "runs" / name
    folder.mkdir(parents=True, exist_ok=True)
    main = scale.is_main_process()
    split = (devices or 1) * jax.process_count()
    done = covered_seeds(folder)
    pending = [s for s in range(seeds) if s not in done]
    size = -(-batch // split) * split  # a multiple of the devices the seeds are split over
    groups = [pending[i : i + size] for i in range(0, len(pending), size)]
    train = None
    for group in groups:
        if train is None:
            train, _ = make_train_for(row.algo, row.preset, row.overrides, steps, devices)
            settings = row_settings(row.algo, row.preset, row.overrides)
            settings["escape"]["total_steps"] = steps
            record = {"algo": row.algo, "preset": row.preset, **settings}
            if main:
                (folder / "config.json").write_text(json.dumps(record, indent=1))
        padded = group + group[-1:] * (-len(group) % split)
        keys = jax.numpy.stack([jax.random.key(s) for s in padded])
        t = time.perf_counter()
        log = window_log(name, steps, deadline) if main else None
        res = train(keys, progress=main and sys.stderr.isatty(), log=log)
        wall = time.perf_counter() - t
        if not main:
            continue
        write_seed_files(folder, group, res, wall, jax.default_backend())
        print(
            f"{name}: seeds {group[0]}..{group[-1]} ({len(group)}) done in {wall:.0f} s "
            f"on {jax.default_backend()} -> {folder}",
            flush=True,
        )
