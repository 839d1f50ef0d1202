"""The task suite: functional, vmappable training problems on generated or shipped data.

    tasks.names()                       # every task id
    task = tasks.get("mlp_digits", width=128, param="mup")

Every module in this package registers its tasks on import.
"""
from .._autoload import import_submodules
from .base import ROLES, ParamInfo, Task
from .registry import get, names, register

import_submodules(__name__, __path__)

__all__ = ["ParamInfo", "ROLES", "Task", "get", "names", "register"]
