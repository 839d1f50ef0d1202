"""Warm-start programs: the population starts as copies of one program (Chen et al. 2023 start
from AdamW). ``adamw`` is the paper's initial program (with ``eps``, no bias correction, the
constant lr factor left to the lr grid); ``sgd`` keeps two unused state slots for the search
to discover momentum and second moments; ``random`` draws a random valid program; anything
else is a path to a program file."""
from __future__ import annotations

import random

from .mutate import random_program
from .parse import parse
from .program import Program

ADAMW = """def train(w, g, m, v, lr):
    g2 = square(g)
    m = interp(g, m, 0.9)
    v = interp(g2, v, 0.999)
    update = m / (sqrt(v) + eps)
    update = update + w * 0.01
    update = update * lr
    return update, m, v
"""

SGD = """def train(w, g, m, v, lr):
    update = g * lr
    return update, m, v
"""

NAMED = ("adamw", "sgd", "random")


def warm_start(spec: str | Program, seed: int = 0) -> Program:
    """The start program for ``spec`` (a Program, a name in :data:`NAMED`, or a file path).
    An unreadable or invalid file is a one-line ``ValueError``."""
    if isinstance(spec, Program):
        return spec
    if spec == "adamw":
        return parse(ADAMW)
    if spec == "sgd":
        return parse(SGD)
    if spec == "random":
        return random_program(random.Random(seed))
    try:
        with open(spec, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read warm-start file {spec!r}: {err.__class__.__name__}; "
                         f"use {', '.join(NAMED)} or a readable program file") from None
    try:
        return parse(text)
    except ValueError as err:
        raise ValueError(f"warm-start file {spec!r}: {err}") from None
