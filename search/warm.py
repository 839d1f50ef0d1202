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

#: the constants of :data:`ADAMW` that the ``adamw_tuned`` baseline tunes (with the lr): the
#: first-moment decay and the weight decay. Earlier searches' gains were reproduced by AdamW
#: with a shorter first-moment memory (beta1 0.38-0.55) and no weight decay, a change of
#: constants, not a new rule; against this baseline such a program scores about 0 (the
#: baseline sets the zero of the score; it does not change which program ranks first).
ADAMW_TUNED_BETA1 = (0.5, 0.7, 0.9)
ADAMW_TUNED_WD = (0.0, 0.01)


def adamw_text(beta1: float = 0.9, weight_decay: float = 0.01) -> str:
    """:data:`ADAMW` with first-moment decay ``beta1`` and weight decay ``weight_decay`` (0:
    the statement is left out)."""
    text = ADAMW.replace("interp(g, m, 0.9)", f"interp(g, m, {beta1!r})")
    if weight_decay == 0:
        return text.replace("    update = update + w * 0.01\n", "")
    return text.replace("w * 0.01", f"w * {weight_decay!r}")


#: baseline name -> the programs whose best (per task, each with its lr tuned) normalises a
#: family's fitness (:class:`search.family.Family`)
BASELINES = {
    "adamw": (ADAMW,),
    "adamw_tuned": tuple(adamw_text(b, wd) for b in ADAMW_TUNED_BETA1 for wd in ADAMW_TUNED_WD),
}


def check_baseline(name: str) -> None:
    """A one-line ``ValueError`` unless ``name`` is in :data:`BASELINES`."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")


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
