"""The persistent compilation cache of command-line runs.

XLA's compiled programs are kept in a folder, so a run whose programs were compiled before (the
same settings and shapes: a rerun, the next seed batch of a study, the same preset on another
day) reads them back instead of compiling again.  ``lktd`` commands turn it on; the folder is,
in order: ``JAX_COMPILATION_CACHE_DIR`` if set (JAX's own variable), else ``LKTD_COMPILATION_CACHE``,
else ``$XDG_CACHE_HOME/lktd_ppl/jax`` (``~/.cache/lktd_ppl/jax``).  ``LKTD_COMPILATION_CACHE=off``
turns it off.  The cache changes no number: a program read back is the one compiled.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "LKTD_COMPILATION_CACHE"
JAX_ENV_CACHE = "JAX_COMPILATION_CACHE_DIR"
OFF = ("off", "0", "none", "false")


def cache_folder() -> Path | None:
    """Where the cache goes, or None when it is off (see the module's docstring)."""
    if os.environ.get(JAX_ENV_CACHE):
        return Path(os.environ[JAX_ENV_CACHE])
    chosen = os.environ.get(ENV_CACHE, "").strip()
    if chosen.lower() in OFF and chosen:
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lktd_ppl" / "jax"


def enable() -> Path | None:
    """Turn the cache on in this process (before its first compilation) and return its folder;
    None if it is off or the folder cannot be made (then runs compile as without it)."""
    folder = cache_folder()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    # every program, the setup's small ones included: reading one back costs less than
    # compiling it
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
