import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the tests and every process they start: a program compiled
# again with the same shapes (by another test, the CLI, a README block) is read back instead.
# The folder is ignored by git, so a fresh clone starts with it empty.
JAX_CACHE = Path(
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache" / "tests"))
)
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  (after JAX_PLATFORMS is set)

jax.config.update("jax_compilation_cache_dir", str(JAX_CACHE))

# A test module may define ``start_background_runs(tmp_path_factory)``: its tests that use the
# ``background_runs`` fixture get what it returned.  In a single process it is called before the
# first test of the session, so subprocess runs it starts go on beside the other tests, and the
# module's tests are ordered last, to wait on them as late as possible.  Under pytest-xdist
# (``-n``, the default in pyproject.toml) a worker does not know in advance which files it will be
# given, so it calls it when the module's first test needs it, and such modules are handed out
# first, so their runs overlap the other worker's files.
BACKGROUND = "background_runs"
IN_WORKER = "PYTEST_XDIST_WORKER" in os.environ


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    late = {item.path for item in items if BACKGROUND in getattr(item, "fixturenames", ())}
    # a stable sort: the order is kept otherwise
    items[:] = sorted(items, key=lambda item: (item.path in late) != IN_WORKER)


@pytest.fixture(scope="session", autouse=True)
def _background_starts(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[dict]:
    started = {}
    for item in [] if IN_WORKER else request.session.items:
        module = getattr(item, "module", None)
        if BACKGROUND in getattr(item, "fixturenames", ()) and module not in started:
            started[module] = module.start_background_runs(tmp_path_factory)
    yield started


@pytest.fixture(scope="module")
def background_runs(request: pytest.FixtureRequest, _background_starts: dict, tmp_path_factory):
    """What this module's ``start_background_runs`` returned (called at the start of the session,
    or, in an xdist worker, now)."""
    module = request.module
    if module not in _background_starts:
        _background_starts[module] = module.start_background_runs(tmp_path_factory)
    return _background_starts[module]


def rel_frobenius(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def draws(dt, name: str) -> np.ndarray:
    """Samples of a posterior variable as (chain * draw, ...)."""
    v = dt.posterior[name].values
    return v.reshape(-1, *v.shape[2:])


@pytest.fixture(scope="session")
def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    theta = np.array([1.0, -2.0, 0.5], np.float32)
    y = (x @ theta + rng.normal(size=200)).astype(np.float32)
    return {"x": x, "y": y}
