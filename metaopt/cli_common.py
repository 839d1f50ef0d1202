"""Shared pieces of every ``metaopt`` subcommand: common flags, device choice and the
one-line error convention (message on stderr, exit code 2, no traceback)."""
from __future__ import annotations

import argparse
import sys

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
