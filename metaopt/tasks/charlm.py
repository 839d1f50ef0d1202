"""A small byte-level language model on Python's standard-library source (``charlm``).

A decoder-only transformer (:mod:`metaopt.mup.transformer`) of ``width`` d, ``depth`` blocks and
``heads`` heads predicts the next byte (vocabulary 256) from a context of ``context`` bytes of
the text in :mod:`metaopt.tasks.stdlib_text`. In μP (``param="mup"``) it uses 1/d attention, a
zero-initialised query and readout, a readout multiplier ``output_mult * base_width / width`` and
the per-layer learning rates of :func:`metaopt.mup.lr_multipliers`.

A batch is ``(x, y)``: ``batch_size`` windows at uniform random offsets of the training text,
``y`` being ``x`` shifted by one byte. ``evaluate`` uses up to ``eval_windows`` evenly spaced,
non-overlapping windows of the validation text: mean cross-entropy (nats per byte) and next-byte
accuracy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mup.parametrization import check_param, check_width, readout_multiplier
from ..mup.transformer import (attention_scale, transformer_activations, transformer_init,
                               transformer_param_info)
from .base import Task
from .registry import register
from .stdlib_text import stdlib_corpus

VOCAB = 256


@register("charlm")
class CharLM(Task):
    """Options: ``width`` d (a multiple of ``heads``), ``depth`` blocks, ``heads``,
    ``context`` bytes, ``param`` "sp" | "mup", ``base_width``, ``output_mult``, ``batch_size``
    windows, ``corpus_bytes`` of standard-library source (90% train), ``eval_windows``,
    ``seed`` (initialisation and batch stream when no generator is passed), ``device``,
    ``dtype``."""

    name = "charlm"

    def __init__(self, width: int = 128, depth: int = 2, heads: int = 4, context: int = 64,
                 param: str = "sp", base_width: int = 64, output_mult: float = 1.0,
                 batch_size: int = 32, corpus_bytes: int = 2_000_000, eval_windows: int = 64,
                 seed: int = 0, device="cpu", dtype=torch.float32):
        check_param(self.name, param)
        for key, value in [("width", width), ("depth", depth), ("heads", heads),
                           ("context", context), ("base_width", base_width),
                           ("batch_size", batch_size), ("eval_windows", eval_windows)]:
            check_width(self.name, key, value)
        check_width(self.name, "corpus_bytes", corpus_bytes, minimum=10_000)
        if width % heads or base_width % heads:
            raise ValueError(f"{self.name}: width ({width}) and base_width ({base_width}) must be "
                             f"multiples of heads ({heads})")
        super().__init__(device, dtype)
        self.width, self.depth, self.heads = width, depth, heads
        self.context = context
        self.param, self.base_width = param, base_width
        self.batch_size, self.seed = batch_size, seed
        self.readout_mult = readout_multiplier(param, width, base_width, output_mult)
        self.attn_scale = attention_scale(param, width, base_width, heads)
        train, val = stdlib_corpus(corpus_bytes)
        self.train_text = torch.frombuffer(bytearray(train), dtype=torch.uint8).to(self.device)
        self.val_text = torch.frombuffer(bytearray(val), dtype=torch.uint8).to(self.device)
        if len(self.val_text) <= context + 1:
            raise ValueError(f"{self.name}: corpus_bytes={corpus_bytes} leaves too little "
                             f"validation text for context={context}")
        self.eval_windows = eval_windows
        self._batch_gen = self.generator(seed + 1)

    @property
    def param_info(self):
        return transformer_param_info(VOCAB, self.context, self.width, self.depth)

    @property
    def base_param_info(self):
        """Shapes at ``base_width`` under μP (for per-layer lrs); under SP, this model's own."""
        width = self.base_width if self.param == "mup" else self.width
        return transformer_param_info(VOCAB, self.context, width, self.depth)

    def init(self, generator=None):
        g = generator if generator is not None else self.generator(self.seed)
        return transformer_init(self.param_info, self.param, g, self.device, self.dtype)

    def activations(self, params, x):
        """Every block's outputs and the logits on byte ids ``x`` (for the coordinate check)."""
        return transformer_activations(params, x, self.depth, self.heads, self.attn_scale,
                                       self.readout_mult)

    def _cross_entropy(self, params, x, y):
        logits = self.activations(params, x)["logits"]
        return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)), logits

    def loss(self, params, batch):
        """Mean next-byte cross-entropy (nats) of ``batch = (x, y)``."""
        return self._cross_entropy(params, *batch)[0]

    def _windows(self, text, starts):
        offsets = starts[:, None] + torch.arange(self.context + 1, device=self.device)
        chunk = text[offsets].long()
        return chunk[:, :-1], chunk[:, 1:]

    def sample_batch(self, generator=None):
        g = generator if generator is not None else self._batch_gen
        high = len(self.train_text) - self.context - 1
        starts = torch.randint(high, (self.batch_size,), generator=g, device=self.device)
        return self._windows(self.train_text, starts)

    def evaluate(self, params):
        n = min(self.eval_windows, (len(self.val_text) - 1) // (self.context + 1))
        starts = torch.arange(n, device=self.device) * (self.context + 1)
        x, y = self._windows(self.val_text, starts)
        with torch.no_grad():
            loss, logits = self._cross_entropy(list(params), x, y)
            acc = (logits.argmax(-1) == y).to(torch.float64).mean()
        return {"val_loss": float(loss), "accuracy": float(acc)}
