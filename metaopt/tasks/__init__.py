"""The task suite: functional, vmappable training problems on generated or shipped data.

    tasks.names()                       # every task id
    task = tasks.get("mlp_digits", width=128, param="mup")

Every module in this package registers its tasks on import.
"""
from .._autoload import import_submodules
from ..params import ROLES, ParamInfo, infer_param_info
from .base import Task
from .registry import doc, factory, get, names, options, register

import_submodules(__name__, __path__)

__all__ = ["ParamInfo", "ROLES", "Task", "doc", "factory", "get", "infer_param_info", "names",
           "options", "register"]
