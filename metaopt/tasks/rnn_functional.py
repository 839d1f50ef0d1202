"""Recurrent layers (``nn.RNN``, ``nn.GRU``, ``nn.LSTM``) in plain tensor ops, so that a task
built from a module holding them can be vmapped (torch's fused ``aten::gru`` / ``lstm`` kernels
have no batching rule).

:func:`make_vmappable` replaces the ``forward`` of every recurrent layer of a module by
:func:`rnn_forward`, which reads the layer's parameters by name (so ``functional_call`` can
substitute them) and computes, per layer and direction, with ``W_* x`` for the input and
``W_* h`` for the hidden projections (weights stacked as torch stores them):

    RNN    h' = act(W_ih x + b_ih + W_hh h + b_hh)                   act = tanh | relu
    GRU    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz)
           n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 - z) ⊙ n + z ⊙ h
    LSTM   i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh) split in four
           c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')   (then h' = W_hr h' with ``proj_size``)

(the equations of torch's ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` documentation; Cho et al. 2014,
Hochreiter & Schmidhuber 1997). Dropout between layers applies in training mode as in torch.
``PackedSequence`` inputs are not supported.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_vmappable(model: nn.Module) -> nn.Module:
    """Swap every recurrent layer's ``forward`` for :func:`rnn_forward` (in place)."""
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            m.forward = types.MethodType(rnn_forward, m)
    return model


def _cell(mode: str, nonlinearity: str):
    if mode == "GRU":
        return _gru_step
    if mode == "LSTM":
        return _lstm_step
    return _tanh_step if mode == "RNN_TANH" or nonlinearity == "tanh" else _relu_step


def _lin(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return x @ w.T + (0 if b is None else b)


def _tanh_step(x, state, w):
    (h,) = state
    return (torch.tanh(_lin(x, w["ih"], w["bih"]) + _lin(h, w["hh"], w["bhh"])),)


def _relu_step(x, state, w):
    (h,) = state
    return (torch.relu(_lin(x, w["ih"], w["bih"]) + _lin(h, w["hh"], w["bhh"])),)


def _gru_step(x, state, w):
    (h,) = state
    ir, iz, in_ = _lin(x, w["ih"], w["bih"]).chunk(3, -1)
    hr, hz, hn = _lin(h, w["hh"], w["bhh"]).chunk(3, -1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return ((1 - z) * n + z * h,)


def _lstm_step(x, state, w):
    h, c = state
    i, f, g, o = (_lin(x, w["ih"], w["bih"]) + _lin(h, w["hh"], w["bhh"])).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w["hr"] is not None:
        h = h @ w["hr"].T
    return h, c


def _weights(layer: nn.RNNBase, k: int, suffix: str) -> dict:
    get = lambda name: getattr(layer, f"{name}_l{k}{suffix}", None)  # noqa: E731
    return {"ih": get("weight_ih"), "hh": get("weight_hh"), "bih": get("bias_ih"),
            "bhh": get("bias_hh"), "hr": get("weight_hr")}


def rnn_forward(self: nn.RNNBase, input: Tensor, hx=None):
    """``nn.RNNBase.forward`` in tensor ops: returns ``(output, h_n)`` (``(h_n, c_n)`` for LSTM)."""
    if isinstance(input, nn.utils.rnn.PackedSequence):
        raise ValueError("from_module: PackedSequence inputs are not supported; pad the batch")
    lstm = self.mode == "LSTM"
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input if not self.batch_first
                                              else input.transpose(0, 1))  # (T, B, F)
    dirs = 2 if self.bidirectional else 1
    h_size = self.proj_size if getattr(self, "proj_size", 0) else self.hidden_size
    n_states = self.num_layers * dirs
    batch = x.shape[1]
    if hx is None:
        h0 = x.new_zeros(n_states, batch, h_size)
        c0 = x.new_zeros(n_states, batch, self.hidden_size) if lstm else None
    else:
        h0, c0 = hx if lstm else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    step = _cell(self.mode, getattr(self, "nonlinearity", "tanh"))
    finals_h, finals_c = [], []
    for k in range(self.num_layers):
        outs = []
        for d in range(dirs):
            idx = k * dirs + d
            state = (h0[idx], c0[idx]) if lstm else (h0[idx],)
            w = _weights(self, k, "_reverse" if d else "")
            seq = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
            ys = [None] * x.shape[0]
            for t in seq:
                state = step(x[t], state, w)
                ys[t] = state[0]
            outs.append(torch.stack(ys))
            finals_h.append(state[0])
            if lstm:
                finals_c.append(state[1])
        x = torch.cat(outs, -1) if dirs == 2 else outs[0]
        if self.dropout and self.training and k < self.num_layers - 1:
            x = F.dropout(x, self.dropout, True)
    out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
    h_n = torch.stack(finals_h)
    h_n = h_n.squeeze(1) if unbatched else h_n
    if not lstm:
        return out, h_n
    c_n = torch.stack(finals_c)
    return out, (h_n, c_n.squeeze(1) if unbatched else c_n)
