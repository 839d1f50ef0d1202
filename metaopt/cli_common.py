"""Shared pieces of every ``metaopt`` subcommand: common flags, device choice and the
one-line error convention (message on stderr, exit code 2, no traceback)."""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import sys
from pathlib import Path

import torch


class UsageError(ValueError):
    """Bad user input; the CLI prints its message on one line and exits with code 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``metaopt: error: ...``) and exit 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--device`` (auto: cuda when present), ``--seed``, ``--out``."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default=None, help="output folder")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unusable device is a :class:`UsageError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"invalid --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"invalid --device {name!r}; use auto, cpu, cuda or cuda:N")
    return dev


def fail(message: str) -> int:
    """Print ``metaopt: error: message`` on one line to stderr and return exit code 2."""
    print(f"metaopt: error: {message}", file=sys.stderr)
    return 2


def int_at_least(low: int):
    """An argparse ``type``: an integer ``>= low``, else a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def float_at_least(low: float):
    """An argparse ``type``: a number ``>= low`` (not nan), else a one-line usage error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number >= {low:g}, got {text!r}") from None
        if not value >= low:
            raise argparse.ArgumentTypeError(f"expected a number >= {low:g}, got {text!r}")
        return value

    return parse


# ---- tasks from the command line: --task NAME|pkg.mod:factory and --task-opt KEY=VALUE ----

TASK_HELP = ("a task name (see 'metaopt tasks') or an importable factory returning a task, "
             "pkg.module:factory")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def add_task_flags(parser: argparse.ArgumentParser, *, default: str | None = None,
                   help: str = TASK_HELP) -> None:
    """``--task NAME|pkg.module:factory`` and repeatable ``--task-opt KEY=VALUE``."""
    parser.add_argument("--task", default=default, required=default is None,
                        metavar="NAME|pkg.mod:factory",
                        help=help + ("" if default is None else f" (default: {default})"))
    parser.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a task option, e.g. width=64 (repeatable; 'metaopt tasks' lists "
                             "each task's options)")


def parse_value(text: str, default=inspect.Parameter.empty):
    """A ``--task-opt`` value: converted to the type of the option's ``default`` when it has one
    (int, float, bool, str, torch dtype), else ``true``/``false`` -> bool, then int, float, and
    the text itself. Never evaluated."""
    text = text.strip()
    low = text.lower()
    if isinstance(default, bool) or (default is inspect.Parameter.empty and
                                     low in ("true", "false")):
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return low in ("true", "1", "yes")
    if isinstance(default, torch.dtype) or (default is inspect.Parameter.empty and low in _DTYPES):
        if low not in _DTYPES:
            raise ValueError(f"expected one of {', '.join(_DTYPES)}, got {text!r}")
        return _DTYPES[low]
    if isinstance(default, str):
        return text
    kinds = (int,) if isinstance(default, int) else (float,) if isinstance(default, float) \
        else (int, float)
    for kind in kinds:
        try:
            return kind(text)
        except ValueError:
            pass
    if default is inspect.Parameter.empty or default is None:
        return text
    raise ValueError(f"expected {'an integer' if kinds == (int,) else 'a number'}, got {text!r}")


def parse_task_opts(spec: str, items: list[str]) -> dict:
    """``["width=64", "param=mup"]`` -> options of task ``spec``, each checked to be one of its
    options and converted to its default's type; a one-line :class:`UsageError` otherwise."""
    from . import tasks

    try:
        allowed = tasks.options(spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    shown = sorted(k for k in allowed if k not in ("**", "device"))
    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(f"--task-opt {item!r}: expected KEY=VALUE, e.g. width=64")
        if key == "device":
            raise UsageError("--task-opt device=...: use --device instead")
        if key not in allowed and "**" not in allowed:
            raise UsageError(f"--task-opt {key}: task {spec!r} has no option {key!r}; its "
                             f"options: {', '.join(shown) or '(none)'}")
        if key in opts:
            raise UsageError(f"--task-opt {key} given twice")
        try:
            opts[key] = parse_value(value, allowed.get(key, inspect.Parameter.empty))
        except ValueError as e:
            raise UsageError(f"--task-opt {key}={value}: {e}") from None
    return opts


def task_from_args(args: argparse.Namespace, device) -> "object":
    """The task of ``--task`` with the options of ``--task-opt``, built on ``device``."""
    return build_task(args.task, args.task_opt, device)


def build_task(spec: str, items: list[str], device):
    """Task ``spec`` with ``--task-opt`` ``items`` on ``device`` (passed when the task takes
    one); every failure is a one-line :class:`UsageError`."""
    from . import tasks

    opts = parse_task_opts(spec, items)
    allowed = tasks.options(spec)
    if "device" in allowed or "**" in allowed:
        opts["device"] = device
    try:
        return tasks.get(spec, **opts)
    except ValueError as e:
        raise UsageError(" ".join(str(e).split())) from None


# ---- output folders ----

def check_out_dir(path: str | os.PathLike, *, resume: bool, marker: str,
                  flag: str = "--out") -> Path:
    """Check that ``path`` can hold a run, creating nothing: a one-line :class:`UsageError` when
    it (or a parent) is a file, is not writable, or already holds a run (its ``marker`` file
    exists) and ``resume`` is false. Returns the path."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a folder (it is created if missing)")
    if out.is_dir() and (out / marker).exists() and not resume:
        raise UsageError(f"{flag} {path} already holds a run ({marker}); pass --resume to "
                         f"continue it or choose another {flag}")
    probe = out.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {probe} (permission denied)")
    return out


# ---- the entry point of every subcommand ----

def cli_entry(main=None, *, what: str | None = None):
    """Wrap a subcommand's ``main(argv) -> int``: usage errors (``ValueError``, including
    :class:`UsageError`) become one line and exit 2, argparse's exits pass through, and Ctrl-C
    prints ``metaopt: interrupted: <what>; rerun with --resume`` with no traceback and exits
    130. Use as ``@cli_entry`` or ``@cli_entry(what="meta-training")``."""

    def wrap(fn):
        label = what or fn.__module__.split(".")[0]

        @functools.wraps(fn)
        def run(argv=None) -> int:
            try:
                code = fn(argv)
            except SystemExit as e:
                return e.code if isinstance(e.code, int) else (0 if e.code is None
                                                               else fail(str(e.code)))
            except ValueError as e:
                return fail(" ".join(str(e).split()))
            except KeyboardInterrupt:
                print(f"metaopt: interrupted: {label}; rerun the same command with --resume "
                      "to continue", file=sys.stderr)
                return 130
            return 0 if code is None else int(code)

        return run

    return wrap if main is None else wrap(main)
