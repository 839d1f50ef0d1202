"""An update rule's optional capabilities, one field each of :class:`Capabilities`: the extra
inputs it needs, a fused fast path, whether it is elementwise, a sum over all tensors and a
predicted gradient point. Every :class:`~metaopt.rule.UpdateRule` carries them in its one field
``caps``.

Each is documented once, below, with its math and the part of metaopt that reads it; a rule
sets only those it has (``caps=Capabilities(fused=..., elementwise=False)``) and the defaults
describe a plain elementwise rule. A new capability is one new field of :class:`Capabilities`
(and its consumer), never a new ``UpdateRule`` field or ``step()`` argument; a new kind of
extra input is one provider of :mod:`metaopt.extras`, named in ``needs``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from torch import Tensor


def no_needs(hp: Mapping[str, Any], step: int) -> frozenset:
    """The ``needs`` of a rule that wants no extra input on any step."""
    return frozenset()


@dataclass(frozen=True, init=False)
class Capabilities:
    """The optional capabilities of an update rule (keyword-only; an unknown name is a one-line
    ``ValueError`` naming the allowed ones).

    Attributes:
      needs: ``(hp, step) -> frozenset`` of the extra inputs the rule's ``update`` takes as
        keyword arguments (``ext``) on step ``step``: ``"loss"`` (the closure's loss ``f``),
        ``"hvp"`` (a Hessian-vector product ``hvp = H u`` with its Rademacher probe ``u``,
        Hutchinson's ``E[u * Hu] = diag H``), ``"gnb"`` (Sophia-G's Gauss-Newton-Bartlett
        estimate ``B * g_hat**2``), ``"layer"`` (``layer_in``, the input rows of the tensor's
        layer with a column of ones for a bias, and ``layer_grad_out``, the gradient of the
        loss with respect to the layer's output rows; ``None`` for a tensor no captured layer
        owns) or ``"layer_grad"`` (``layer_grad``, the layer's joint ``[dW, db]``). Read by
        :class:`~metaopt.optimizer.RuleOptimizer`, which computes every input named this step
        through the providers of :mod:`metaopt.extras` before any parameter moves (the
        per-layer ones from a :class:`metaopt.zoo.LayerStatistics` of the model), and sends
        such a step down the loop path; functional callers pass them to
        :func:`~metaopt.rule.apply` themselves. Default: nothing on any step.
      fused: optional in-place multi-tensor step ``fused(params, grads, states, hp, steps) ->
        None`` that computes the same function as ``update`` over a whole param group (torch's
        fused AdamW, a ``torch._foreach_*`` step). :mod:`metaopt.fastpath` runs it for
        ``impl="fused"`` and, on the devices it names in an optional ``fused.devices``
        attribute, for ``impl="auto"``; only on dense, contiguous, real tensors of one dtype
        and device, and never on steps that need extra inputs or check their update
        (``skip_nonfinite``). Default: none (the rule runs through ``update``).
      elementwise: every output coordinate depends only on the same coordinate of the inputs,
        ``delta_i = f(g_i, p_i, s_i)`` (True by default). Lets :mod:`metaopt.fastpath` flatten
        a group's tensors into one buffer (``impl="compiled"``) and the adapter update complex
        parameters as ``torch.view_as_real`` and DTensor shards in place; a rule with
        whole-matrix state (Shampoo, SOAP, Adafactor) or a per-tensor norm sets False, and
        is then updated per whole tensor (shards gathered).
      reduce: optional ``(grad, param, state, hp, step, **ext) -> Tensor``, one tensor's share
        ``r_i`` of a sum over every tensor stepped together, ``total = sum_i r_i`` (a Polyak
        step divides by the whole gradient's squared norm, ``r_i = ||g_i||^2``). The sum runs
        over every param group of a :class:`~metaopt.optimizer.RuleOptimizer` step (before any
        parameter moves) or every tensor given to :func:`~metaopt.rule.apply`, and reaches
        ``update`` as the extra input ``total``. Default: none.
      predict: optional ``(param, state, hp, step) -> Tensor``, the point at which step
        ``step``'s gradient is evaluated, from the state after step ``step - 1`` (weight
        prediction, XGrad: ``param - s lr Delta``; the parameter itself for a fresh state);
        the update still moves ``param``. :class:`~metaopt.optimizer.RuleOptimizer` moves the
        parameters there for the closure and back before the update (so ``step(closure)`` is
        required); :func:`~metaopt.rule.unroll` differentiates there; :func:`~metaopt.rule.apply`
        takes gradients its caller evaluated at :func:`~metaopt.rule.predicted_params`.
        Default: none (gradients at the parameters).
    """

    needs: Callable[[Mapping[str, Any], int], frozenset] = no_needs
    fused: Callable[..., None] | None = None
    elementwise: bool = True
    reduce: Callable[..., Tensor] | None = None
    predict: Callable[..., Tensor] | None = None

    def __init__(self, **caps: Any):
        allowed = [f.name for f in fields(self)]
        unknown = sorted(set(caps) - set(allowed))
        if unknown:
            raise ValueError(f"unknown capability(ies) {unknown}; allowed: {allowed}")
        for f in fields(self):
            object.__setattr__(self, f.name, caps.get(f.name, f.default))
