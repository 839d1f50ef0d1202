"""Learned optimizers: μLO (per-parameter MLP under μP), the L2O structures, meta-training."""
from .base import LOpt
from .meta_train import meta_train
from .mlp_lopt import MLPLOpt, adam_like_theta, sgd_theta
from .optimizer import LearnedOptimizer
from .sgdm_lopt import SGDMLOpt
from .task_family import SingleTask, TaskChoice, TaskFamily
from .theta_io import load_theta, save_theta
from .l2o import *  # noqa: F401,F403
from .l2o import __all__ as _l2o_all

__all__ = ["LOpt", "LearnedOptimizer", "MLPLOpt", "SGDMLOpt", "SingleTask", "TaskChoice",
           "TaskFamily", "adam_like_theta", "load_theta", "meta_train", "save_theta", "sgd_theta",
           *_l2o_all]
