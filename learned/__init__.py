"""Learned optimizers: μLO (per-parameter MLP under μP), the L2O structures, meta-training."""
from metaopt.params import ParamInfo, infer_param_info

from .base import LOpt
from .hub import model_card, pretrained, pretrained_lopt
from .meta_report import report
from .meta_train import meta_train
from .mlp_lopt import MLPLOpt, adam_like_theta, sgd_theta
from .optimizer import LearnedOptimizer
from .sgdm_lopt import SGDMLOpt
from .task_family import SingleTask, TaskChoice, TaskFamily
from .theta_io import load, load_lopt, load_theta, save_theta
from .l2o import *  # noqa: F401,F403
from .l2o import __all__ as _l2o_all

__all__ = ["report", "LOpt", "LearnedOptimizer", "MLPLOpt", "ParamInfo", "SGDMLOpt", "SingleTask",
           "TaskChoice", "TaskFamily", "adam_like_theta", "infer_param_info", "load",
           "load_lopt", "load_theta", "meta_train", "model_card", "pretrained", "pretrained_lopt",
           "save_theta", "sgd_theta", *_l2o_all]
