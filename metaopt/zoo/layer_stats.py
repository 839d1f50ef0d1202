"""Per-layer inputs and output gradients for K-FAC-style members (AdaFisher, MKOR).

``LayerStatistics(model)`` hooks every captured layer of ``model``: a forward hook records the
layer's input and registers a hook on its output that records ``dLoss/d(output)`` during the
backward pass (both detached). For a layer computing ``y = W x (+ b)`` on ``N`` rows (batch and
sequence positions, or batch and output pixels of a convolution) it then answers, for the
weight and for the bias alike,

  * ``layer_in``: the input rows ``a`` ([N, in]) with a column of ones appended when the layer
    has a bias (K-FAC's homogeneous coordinates, ``a_bar = [a, 1]``): the layer is one matrix
    ``[W, b]`` acting on ``a_bar``. For ``nn.Conv2d`` the rows are the input patches, one per image and output pixel
    (``in = C kh kw`` in the weight's flattening order, as ``torch.nn.functional.unfold``);
  * ``layer_grad_out``: ``g`` ([N, out]), the gradient of the loss with respect to the layer's
    output rows, as autograd gives it: for a loss averaged over the rows each row carries a
    ``1/N`` (K-FAC's per-example gradient is ``N g``; each member states its convention);
  * ``layer_grad``: the layer's joint gradient ``[dW, db]`` ([out, in (+1)], a missing
    gradient as zeros), which equals ``g^T a_bar``.

A weight ``[out, in]`` (or ``[out, C, kh, kw]``) owns the first ``in`` columns of these, a bias
the last one: each tensor of a layer sees the whole layer, as the official AdaFisher and MKOR
codes treat weight and bias as one block. Captured layers are ``nn.Linear`` and ``nn.Conv2d``
with ``groups=1``, zero padding given as numbers and any stride or dilation; any other
parameter, and one shared by several captured layers, gets ``None`` (its rule falls back to its
first-order path).

What is recorded: the calls made with gradients enabled since the last backward pass (a layer
applied several times contributes the rows of every call, each paired with its own output
gradient); the first forward call after a backward pass starts a new record, so the statistics
describe the last forward/backward pass before ``step`` (gradient accumulation keeps the last
micro-batch's). The recorded input is a reference to the tensor autograd keeps for the
weight's gradient (an in-place change to it after the layer is autograd's error, as without the
hooks); the output hook sees the gradient of the layer's own output, also when an in-place
activation such as ``ReLU(inplace=True)`` overwrites that output afterwards.

    stats = zoo.LayerStatistics(model)         # before the first forward pass
    opt = zoo.create("adafisher", model.parameters())
    loss_fn(model(x), y).backward()
    opt.step(layer_stats=stats)
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

#: the extra inputs (``Capabilities.needs``) that :class:`LayerStatistics` supplies
LAYER_NEEDS = frozenset({"layer", "layer_grad"})


def needs_layer_statistics(rule) -> bool:
    """Whether ``rule`` asks for per-layer statistics on its first step (it then needs an
    ``nn.Module`` model with :class:`LayerStatistics`; functional tasks cannot supply them)."""
    return bool(LAYER_NEEDS & set(rule.caps.needs(rule.hp, 1)))


def is_captured(module: nn.Module) -> bool:
    """Layers whose statistics are recorded: ``nn.Linear`` and plain ``nn.Conv2d``."""
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def conv_patches(module: nn.Conv2d, x: Tensor) -> Tensor:
    """The input patches of a convolution as rows ``[B oh ow, C kh kw]`` (the weight's
    flattening order), by strided views (``F.unfold``, equal, is far slower on CPU)."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (module.kernel_size, module.stride,
                                              module.dilation, module.padding)
    x = nn.functional.pad(x if x.dim() == 4 else x.unsqueeze(0), (pw, pw, ph, ph))
    x = x.unfold(2, dh * (kh - 1) + 1, sh)[..., ::dh]  # [B, C, oh, W, kh]
    x = x.unfold(3, dw * (kw - 1) + 1, sw)[..., ::dw]  # [B, C, oh, ow, kh, kw]
    return x.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)


