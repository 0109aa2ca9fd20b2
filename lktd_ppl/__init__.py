"""lktd_ppl: Langevinized Kalman Temporal Difference on NumPyro-declared state-space models.

The public names are loaded on first use, so ``import lktd_ppl`` (and ``lktd --help``) does not
import JAX.
"""

from importlib import import_module

_EXPORTS = {
    "load_model": "lktd_ppl.api",
    "sample": "lktd_ppl.api",
    "LKTDState": "lktd_ppl.filter",
    "SamplerConfig": "lktd_ppl.filter",
    "lktd": "lktd_ppl.filter",
    "polynomial_schedule": "lktd_ppl.filter",
    "sghmc": "lktd_ppl.samplers",
    "sgld": "lktd_ppl.samplers",
    "STAGE_KEY": "lktd_ppl.ssm",
    "ModelError": "lktd_ppl.ssm",
    "StateSpaceModel": "lktd_ppl.ssm",
    "from_numpyro": "lktd_ppl.ssm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lktd_ppl' has no attribute {name!r}")
