"""Task registry: ``tasks.get(spec, **options)``, ``tasks.names()``, ``tasks.options(spec)``.

A task *spec* is one of

* a registered name (``"mlp_digits"``);
* a name another package registers through the ``metaopt.tasks`` entry-point group
  (``[project.entry-points."metaopt.tasks"] mytask = "mypkg.tasks:make_task"``), loaded only when
  that name is asked for (as pytest and Optuna load their plugins);
* ``"pkg.module:factory"``: an importable callable returning a :class:`~metaopt.tasks.Task`.

Options are the factory's keyword arguments; unknown ones are a one-line ``ValueError``.
"""
from __future__ import annotations

import importlib
import inspect
import re
from importlib import metadata
from typing import Any, Callable

from .base import Task

ENTRY_POINT_GROUP = "metaopt.tasks"
_TASKS: dict[str, Callable[..., Task]] = {}
_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
#: options every task takes and the CLI sets itself (``--device``)
RUNTIME_OPTIONS = ("device", "dtype")


def register(name: str) -> Callable:
    """Decorator registering a task class (or factory) under ``name``."""

    def deco(factory):
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = factory
        return factory

    return deco


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every registered task and every task offered through entry points, sorted."""
    return sorted(set(_TASKS) | set(_entry_points()))


def builtin_names() -> list[str]:
    """The tasks registered by modules already imported (no plugin is loaded)."""
    return sorted(_TASKS)


def factory(spec: str) -> Callable[..., Task]:
    """The callable that builds ``spec`` (a name or ``pkg.module:factory``)."""
    if not isinstance(spec, str):
        raise ValueError(f"a task is a name or 'pkg.module:factory', got {spec!r}")
    if spec in _TASKS:
        return _TASKS[spec]
    if ":" in spec:
        return _import_factory(spec)
    eps = _entry_points()
    if spec in eps:
        _TASKS[spec] = _load(eps[spec].value, lambda: eps[spec].load(),
                             f"entry point {spec!r} ({ENTRY_POINT_GROUP})")
        return _TASKS[spec]
    raise ValueError(f"unknown task {spec!r}; choose one of: {', '.join(names())}, "
                     "or give an importable factory as pkg.module:factory")


def _import_factory(spec: str) -> Callable[..., Task]:
    if not _SPEC.fullmatch(spec):
        raise ValueError(f"task {spec!r}: expected a task name or pkg.module:factory "
                         "(a Python module path, a colon, a callable's name)")
    module_name, _, attr = spec.partition(":")

    def load():
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    return _load(spec, load, f"task factory {spec!r}")


def _load(spec: str, load: Callable[[], Any], what: str) -> Callable[..., Task]:
    try:
        obj = load()
    except ModuleNotFoundError as e:
        raise ValueError(f"{what}: cannot import {e.name!r} (is it on PYTHONPATH?)") from None
    except AttributeError as e:
        raise ValueError(f"{what}: not found ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - any import-time error of user code is one line
        raise ValueError(f"{what}: importing it failed: {type(e).__name__}: "
                         f"{_first_line(e)}") from None
    if not callable(obj):
        raise ValueError(f"{what} is a {type(obj).__name__}, not a callable returning a Task")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def options(spec: str) -> dict[str, Any]:
    """The options ``spec`` takes and their defaults (``inspect.Parameter.empty`` when
    required); a factory taking ``**kwargs`` adds the key ``"**"``."""
    params = _signature(spec).parameters
    out = {k: p.default for k, p in params.items()
           if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        out["**"] = inspect.Parameter.empty
    return out


def _signature(spec: str) -> inspect.Signature:
    make = factory(spec)
    try:
        return inspect.signature(make)
    except (TypeError, ValueError):  # a callable without a signature takes anything
        return inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])


def doc(spec: str) -> str:
    """The first sentence of the task's docstring (its class or factory, else its module)."""
    f = factory(spec)
    text = inspect.getdoc(f) or inspect.getdoc(inspect.getmodule(f)) or ""
    first = " ".join(text.strip().split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".") if first else ""


def get(spec: str, **kw: Any) -> Task:
    """Build the task ``spec``; unknown specs and options are one-line ``ValueError``s, and so
    is a plugin factory that fails or returns something that is not a task."""
    make = factory(spec)
    opts = options(spec)
    if "**" not in opts:
        unknown = sorted(k for k in kw if k not in opts)
        if unknown:
            raise ValueError(f"task {spec!r}: unknown option(s) {unknown}; allowed: "
                             f"{sorted(opts)}")
    if getattr(make, "__module__", "").startswith("metaopt."):
        return make(**kw)  # built-in: its own checks raise one-line ValueErrors
    return _call_plugin(spec, make, kw)


def _call_plugin(spec: str, make: Callable[..., Task], kw: dict) -> Task:
    try:
        task = make(**kw)
    except Exception as e:  # noqa: BLE001 - third-party code: report, don't dump a traceback
        raise ValueError(f"task {spec!r} failed to build: {type(e).__name__}: "
                         f"{_first_line(e)}") from None
    missing = [m for m in ("init", "loss", "sample_batch", "evaluate", "param_info")
               if not hasattr(task, m)]
    if missing:
        raise ValueError(f"task {spec!r} returned a {type(task).__name__}, not a task "
                         f"(missing {', '.join(missing)}); return a metaopt.tasks.Task")
    return task
