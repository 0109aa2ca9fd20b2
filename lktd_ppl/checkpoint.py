"""Resumable checkpoints: save a run's pytrees (PRNG keys included) and read them back bitwise.

A checkpoint is one ``.npz`` file: every leaf of every named pytree as an array named
``NAME/PATH`` (PRNG keys as their raw key data, :func:`jax.random.key_data`), and ``meta``, a JSON
string (the step reached, the config, the package versions).  It is written atomically: into a
temporary file in the same folder, then renamed over the old one (``os.replace``), so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn file.

:class:`Checkpointer` is what a harness's ``train`` loop calls between its jitted chunks: it saves
when the interval is due, and when SIGTERM or SIGINT (Ctrl-C) arrived since the last call it saves
and raises :class:`Interrupted`.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

META = "meta"


class Interrupted(Exception):  # noqa: N818 (a stop the user asked for, not an error)
    """A run stopped by a signal after saving its checkpoint."""

    def __init__(self, signum: int, step: int, total: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step:,} of {total:,}")
        self.signum, self.step, self.total = signum, step, total


def _is_key(leaf: Any) -> bool:
    import jax

    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _leaf_names(tree: Any) -> tuple[list[str], Any]:
    import jax

    paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) or "." for p, _ in paths], treedef


def flatten(name: str, tree: Any) -> dict[str, np.ndarray]:
    """``{NAME/PATH: array}`` for every leaf of ``tree`` (keys as their key data)."""
    import jax

    leaves = jax.tree.leaves(jax.device_get(tree))
    names, _ = _leaf_names(tree)
    out = {}
    for path, leaf in zip(names, leaves, strict=True):
        out[f"{name}/{path}"] = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
    return out


def unflatten(name: str, arrays: Any, template: Any) -> Any:
    """The pytree ``name`` read from ``arrays`` in the structure of ``template``; a leaf that is
    a PRNG key in ``template`` is rebuilt with the template key's implementation.  Shapes come
    from ``arrays`` (outputs collected so far may be longer than the template's)."""
    import jax

    names, treedef = _leaf_names(template)
    leaves = []
    for path, like in zip(names, jax.tree.leaves(template), strict=True):
        key = f"{name}/{path}"
        if key not in arrays:
            raise ValueError(f"checkpoint: {key} is missing (saved by another version?)")
        data = np.asarray(arrays[key])
        if _is_key(like):
            data = jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
        leaves.append(data)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private; the others' are not
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(path: Path, trees: dict[str, Any], meta: dict) -> None:
    """Write the pytrees ``trees`` and the JSON-able ``meta`` to ``path`` atomically."""
    arrays = {META: np.array(json.dumps(meta))}
    for name, tree in trees.items():
        arrays.update(flatten(name, tree))
    write_atomic(path, lambda f: np.savez(f, **arrays))


def read_meta(path: Path) -> dict:
    """The ``meta`` dict of the checkpoint at ``path``."""
    with np.load(path) as data:
        return json.loads(str(data[META]))


def load(path: Path, templates: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """The pytrees named in ``templates`` (rebuilt in their structure) and the ``meta`` dict."""
    with np.load(path) as data:
        meta = json.loads(str(data[META]))
        arrays = {k: data[k] for k in data.files}
    return {name: unflatten(name, arrays, t) for name, t in templates.items()}, meta


@dataclass
class Checkpointer:
    """Between a harness's chunk calls: save the run to ``path`` every ``every_seconds`` seconds
    (0: after every call), and on SIGTERM / SIGINT save and raise :class:`Interrupted`.

    ``meta``: what every save records besides the step (config, versions); ``on_save(partial)``
    (optional) gets the harness's results so far after each save (the run folder writes its
    metrics from them); ``resume``: read the checkpoint at ``path`` back before training."""

    path: Path
    every_seconds: float = 60.0
    meta: dict = field(default_factory=dict)
    on_save: Callable[[dict], None] | None = None
    resume: bool = False
    stop_signal: int | None = None
    saves: int = 0
    save_seconds: float = 0.0  # time spent saving (the checkpoint's cost)
    _last: float = field(default_factory=time.monotonic)

    def restore(self, templates: dict[str, Any]) -> tuple[dict[str, Any], dict] | None:
        """The saved pytrees and meta when resuming, else None."""
        if not self.resume:
            return None
        return load(self.path, templates)

    def saved_meta(self) -> dict | None:
        """The saved meta when resuming, else None."""
        return read_meta(self.path) if self.resume else None

    def after_call(
        self,
        step: int,
        total: int,
        trees: Callable[[], dict[str, Any]],
        partial: Callable[[], dict] | None = None,
        extra: dict | None = None,
    ) -> None:
        """Save if due (``trees()`` gives the pytrees, ``extra`` more meta); raise
        :class:`Interrupted` after saving if a stop was asked for."""
        if step >= total:  # done: the run folder is written next, whatever was asked
            return
        if self.stop_signal is not None or time.monotonic() - self._last >= self.every_seconds:
            t0 = time.perf_counter()
            save(self.path, trees(), {**self.meta, **(extra or {}), "step": step})
            if self.on_save is not None and partial is not None:
                self.on_save(partial())
            self.saves += 1
            self.save_seconds += time.perf_counter() - t0
            self._last = time.monotonic()
        if self.stop_signal is not None:
            raise Interrupted(self.stop_signal, step, total)

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask for a stop at the next call boundary (a second one of them
        acts at once, as usual) while inside; handlers are restored on exit.  Outside the main
        thread signals cannot be caught: nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:  # asked twice: stop now
                signal.signal(signum, old[signum])
                signal.raise_signal(signum)
                return
            self.stop_signal = signum

        try:
            for s in old:
                signal.signal(s, handler)
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
