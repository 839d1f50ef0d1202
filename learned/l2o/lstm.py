"""Functional coordinatewise layers shared by the L2O models: an LSTM stack and a linear map.

Coordinatewise (Andrychowicz et al. 2016, §3.1): one small network with shared weights runs on
every coordinate of the optimizee independently, so the inputs have shape ``(*coords, features)``
and the hidden state ``(*coords, layers, hidden)``; any number of leading axes works (a tensor, a
batch of problem instances, a vmapped population).

The cell is the standard LSTM (Hochreiter & Schmidhuber 1997, torch's gate order i, f, g, o):

    [i, f, g, o] = W_ih x + W_hh h + b
    c' = sigmoid(f) c + sigmoid(i) tanh(g),   h' = sigmoid(o) tanh(c')

Weights live in a flat ``theta`` dict (``"<prefix>.w_ih<l>"`` ...), so the whole model is a pure
function of ``theta`` (``torch.func`` friendly). Initialisation follows ``torch.nn.LSTM`` /
``torch.nn.Linear``: uniform on ``±1/sqrt(fan)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

Theta = dict[str, Tensor]


def _uniform(shape: tuple[int, ...], bound: float, generator, dtype) -> Tensor:
    return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound


def init_linear(prefix: str, fan_in: int, fan_out: int, generator=None,
                dtype=torch.float32, zero: bool = False) -> Theta:
    """Weights ``(fan_out, fan_in)`` and bias of ``y = x W^T + b``; ``zero`` gives all zeros."""
    bound = 1.0 / fan_in**0.5
    if zero:
        return {f"{prefix}.w": torch.zeros(fan_out, fan_in, dtype=dtype),
                f"{prefix}.b": torch.zeros(fan_out, dtype=dtype)}
    return {f"{prefix}.w": _uniform((fan_out, fan_in), bound, generator, dtype),
            f"{prefix}.b": _uniform((fan_out,), bound, generator, dtype)}


def linear(theta: Theta, prefix: str, x: Tensor) -> Tensor:
    """``x W^T + b`` on the last axis."""
    return x @ theta[f"{prefix}.w"].T + theta[f"{prefix}.b"]


def init_lstm(prefix: str, input_size: int, hidden: int, layers: int, generator=None,
              dtype=torch.float32) -> Theta:
    """Parameters of a ``layers``-deep LSTM stack (one bias per layer: torch's b_ih + b_hh)."""
    bound = 1.0 / hidden**0.5
    theta = {}
    for layer in range(layers):
        fan = input_size if layer == 0 else hidden
        theta[f"{prefix}.w_ih{layer}"] = _uniform((4 * hidden, fan), bound, generator, dtype)
        theta[f"{prefix}.w_hh{layer}"] = _uniform((4 * hidden, hidden), bound, generator, dtype)
        theta[f"{prefix}.b{layer}"] = _uniform((4 * hidden,), bound, generator, dtype)
    return theta


def lstm_state(shape: torch.Size, hidden: int, layers: int, like: Tensor) -> dict[str, Tensor]:
    """Zero hidden and cell state ``(*shape, layers, hidden)`` for a tensor of ``shape``."""
    z = torch.zeros(*shape, layers, hidden, dtype=like.dtype, device=like.device)
    return {"h": z, "c": z.clone()}


def lstm(theta: Theta, prefix: str, x: Tensor, h: Tensor, c: Tensor
         ) -> tuple[Tensor, Tensor, Tensor]:
    """One time step of the stack: input ``x (*, in)``, state ``h, c (*, layers, hidden)``.
    Returns the top layer's output ``(*, hidden)`` and the new ``h, c``."""
    layers = h.shape[-2]
    hs, cs = [], []
    inp = x
    for layer in range(layers):
        gates = (inp @ theta[f"{prefix}.w_ih{layer}"].T + h[..., layer, :]
                 @ theta[f"{prefix}.w_hh{layer}"].T + theta[f"{prefix}.b{layer}"])
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c[..., layer, :] + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        hs.append(h_new)
        cs.append(c_new)
        inp = h_new
    return inp, torch.stack(hs, dim=-2), torch.stack(cs, dim=-2)
