"""A functional, width-parametrized decoder-only transformer (pre-LayerNorm GPT) in μP or SP.

    h_0 = E[x_t] + P[t]                                 token / position embeddings (role input)
    a_l = Attn(LN(h_{l-1})),  h'_l = h_{l-1} + a_l       causal self-attention, ``heads`` heads
    m_l = W2 relu(W1 LN(h'_l) + b1) + b2, h_l = h'_l + m_l   MLP of width 4d
    z   = c * (W_out LN(h_L)) + b_out                    readout (role output)

Attention logits are ``q.k * s``: SP uses ``s = 1/sqrt(d_head)`` (Vaswani et al. 2017); μP uses
``s = sqrt(base_d_head) / d_head``, i.e. 1/d attention (Tensor Programs V, §4 and Table 8)
normalised to agree with SP at the base width. Under μP the query and readout weights are
zero-initialised and ``c = output_mult * base_width / width`` (microsoft/mup's recommendations);
other matrices are N(0, 1/fan_in), embeddings N(0, 1), gains 1, biases 0. The number of heads is
fixed, so ``d_head`` grows with width. Pure functions: ``torch.func.grad`` / ``vmap`` work.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..params import ParamInfo


def transformer_param_info(vocab: int, context: int, width: int, depth: int) -> list[ParamInfo]:
    """Names, roles and fans of the transformer's parameters, in order."""
    d, f = width, 4 * width
    info = [ParamInfo("tok_emb", "input", vocab, d), ParamInfo("pos_emb", "input", context, d)]
    for l in range(depth):
        info += [
            ParamInfo(f"b{l}.ln1.g", "vector", 1, d), ParamInfo(f"b{l}.ln1.b", "bias", 1, d),
            ParamInfo(f"b{l}.attn.q", "hidden", d, d), ParamInfo(f"b{l}.attn.k", "hidden", d, d),
            ParamInfo(f"b{l}.attn.v", "hidden", d, d), ParamInfo(f"b{l}.attn.o", "hidden", d, d),
            ParamInfo(f"b{l}.ln2.g", "vector", 1, d), ParamInfo(f"b{l}.ln2.b", "bias", 1, d),
            ParamInfo(f"b{l}.mlp.w1", "hidden", d, f), ParamInfo(f"b{l}.mlp.b1", "bias", 1, f),
            ParamInfo(f"b{l}.mlp.w2", "hidden", f, d), ParamInfo(f"b{l}.mlp.b2", "bias", 1, d),
        ]
    info += [ParamInfo("ln_f.g", "vector", 1, d), ParamInfo("ln_f.b", "bias", 1, d),
             ParamInfo("out.w", "output", d, vocab), ParamInfo("out.b", "bias", 1, vocab)]
    return info


def transformer_init(info: list[ParamInfo], param: str, generator, device, dtype) -> list[Tensor]:
    """Fresh parameters (see the module docstring for the scales)."""
    zero_init = ("out.w", ".attn.q") if param == "mup" else ()
    params = []
    for p in info:
        if p.role == "bias":
            params.append(torch.zeros(p.fan_out, device=device, dtype=dtype))
        elif p.role == "vector":
            params.append(torch.ones(p.fan_out, device=device, dtype=dtype))
        elif p.role == "input":  # embedding tables: one row per token / position
            params.append(torch.randn(p.fan_in, p.fan_out, generator=generator, device=device,
                                      dtype=dtype))
        elif p.name.endswith(zero_init):  # μP: readout and queries start at zero
            params.append(torch.zeros(p.fan_out, p.fan_in, device=device, dtype=dtype))
        else:
            w = torch.randn(p.fan_out, p.fan_in, generator=generator, device=device, dtype=dtype)
            params.append(w / math.sqrt(p.fan_in))
    return params


def attention_scale(param: str, width: int, base_width: int, heads: int) -> float:
    """``1/sqrt(d_head)`` under SP; ``sqrt(base_d_head)/d_head`` (1/d attention) under μP."""
    d_head = width / heads
    return math.sqrt(base_width / heads) / d_head if param == "mup" else 1.0 / math.sqrt(d_head)


def _causal_attention(h: Tensor, wq, wk, wv, wo, heads: int, scale: float) -> Tensor:
    b, t, d = h.shape

    def split(w):  # (B, T, d) -> (B, heads, T, d_head)
        return (h @ w.T).reshape(b, t, heads, d // heads).transpose(1, 2)

    q, k, v = split(wq), split(wk), split(wv)
    logits = (q @ k.transpose(-2, -1)) * scale
    mask = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
    att = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return (att @ v).transpose(1, 2).reshape(b, t, d) @ wo.T


def transformer_activations(params: list[Tensor], x: Tensor, depth: int, heads: int,
                            attn_scale: float, readout_mult: float) -> dict[str, Tensor]:
    """Every block's attention output, MLP output and residual stream, and the logits, for
    byte ids ``x`` of shape (B, T)."""
    d = params[0].shape[1]
    h = F.embedding(x, params[0]) + params[1][: x.shape[1]]
    acts = {"emb": h}
    for l in range(depth):
        g1, b1, wq, wk, wv, wo, g2, b2, w1, c1, w2, c2 = params[2 + 12 * l: 14 + 12 * l]
        a = _causal_attention(F.layer_norm(h, (d,), g1, b1), wq, wk, wv, wo, heads, attn_scale)
        h = h + a
        m = torch.relu(F.layer_norm(h, (d,), g2, b2) @ w1.T + c1) @ w2.T + c2
        h = h + m
        acts.update({f"b{l}.attn": a, f"b{l}.mlp": m, f"b{l}.out": h})
    gf, bf, wout, bout = params[-4:]
    acts["logits"] = readout_mult * (F.layer_norm(h, (d,), gf, bf) @ wout.T) + bout
    return acts


def transformer_forward(params, x, depth, heads, attn_scale, readout_mult) -> Tensor:
    """Next-byte logits (B, T, vocab) for byte ids ``x`` (B, T)."""
    return transformer_activations(params, x, depth, heads, attn_scale, readout_mult)["logits"]
