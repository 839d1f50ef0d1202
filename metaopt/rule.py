"""The update-rule spine: one interface shared by the zoo, searched programs, learned
optimizers and bilevel code.

An update rule is a pure, per-tensor function

    init(param)                                  -> state      (dict of tensors)
    update(grad, param, state, hp, step, **ext)  -> (delta, new_state)

and the new parameter is ``param - delta``. ``hp`` is a mapping of hyperparameters (floats,
or 0-d tensors when they are to be differentiated or vmapped), ``step`` is the 1-based count
of this update (an int or a 0-d tensor). ``ext`` carries the extra inputs (the loss, Hessian-
vector products, per-layer statistics, a sum over all tensors) that a rule declares in its
optional capabilities, the one field ``caps`` (a :class:`metaopt.capabilities.Capabilities`:
``needs``, ``fused``, ``elementwise``, ``reduce``, ``predict``, each documented there).

Because a rule is written with out-of-place torch ops, the same definition can be
  * wrapped as a ``torch.optim.Optimizer`` (:class:`metaopt.optimizer.RuleOptimizer`),
  * applied functionally and differentiably to lists of tensors (:func:`apply`),
  * ``torch.func.vmap``-ed over a leading population axis,
  * fused (a rule may ship a ``caps.fused`` in-place multi-tensor path that must equal
    ``update``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from .capabilities import Capabilities

State = dict[str, Tensor]
Hyper = Mapping[str, Any]


class HyperparameterError(ValueError):
    """A bad hyperparameter, said without the rule's name (``"invalid lr=-1.0: must be >= 0"``):
    a rule's ``check`` raises it and :meth:`UpdateRule.validate` prefixes the rule's name, so a
    check is written once for every rule that shares it and no id is typed into it."""


def _no_check(hp: Hyper) -> None:
    return None


@dataclass(frozen=True)
class UpdateRule:
    """A named update rule with its default hyperparameters.

    Attributes:
      name: registry id (lower case).
      init: ``param -> state``.
      update: ``(grad, param, state, hp, step, **ext) -> (delta, state)``; pure.
      hp: default (or bound) hyperparameters; ``with_hp`` rebinds them.
      check: raises :class:`HyperparameterError` (or a ``ValueError`` that names the rule)
        for a bad hyperparameter and its allowed range; called through :meth:`validate`.
      caps: the rule's optional capabilities (:class:`~metaopt.capabilities.Capabilities`:
        extra inputs it ``needs``, a ``fused`` fast path, whether it is ``elementwise``, a
        ``reduce`` over all tensors, a ``predict``-ed gradient point); the defaults are a plain
        elementwise rule.
      origin: the zero-argument factory this rule came from (the registry sets it), so that
        the rule pickles by reference (its functions may be closures); ``None`` otherwise.

    A new capability is a new field of :class:`~metaopt.capabilities.Capabilities`, not a new
    field here.
    """

    name: str
    init: Callable[[Tensor], State]
    update: Callable[..., tuple[Tensor, State]]
    hp: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Hyper], None] = _no_check
    caps: Capabilities = Capabilities()
    origin: Callable[[], "UpdateRule"] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.caps, Capabilities):
            raise ValueError(f"UpdateRule {self.name!r}: caps must be a metaopt.Capabilities, "
                             f"got {type(self.caps).__name__}")

    def with_hp(self, **hp: Any) -> "UpdateRule":
        """This rule with some default hyperparameters replaced (validated)."""
        unknown = sorted(set(hp) - set(self.hp))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown hyperparameter(s) {unknown}; allowed: {sorted(self.hp)}"
            )
        check_hp_types(self.name, self.hp, hp)
        merged = {**self.hp, **hp}
        self.validate(merged)
        return replace(self, hp=merged)

    def validate(self, hp: Hyper) -> None:
        """Run ``check`` on ``hp``; a :class:`HyperparameterError` becomes the one-line
        ``ValueError`` ``"<name>: <message>"``."""
        try:
            self.check(hp)
        except HyperparameterError as e:
            raise ValueError(f"{self.name}: {e}") from None

    def __reduce_ex__(self, protocol):
        """Pickled (and deep-copied) as ``origin().with_hp(**hp)`` when the rule has an
        ``origin`` (a module-level factory, as registered members do), since the rule's
        functions may be closures that pickle cannot store; otherwise field by field."""
        if self.origin is None:
            return super().__reduce_ex__(protocol)
        return _rebuild, (self.origin, dict(self.hp))


def _rebuild(origin: Callable[[], UpdateRule], hp: dict) -> UpdateRule:
    return replace(origin(), hp=hp)


def check_hp_types(name: str, defaults: Mapping[str, Any], hp: Mapping[str, Any]) -> None:
    """One-line ``ValueError`` for a hyperparameter whose type does not fit its default: a
    number (int, float or tensor, not a string or bool) where the default is a number, a bool
    where it is a bool, a tuple of numbers where it is one; the rule's ``check`` does the rest."""
    for k, v in hp.items():
        if k in defaults and not _fits(defaults[k], v):
            raise ValueError(f"{name}: invalid {k}={v!r}: must be {_kind(defaults[k])}")


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or isinstance(v, Tensor)


