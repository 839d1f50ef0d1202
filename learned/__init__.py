"""Learned optimizers: μLO (per-parameter MLP under μP), the L2O structures, meta-training."""
from .base import LOpt
from .l2o import *  # noqa: F401,F403
from .l2o import __all__ as _l2o_all

__all__ = ["LOpt", *_l2o_all]
