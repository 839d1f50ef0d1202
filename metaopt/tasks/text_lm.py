"""``text_lm``: a byte-level language model, recurrent or convolutional, built with
:func:`metaopt.tasks.from_module`.

    lstm | gru   byte -> Embedding(width) -> LSTM | GRU(width) -> Linear(256) next-byte logits
    conv         byte -> Embedding(width) -> 3 residual causal Conv1d(width, kernel 3,
                 dilation 1, 2, 4) + ReLU blocks -> Linear(256)      (WaveNet-style; van den
                 Oord et al. 2016)

Text (:mod:`metaopt.tasks.stdlib_text`): ``"pydoc"``, the English prose of Python's own
documentation topics, or ``"stdlib"``, the standard library's source (charlm's text). The
training text is cut into windows of ``context + 1`` bytes every ``context // 2`` bytes (the
inputs are the first ``context`` bytes, the targets the same shifted by one); the validation
text into non-overlapping windows, of which ``eval_windows`` evenly spaced ones are
evaluated. Loss: mean next-byte cross-entropy (nats).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mup.parametrization import check_width
from .module_task import ModuleTask, from_module
from .registry import register
from .rnn_digits import CELLS
from .stdlib_text import pydoc_corpus, stdlib_corpus

VOCAB = 256
TEXTS = {"pydoc": pydoc_corpus, "stdlib": stdlib_corpus}
ARCHS = ("lstm", "gru", "conv")


class RecurrentLM(nn.Module):
    def __init__(self, cell: str, width: int):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, width)
        self.rnn = CELLS[cell](width, width, batch_first=True)
        self.out = nn.Linear(width, VOCAB)

    def forward(self, x):
        return self.out(self.rnn(self.emb(x))[0])


class ConvLM(nn.Module):
    def __init__(self, width: int, dilations=(1, 2, 4), kernel: int = 3):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, width)
        self.convs = nn.ModuleList(nn.Conv1d(width, width, kernel, dilation=d) for d in dilations)
        self.out = nn.Linear(width, VOCAB)

    def forward(self, x):
        h = self.emb(x).transpose(1, 2)  # (B, width, T)
        for conv in self.convs:
            pad = (conv.kernel_size[0] - 1) * conv.dilation[0]
            h = h + torch.relu(conv(F.pad(h, (pad, 0))))  # causal: output t sees inputs <= t
        return self.out(h.transpose(1, 2))


def next_byte_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))


def windows(text: bytes, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    starts = torch.arange(0, len(data) - context, stride)
    chunk = data[starts[:, None] + torch.arange(context + 1)]
    return chunk[:, :-1], chunk[:, 1:]


@register("text_lm")
def text_lm(text: str = "pydoc", arch: str = "lstm", width: int = 64, context: int = 32,
            batch_size: int = 32, corpus_bytes: int = 300_000, eval_windows: int = 128,
            seed: int = 0, device="cpu", dtype=torch.float32) -> ModuleTask:
    """A byte-level LSTM, GRU or causal-convolution language model on Python's documentation
    prose (pydoc) or its standard-library source.

    Options: ``text`` "pydoc" | "stdlib", ``arch`` "lstm" | "gru" | "conv", ``width``,
    ``context`` bytes, ``batch_size`` windows, ``corpus_bytes`` (90% train),
    ``eval_windows`` (validation windows, evenly spaced), ``seed``, ``device``, ``dtype``."""
    owner = "text_lm"
    if text not in TEXTS:
        raise ValueError(f"{owner}: text must be one of {', '.join(TEXTS)}, got {text!r}")
    if arch not in ARCHS:
        raise ValueError(f"{owner}: arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    for key, value in (("width", width), ("context", context), ("batch_size", batch_size),
                       ("eval_windows", eval_windows)):
        check_width(owner, key, value)
    check_width(owner, "corpus_bytes", corpus_bytes, minimum=10_000)
    train, val = TEXTS[text](corpus_bytes)
    if len(val) <= context + 1:
        raise ValueError(f"{owner}: corpus_bytes={corpus_bytes} leaves too little validation "
                         f"text for context={context}")
    val_x, val_y = windows(val, context, context)
    keep = torch.linspace(0, len(val_x) - 1, min(eval_windows, len(val_x))).round().long()
    make = (lambda: ConvLM(width)) if arch == "conv" else (lambda: RecurrentLM(arch, width))
    return from_module(make, windows(train, context, max(1, context // 2)), next_byte_loss,
                       batch_size=batch_size, val_data=(val_x[keep], val_y[keep]),
                       name=owner, seed=seed, device=device, dtype=dtype)