def _fits(default: Any, v: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(v, bool) or (isinstance(v, Tensor) and v.dtype == torch.bool)
    if _is_number(default):
        return _is_number(v)
    if isinstance(default, tuple) and all(_is_number(x) for x in default):
        return isinstance(v, (tuple, list)) and all(_is_number(x) for x in v)
    return True  # strings and None often stand for a choice among kinds: the rule checks


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "True or False"
    if _is_number(default):
        return "a number"
    return f"a tuple of {len(default)} numbers"


def init_states(rule: UpdateRule, params: Sequence[Tensor]) -> list[State]:
    """The rule's initial state for each tensor in ``params``."""
    return [rule.init(p) for p in params]


def apply(
    rule: UpdateRule,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[State],
    step: int | Tensor,
    hp: Hyper | Sequence[Hyper] | None = None,
    **ext: Any,
) -> tuple[list[Tensor], list[State]]:
    """One functional step over lists of tensors: ``p_new = p - delta``.

    Pure and differentiable (``torch.func.grad`` through K steps works) and vmappable over a
    leading population axis of ``params``, ``grads``, ``states`` and tensor-valued ``hp``.
    ``hp`` is one mapping for every tensor, or a list of mappings aligned with ``params``
    (per-tensor hyperparameters, e.g. μP's per-layer learning-rate multipliers); either way it
    overrides the rule's defaults. Per-tensor extras (``hvp``, ``u``) in ``ext`` are lists
    aligned with ``params``. For a rule with ``predict`` the caller supplies ``grads``
    evaluated at :func:`predicted_params` (as :func:`unroll` does), not at ``params``.
    """
    per_tensor = _per_tensor_hp(rule, hp, len(params))
    extras = [{k: (v[i] if isinstance(v, (list, tuple)) else v) for k, v in ext.items()}
              for i in range(len(params))]
    if rule.caps.reduce is not None:
        total = sum(rule.caps.reduce(g, p, s, h, step, **e)
                    for g, p, s, h, e in zip(grads, params, states, per_tensor, extras))
        extras = [dict(e, total=total) for e in extras]
    new_params, new_states = [], []
    for i, (p, g, s) in enumerate(zip(params, grads, states)):
        delta, s2 = rule.update(g, p, s, per_tensor[i], step, **extras[i])
        new_params.append(p - delta)
        new_states.append(s2)
    return new_params, new_states


def predicted_params(
    rule: UpdateRule,
    params: Sequence[Tensor],
    states: Sequence[State],
    step: int | Tensor,
    hp: Hyper | Sequence[Hyper] | None = None,
) -> list[Tensor]:
    """Where step ``step``'s gradients are evaluated: ``rule.caps.predict`` of each tensor from
    its current state, or the parameters themselves for a rule without ``predict``."""
    predict = rule.caps.predict
    if predict is None:
        return list(params)
    per_tensor = _per_tensor_hp(rule, hp, len(params))
    return [predict(p, s, h, step) for p, s, h in zip(params, states, per_tensor)]


def _per_tensor_hp(rule: UpdateRule, hp, n: int) -> list[Hyper]:
    if hp is None:
        return [rule.hp] * n
    if isinstance(hp, Mapping):
        merged = {**rule.hp, **hp}
        return [merged] * n
    if len(hp) != n:
        raise ValueError(f"per-tensor hp has {len(hp)} entries for {n} tensors")
    return [{**rule.hp, **h} for h in hp]


def unroll(
    rule: UpdateRule,
    loss_fn: Callable[[list[Tensor], Any], Tensor],
    params: Sequence[Tensor],
    batches: Sequence[Any],
    hp: Hyper | Sequence[Hyper] | None = None,
    states: Sequence[State] | None = None,
    first_step: int = 1,
) -> tuple[list[Tensor], list[State], list[Tensor]]:
    """Train ``params`` for ``len(batches)`` steps of ``rule`` on ``loss_fn(params, batch)``.

    Every step is built from differentiable ops (gradients come from ``torch.func.grad``), so
    the returned parameters can be differentiated with respect to the initial parameters and
    any tensor-valued hyperparameter in ``hp`` (the unrolled hypergradient). For a rule with
    ``predict`` the gradient (and the recorded loss) of each step is taken at the predicted
    point, differentiably. Returns the final parameters, states and the per-step training
    losses.
    """
    params = list(params)
    states = list(states) if states is not None else init_states(rule, params)
    grad_and_loss = torch.func.grad_and_value(lambda ps, b: loss_fn(list(ps), b))
    losses = []
    for k, batch in enumerate(batches):
        at = predicted_params(rule, params, states, first_step + k, hp)
        grads, loss = grad_and_loss(tuple(at), batch)
        params, states = apply(rule, params, list(grads), states, first_step + k, hp)
        losses.append(loss)
    return params, states, losses


