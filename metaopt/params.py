"""What each parameter tensor of a model is: its μP role and its fan-in / fan-out.

μP (Yang et al., "Tensor Programs V", NeurIPS 2021, Table 8) and the learned optimizers' per-layer
scaling (μLO, Therien et al. 2024) treat a tensor by how its dimensions grow with the model's
width. A tensor's *role* is one of :data:`ROLES`:

    role     width dimensions (∞)            examples
    input    fan_out only                    first Linear/Conv, embedding tables
    hidden   fan_in and fan_out              inner Linear/Conv, attention projections, GRU/LSTM
    output   fan_in only                     the readout
    bias     at most one (a 1-d bias)        Linear/Conv/norm/attention/RNN biases
    vector   at most one (a 1-d gain)        LayerNorm/BatchNorm/RMSNorm gains, other 1-d tensors

:func:`infer_param_info` derives them for any ``nn.Module``, in the spirit of microsoft/mup's
base shapes (``mup.set_base_shapes``): given a narrower ``base`` model of the same architecture,
the dimensions whose sizes differ are the width (infinite) dimensions, and the role follows from
which fans are infinite as in the table. A matrix with no infinite dimension gets the role of the
heuristic below (its μP multipliers are 1 whatever the role, since its fans equal the base's).

Without ``base``, a heuristic in the order of ``model.named_parameters()``:

* weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` are ``input``;
* if the model has no embedding, the first other weight with >= 2 dimensions is ``input``;
* the last weight with >= 2 dimensions (not an embedding) is ``output``;
* every other weight with >= 2 dimensions is ``hidden``;
* tensors with at most one dimension larger than 1, and every parameter of a normalisation layer
  (LayerNorm, GroupNorm, BatchNorm, InstanceNorm, RMSNorm), are ``bias`` when their name
  contains "bias", else ``vector``.

Fans (what a unit of the tensor's output sums over / how many outputs it feeds):

* Linear, RNN/GRU/LSTM matrices and any 2-d tensor ``(out, in)``: ``fan_in = in``, ``fan_out =
  out`` (``MultiheadAttention.in_proj_weight`` (3E, E) has fan_out 3E);
* Conv ``(out, in / groups, *k)``: ``fan_in = in / groups * prod(k)``, ``fan_out = out``;
  ConvTranspose ``(in, out / groups, *k)``: ``fan_in = in * prod(k)``, ``fan_out = out / groups``;
* Embedding ``(num, dim)``: ``fan_in = num``, ``fan_out = dim`` (a row per token), as in
  :func:`metaopt.mup.transformer_param_info`;
* a vector or bias of ``n`` entries: ``fan_in = 1``, ``fan_out = n``.

A raw ``nn.Parameter`` of 2 dimensions is read as ``(out, in)``; use ``nn.Embedding`` for lookup
tables so that their orientation is known.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

ROLES = ("input", "hidden", "output", "bias", "vector")


@dataclass(frozen=True)
class ParamInfo:
    """What a parameter tensor is: ``role`` in :data:`ROLES` and its fan-in / fan-out.

    μP (Tensor Programs V, Table 8) treats hidden weights (both dimensions grow with width)
    differently from input weights, output weights and vectors (biases, gains)."""

    name: str
    role: str
    fan_in: int = 1
    fan_out: int = 1


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    _NORMS = _NORMS + (nn.RMSNorm,)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def infer_param_info(model: nn.Module, base: nn.Module | None = None) -> list[ParamInfo]:
    """One :class:`ParamInfo` per tensor of ``model.named_parameters()``, in that order.

    Args:
      model: any ``nn.Module``.
      base: the same architecture at a smaller width (e.g. built with ``width=base_width``);
        its tensors must have the same names and numbers of dimensions. ``None`` uses the
        heuristic of the module docstring.
    """
    owners = _owners(model)
    named = list(model.named_parameters())
    kinds = [_kind(owners[id(p)], name, p) for name, p in named]
    heuristic = _heuristic_roles(named, kinds)
    fans = [_fans(kind, p) for kind, (_, p) in zip(kinds, named)]
    if base is None:
        return [ParamInfo(name, role, *fan) for (name, _), role, fan in zip(named, heuristic, fans)]
    base_fans = _base_fans(model, base)
    infos = []
    for (name, p), kind, role, fan in zip(named, kinds, heuristic, fans):
        if kind in ("bias", "vector"):
            infos.append(ParamInfo(name, kind, *fan))
            continue
        b_in, b_out = base_fans[name]
        infinite = (fan[0] != b_in, fan[1] != b_out)
        width_role = {(True, True): "hidden", (False, True): "input",
                      (True, False): "output"}.get(infinite, role)
        infos.append(ParamInfo(name, width_role, *fan))
    return infos


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(tensor) -> (module that registers it, its local name)``, first registration wins."""
    owners: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for local, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), (module, local))
    return owners


def _kind(owner: tuple[nn.Module, str], name: str, p: Tensor) -> str:
    """``"embedding"``, ``"conv_transpose"``, ``"conv"``, ``"matrix"``, ``"bias"`` or ``"vector"``."""
    module, local = owner
    layer = (isinstance(module, (nn.Linear, nn.RNNBase, nn.modules.conv._ConvNd, *_EMBEDDINGS))
             or (isinstance(module, nn.MultiheadAttention) and local.endswith("weight")))
    vector_like = p.dim() <= 1 or (not layer and sum(d > 1 for d in p.shape) <= 1)
    if isinstance(module, _NORMS) or vector_like:
        return "bias" if "bias" in local else "vector"
    if isinstance(module, _EMBEDDINGS):
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose"
    return "conv" if p.dim() > 2 else "matrix"


def _fans(kind: str, p: Tensor) -> tuple[int, int]:
    shape = tuple(p.shape)
    if kind in ("bias", "vector"):
        return 1, max(1, p.numel())
    if kind == "embedding":
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    if kind == "conv_transpose":
        return shape[0] * receptive, shape[1]
    return shape[1] * receptive, shape[0]


def _heuristic_roles(named: list[tuple[str, Tensor]], kinds: list[str]) -> list[str]:
    """Roles without a base model (see the module docstring)."""
    matrices = [i for i, k in enumerate(kinds) if k in ("matrix", "conv", "conv_transpose")]
    has_embedding = "embedding" in kinds
    roles = []
    for i, kind in enumerate(kinds):
        if kind in ("bias", "vector"):
            roles.append(kind)
        elif kind == "embedding":
            roles.append("input")
        elif i == matrices[-1]:
            roles.append("output")
        elif i == matrices[0] and not has_embedding:
            roles.append("input")
        else:
            roles.append("hidden")
    return roles


def _base_fans(model: nn.Module, base: nn.Module) -> dict[str, tuple[int, int]]:
    """The base model's fans by parameter name, checked to match ``model``'s tensors."""
    ours = dict(model.named_parameters())
    theirs = dict(base.named_parameters())
    if set(ours) != set(theirs):
        missing = sorted(set(ours) ^ set(theirs))[:3]
        raise ValueError(f"infer_param_info: base model's parameters differ from the model's "
                         f"(e.g. {missing}); base must be the same architecture at another width")
    owners = _owners(base)
    fans = {}
    for name, p in theirs.items():
        if p.dim() != ours[name].dim():
            raise ValueError(f"infer_param_info: {name} has {ours[name].dim()} dimensions in the "
                             f"model and {p.dim()} in the base model")
        fans[name] = _fans(_kind(owners[id(p)], name, p), p)
    return fans
