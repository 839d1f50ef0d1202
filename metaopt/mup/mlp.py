"""A functional, width-parametrized MLP in μP or SP (see :mod:`metaopt.mup.parametrization`).

    h_1 = relu(W_in x + b_in)                       W_in:  (width, in_dim)      role input
    h_k = relu(W_k h_{k-1} + b_k),  k = 2..depth    W_k:   (width, width)       role hidden
    z   = c * (W_out h_depth) + b_out               W_out: (out_dim, width)     role output

``c`` is the readout multiplier (``output_mult / width_mult`` under μP, 1 under SP). Parameters
are the flat list ``[W_in, b_in, W_2, b_2, ..., W_out, b_out]``; every function here is pure,
so it works under ``torch.func.grad`` and ``torch.func.vmap``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..params import ParamInfo


def mlp_param_info(in_dim: int, width: int, depth: int, out_dim: int) -> list[ParamInfo]:
    """Names, roles and fans of the MLP's parameters, in order."""
    info = [ParamInfo("in.w", "input", in_dim, width), ParamInfo("in.b", "bias", 1, width)]
    for k in range(2, depth + 1):
        info += [ParamInfo(f"h{k}.w", "hidden", width, width),
                 ParamInfo(f"h{k}.b", "bias", 1, width)]
    info += [ParamInfo("out.w", "output", width, out_dim), ParamInfo("out.b", "bias", 1, out_dim)]
    return info


def mlp_init(info: list[ParamInfo], param: str, generator, device, dtype) -> list[Tensor]:
    """Fresh parameters: weights N(0, 1/fan_in), biases 0; the μP readout weight is 0."""
    params = []
    for p in info:
        if p.role == "bias":
            params.append(torch.zeros(p.fan_out, device=device, dtype=dtype))
        elif p.role == "output" and param == "mup":
            params.append(torch.zeros(p.fan_out, p.fan_in, device=device, dtype=dtype))
        else:
            w = torch.randn(p.fan_out, p.fan_in, generator=generator, device=device, dtype=dtype)
            params.append(w / p.fan_in**0.5)
    return params


def mlp_activations(params: list[Tensor], x: Tensor, readout_mult: float) -> dict[str, Tensor]:
    """Every layer's output, ``{"h1": ..., "h2": ..., "logits": ...}``, for ``x`` (B, in_dim)."""
    acts, h = {}, x
    n_hidden = (len(params) - 2) // 2
    for k in range(n_hidden):
        w, b = params[2 * k], params[2 * k + 1]
        h = torch.relu(h @ w.T + b)
        acts[f"h{k + 1}"] = h
    acts["logits"] = readout_mult * (h @ params[-2].T) + params[-1]
    return acts


def mlp_forward(params: list[Tensor], x: Tensor, readout_mult: float) -> Tensor:
    """The MLP's logits for input ``x`` (B, in_dim)."""
    return mlp_activations(params, x, readout_mult)["logits"]
