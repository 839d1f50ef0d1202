"""Load a found program with its tuned lr, and export it as a standalone Python file.

    found = search.load("runs/f")            # a run folder, its best.json, or a program file
    opt = found.optimizer(model.parameters())  # the tuned lr unless lr= is given
    search.export("runs/f")                  # runs/f/export/optimizer.py + program.txt

The exported ``optimizer.py`` defines ``FoundOptimizer(torch.optim.Optimizer)`` with no
metaopt import: the program's statements become Python lines over torch tensors, each function
of the language a small helper (:data:`TEMPLATES`, one line each, reductions over the whole
tensor as :func:`search.to_optimizer` does). Program names are prefixed ``v_`` and the file's
own names start with ``_``, which program names cannot, so nothing collides. The program is
printed from its parsed form, never copied as text, so nothing in a program file reaches the
exported code except names and numbers the parser accepted.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from metaopt.helpers import write_atomic

from .parse import parse
from .program import Call, Const, Expr, Program, Var, expr_calls

#: Each function of the language as one torch expression of its arguments {0}, {1}, {2}
#: (tensors); must equal search.functions.FUNCTIONS[name].fn(..., dim=None) (tested).
TEMPLATES = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "max": "torch.maximum({0}, {1})", "min": "torch.minimum({0}, {1})",
    "interp": "(1 - {2}) * {0} + {2} * {1}",
    "clip": "torch.maximum(torch.minimum({0}, {1}.abs()), -{1}.abs())",
    "power": "{0}.abs().pow({1})",
    "global_norm": "({0} * {0}).sum().sqrt()",
    "dot": "({0} * {1}).sum()",
    "cosine_sim": "({0} * {1}).sum() / (({0} * {0}).sum().sqrt() * ({1} * {1}).sum().sqrt() + _EPS)",
    "clip_by_global_norm": "{0} * torch.clamp({1}.abs() / (({0} * {0}).sum().sqrt() + _EPS), max=1.0)",
    "abs": "{0}.abs()", "sign": "torch.sign({0})", "square": "torch.square({0})",
    "cube": "{0} * {0} * {0}", "sqrt": "{0}.abs().sqrt()", "rsqrt": "{0}.abs().rsqrt()",
    "exp": "torch.exp({0})", "exp2": "torch.exp2({0})", "expm1": "torch.expm1({0})",
    "log": "{0}.abs().log()", "log2": "{0}.abs().log2()", "log10": "{0}.abs().log10()",
    "log1p": "{0}.abs().log1p()", "reciprocal": "torch.reciprocal({0})", "neg": "torch.neg({0})",
    "sin": "torch.sin({0})", "cos": "torch.cos({0})", "tan": "torch.tan({0})",
    "arcsin": "torch.asin({0})", "arccos": "torch.acos({0})", "arctan": "torch.atan({0})",
    "sinh": "torch.sinh({0})", "cosh": "torch.cosh({0})", "tanh": "torch.tanh({0})",
    "arcsinh": "torch.asinh({0})", "arccosh": "torch.acosh({0})", "arctanh": "torch.atanh({0})",
    "sigmoid": "torch.sigmoid({0})", "relu": "torch.relu({0})", "erf": "torch.erf({0})",
}
_ARGS = "abc"


@dataclass
class Found:
    """A found program and its tuned lr (``None`` when unknown)."""

    program: Program
    lr: float | None = None
    task_lrs: list | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def optimizer(self, params, lr: float | None = None, **kw):
        """A ready ``torch.optim.Optimizer`` over ``params`` at ``lr`` (default: the tuned lr)."""
        from .interpret import to_optimizer

        lr = self.lr if lr is None else lr
        if lr is None:
            raise ValueError(f"{self.source}: no tuned lr is stored with this program; pass lr=")
        return to_optimizer(self.program, params, lr=lr, **kw)


def load(path: str) -> Found:
    """A run folder (its ``best.json``), a ``best.json`` or a program text file -> :class:`Found`.
    Unreadable or invalid files are one-line ``ValueError``s naming the file."""
    if os.path.isdir(path):
        path = os.path.join(path, "best.json")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1_000_000)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path!r}: {err.__class__.__name__}; give a search run "
                         "folder, its best.json or a program file") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
            prog_text, lr, task_lrs = data["text"], data.get("lr"), data.get("task_lrs")
            if not isinstance(prog_text, str) or not (lr is None or isinstance(lr, (int, float))):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}: not a best.json written by metaopt search (needs "
                             "'text' and a numeric 'lr')") from None
    else:
        prog_text, lr, task_lrs = text, None, None
    try:
        prog = parse(prog_text)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if lr is not None and not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{path}: lr {lr!r} must be a finite number >= 0")
    return Found(prog, None if lr is None else float(lr), task_lrs, path)


def _expr_source(e: Expr) -> str:
    if isinstance(e, Var):
        return f"v_{e.name}"
    if isinstance(e, Const):
        return f"_c({float(e.value)!r})"
    return f"_f_{e.fn}({', '.join(_expr_source(a) for a in e.args)})"


def helper_source(name: str) -> str:
    from .functions import FUNCTIONS

    args = list(_ARGS[:FUNCTIONS[name].arity])
    return f"def _f_{name}({', '.join(args)}):\n    return {TEMPLATES[name].format(*args)}\n"


def standalone_source(prog: Program, lr: float | None, class_name: str = "FoundOptimizer") -> str:
    """Python source of a ``torch.optim.Optimizer`` subclass running ``prog`` (no metaopt)."""
    used = sorted({c.fn for st in prog.statements for c in expr_calls(st.expr)})
    states = list(prog.states)
    body = [f"                v_{st.target} = {_expr_source(st.expr)}" for st in prog.statements]
    default = "" if lr is None else f"={float(lr)!r}"
    lines = [
        '"""A found optimizer update rule, exported by metaopt search (standalone: torch only).',
        "",
        "Program (w: parameter, g: gradient, lr, t: step from 1; states start at zero;",
        "w <- w - update):",
        "",
        *["    " + ln for ln in prog.to_text().rstrip().splitlines()],
        '"""',
        "import torch",
        "",
        "_EPS = 1e-08",
        "_STATES = " + repr(tuple(states)),
        "",
        "",
        *[helper_source(n) + "\n" for n in used],
        "",
        f"class {class_name}(torch.optim.Optimizer):",
        '    """The program above as an optimizer; ``lr`` defaults to the lr tuned in the search."""',
        "",
        f"    def __init__(self, params, lr{default}):",
        "        if not lr >= 0:",
        "            raise ValueError(f'invalid lr={lr}: must be >= 0')",
        "        super().__init__(params, dict(lr=lr))",
        "",
        "    @torch.no_grad()",
        "    def step(self, closure=None):",
        "        _loss = None",
        "        if closure is not None:",
        "            with torch.enable_grad():",
        "                _loss = closure()",
        "        for _group in self.param_groups:",
        "            for _p in _group['params']:",
        "                if _p.grad is None:",
        "                    continue",
        "                _st = self.state[_p]",
        "                if not _st:",
        "                    _st['step'] = 0",
        "                    for _name in _STATES:",
        "                        _st[_name] = torch.zeros_like(_p)",
        "                _st['step'] += 1",
        "                _like = dict(dtype=_p.dtype, device=_p.device)",
        "",
        "                def _c(value, _like=_like):",
        "                    return torch.tensor(value, **_like)",
        "",
        "                v_w, v_g = _p.detach().clone(), _p.grad",
        "                v_lr, v_t = _c(_group['lr']), _c(float(_st['step']))",
        *[f"                v_{s} = _st[{s!r}]" for s in states],
        *body,
        f"                _p.sub_(torch.broadcast_to(v_{prog.update}, _p.shape))",
        *[f"                _st[{s!r}] = torch.broadcast_to(v_{s}, _p.shape).clone()" for s in states],
        "        return _loss",
        "",
    ]
    return "\n".join(lines)


