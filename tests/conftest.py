import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(ROOT))


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
