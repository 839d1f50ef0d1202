"""The task suite: functional, vmappable training problems on generated or shipped data.

    tasks.names()                       # every task id
    task = tasks.get("mlp_digits", width=128, param="mup")
    task = tasks.from_module(lambda: MyNet(), (x, y), F.cross_entropy, batch_size=32)

Every module in this package registers its tasks on import.
"""
from .._autoload import import_submodules
from ..params import ROLES, ParamInfo, infer_param_info
from .base import Task
from .module_task import ModuleTask, from_module
from .registry import doc, factory, get, names, options, register

import_submodules(__name__, __path__)

__all__ = ["ModuleTask", "ParamInfo", "ROLES", "Task", "doc", "factory", "from_module", "get",
           "infer_param_info", "names", "options", "register"]
