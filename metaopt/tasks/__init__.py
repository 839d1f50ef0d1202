"""The task suite: functional, vmappable training problems on generated or shipped data.

    tasks.names()                       # every task id
    task = tasks.get("mlp_digits", width=128, param="mup")
"""
from . import quadratic  # noqa: F401  (registers the tasks)
from .base import ROLES, ParamInfo, Task
from .registry import get, names, register

__all__ = ["ParamInfo", "ROLES", "Task", "get", "names", "register"]
