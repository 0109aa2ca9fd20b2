"""lktd_ppl: Langevinized Kalman Temporal Difference on NumPyro-declared state-space models."""

from lktd_ppl.api import load_model, sample
from lktd_ppl.filter import LKTDState, SamplerConfig, lktd, polynomial_schedule
from lktd_ppl.samplers import sghmc, sgld
from lktd_ppl.ssm import STAGE_KEY, ModelError, StateSpaceModel, from_numpyro

__all__ = [
    "STAGE_KEY",
    "LKTDState",
    "ModelError",
    "SamplerConfig",
    "StateSpaceModel",
    "from_numpyro",
    "lktd",
    "load_model",
    "polynomial_schedule",
    "sample",
    "sghmc",
    "sgld",
]