def export(run_dir: str, which: str = "best", out: str | None = None) -> str:
    """Write ``optimizer.py`` (standalone) and ``program.txt`` for a run's ``which`` program
    (``best``: best.json with its tuned lr; ``simplified``/``validated``: those files, lr
    untuned) into ``out`` (default ``run_dir/export``). Returns the optimizer.py path."""
    files = {"best": "best.json", "simplified": "best_simplified.txt", "validated": "validated.txt"}
    if which not in files:
        raise ValueError(f"unknown program {which!r}; choose one of {sorted(files)}")
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir!r} is not a search run folder (metaopt search --out DIR)")
    found = load(os.path.join(run_dir, files[which]))
    out = out or os.path.join(run_dir, "export")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file; give a folder")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "optimizer.py")
    write_atomic(path, standalone_source(found.program, found.lr))
    write_atomic(os.path.join(out, "program.txt"), found.program.to_text())
    return path


def main(argv=None) -> int:
    """``metaopt export DIR [--which best|simplified|validated] [--out FOLDER]``."""
    from metaopt.cli_common import Parser, fail

    p = Parser(prog="metaopt export", description="Export a found program as a standalone "
               "torch.optim.Optimizer file (no metaopt import).")
    p.add_argument("dir", help="a metaopt search --out folder")
    p.add_argument("--which", default="best", help="best (default, with its tuned lr) | simplified | validated")
    p.add_argument("--out", default=None, help="output folder (default DIR/export)")
    args = p.parse_args(argv)
    try:
        path = export(args.dir, args.which, args.out)
    except ValueError as err:
        return fail(str(err).splitlines()[0])
    print(f"wrote {path} (class FoundOptimizer) and program.txt")
    return 0