def input_rows(module: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as rows ``[N, in]`` (unfolded patches for a convolution)."""
    if isinstance(module, nn.Conv2d):
        return conv_patches(module, x)
    return x.reshape(-1, x.shape[-1])


def output_rows(module: nn.Module, g: Tensor) -> Tensor:
    """An output gradient as rows ``[N, out]``, aligned with :func:`input_rows`."""
    if isinstance(module, nn.Conv2d):
        g = g if g.dim() == 4 else g.unsqueeze(0)
        return g.movedim(1, -1).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


def homogeneous(a: Tensor, module: nn.Module) -> Tensor:
    """``[a, 1]`` when the layer has a bias, else ``a``."""
    if module.bias is None:
        return a
    return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)


def joint_grad(module: nn.Module) -> Tensor | None:
    """``[dW, db]`` as one ``[out, in (+1)]`` matrix; ``None`` when neither has a gradient."""
    w, b = module.weight, module.bias
    if w.grad is None and (b is None or b.grad is None):
        return None
    dw = w.grad if w.grad is not None else torch.zeros_like(w)
    cols = [dw.reshape(dw.shape[0], -1)]
    if b is not None:
        cols.append((b.grad if b.grad is not None else torch.zeros_like(b)).unsqueeze(1))
    return torch.cat(cols, dim=1)


class _Call:
    """One forward call of a layer: its input and, after the backward pass, its output's
    gradient."""

    def __init__(self, x: Tensor):
        self.input = x
        self.grad_out: Tensor | None = None

    def set_grad(self, g: Tensor) -> None:
        self.grad_out = g.detach()


class LayerStatistics:
    """Records the inputs and output gradients of ``model``'s captured layers (see the module
    docstring) and hands them to :meth:`metaopt.RuleOptimizer.step` as ``layer_stats``."""

    def __init__(self, model: nn.Module):
        self._calls: dict[nn.Module, list[_Call]] = {}
        self._layer_of: dict[Tensor, nn.Module | None] = {}  # None: shared by several layers
        self._handles = []
        for module in model.modules():
            if not is_captured(module) or module in self._calls:
                continue
            self._calls[module] = []
            self._handles.append(module.register_forward_hook(self._record))
            for p in (module.weight, module.bias):
                if p is not None:
                    self._layer_of[p] = None if p in self._layer_of else module

    def remove(self) -> None:
        """Remove the hooks (recording stops; what was recorded stays readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _record(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if not torch.is_grad_enabled() or not output.requires_grad:
            return
        calls = self._calls[module]
        if any(c.grad_out is not None for c in calls):  # a new pass after a backward
            calls.clear()
        call = _Call(inputs[0].detach())
        calls.append(call)
        output.register_hook(call.set_grad)

    def layer(self, p: Tensor) -> nn.Module | None:
        """The captured layer that owns ``p`` (``None`` if none or several)."""
        return self._layer_of.get(p)

    def rows(self, module: nn.Module) -> tuple[Tensor, Tensor] | None:
        """``(layer_in, layer_grad_out)`` of ``module``'s recorded calls, ``None`` if no call
        has received its output gradient yet."""
        done = [c for c in self._calls[module] if c.grad_out is not None]
        if not done:
            return None
        a = torch.cat([input_rows(module, c.input) for c in done])
        g = torch.cat([output_rows(module, c.grad_out) for c in done])
        return homogeneous(a, module), g

    def extras(self, params: Iterable[Tensor], needs: Iterable[str]) -> dict[str, list]:
        """The per-tensor extra inputs in ``needs`` (``"layer"``: ``layer_in`` and
        ``layer_grad_out``; ``"layer_grad"``: ``layer_grad``) as lists aligned with
        ``params``, ``None`` where a tensor has no captured layer."""
        layers = [self.layer(p) for p in params]
        owners = {m for m in layers if m is not None}  # a weight and its bias share one
        out: dict[str, list] = {}
        if "layer" in needs:
            rows = {m: self.rows(m) for m in owners}
            pairs = [None if m is None else rows[m] for m in layers]
            out["layer_in"] = [None if r is None else r[0] for r in pairs]
            out["layer_grad_out"] = [None if r is None else r[1] for r in pairs]
        if "layer_grad" in needs:
            grads = {m: joint_grad(m) for m in owners}
            out["layer_grad"] = [None if m is None else grads[m] for m in layers]
        return out
