"""Run a program with torch: ``to_rule`` (an :class:`~metaopt.rule.UpdateRule`) and
``to_optimizer`` (a ``torch.optim.Optimizer``).

One step evaluates the statements in order from ``w``, ``g``, ``lr``, ``t`` and the states
(zero at the start); the returned ``update`` is subtracted from ``w`` (``w <- w - update``) and
the states take their final values. Scalars (constants, ``lr``, ``t``, reductions) broadcast;
the update and the states are always broadcast to the parameter's shape, so a state that
became a scalar is a constant tensor at the next step. Tree-level functions (``global_norm``,
``dot``, ...) reduce over the tensor the rule is applied to: one parameter tensor in
:func:`to_optimizer`, the whole flattened parameter vector in the search's fitness.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from metaopt.optimizer import RuleOptimizer
from metaopt.capabilities import Capabilities
from metaopt.rule import UpdateRule

from .functions import FUNCTIONS
from .program import Call, Const, Expr, Program, Var, expr_calls


def step(prog: Program, w: Tensor, g: Tensor, state: dict, lr, t) -> tuple[Tensor, dict]:
    """One application of ``prog``: returns ``(update, new_state)``."""
    like = dict(dtype=w.dtype, device=w.device)
    env: dict[str, Any] = {"w": w, "g": g, "lr": torch.as_tensor(lr, **like),
                           "t": torch.as_tensor(t, **like)}
    env.update({s: state[s] for s in prog.states})
    for st in prog.statements:
        env[st.target] = evaluate(st.expr, env, like)
    update = torch.broadcast_to(env[prog.update], w.shape)
    new_state = {s: torch.broadcast_to(env[s], w.shape) for s in prog.states}
    return update, new_state


def evaluate(e: Expr, env: dict, like: dict, dim=None) -> Tensor:
    """Value of an expression in ``env`` (reductions over ``dim``, see functions.py)."""
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Const):
        return torch.tensor(e.value, **like)
    assert isinstance(e, Call)
    args = [evaluate(a, env, like, dim) for a in e.args]
    return FUNCTIONS[e.fn].fn(*args, dim=dim)


def uses_tree_functions(prog: Program) -> bool:
    """Whether a tree-level function (a reduction over the whole tensor) appears."""
    return any(FUNCTIONS[c.fn].kind != "elementwise"
               for st in prog.statements for c in expr_calls(st.expr))


def _check_lr(hp) -> None:
    lr = hp["lr"]
    if not isinstance(lr, Tensor) and not lr >= 0:
        raise ValueError(f"program: invalid lr={lr}: must be >= 0")


def to_rule(prog: Program, lr: float = 1e-3, name: str = "program") -> UpdateRule:
    """The program as an update rule with one hyperparameter, ``lr`` (``t`` is the step)."""
    states = prog.states

    def init(p: Tensor) -> dict:
        return {s: torch.zeros_like(p) for s in states}

    def update(grad, param, state, hp, t, **_):
        return step(prog, param, grad, state, hp["lr"], t)

    return UpdateRule(name, init, update, hp={"lr": lr}, check=_check_lr,
                      caps=Capabilities(elementwise=not uses_tree_functions(prog)))


def to_optimizer(prog: Program | str, params: Iterable, lr: float = 1e-3, **kw) -> torch.optim.Optimizer:
    """The program (or its text) as a ``torch.optim.Optimizer`` over ``params``."""
    if isinstance(prog, str):
        from .parse import parse

        prog = parse(prog)
    return RuleOptimizer(params, to_rule(prog), lr=lr, **kw)
