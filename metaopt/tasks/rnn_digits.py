"""``rnn_digits``: a recurrent classifier of the digits read one row at a time, built with
:func:`metaopt.tasks.from_module`.

    x (8 rows of 8 standardized pixels) -> GRU | LSTM | RNN(tanh) of ``width`` units
    -> the last step's hidden state -> Linear(10) logits

A sequential-MNIST-style task (Le et al. 2015, row by row) on :mod:`metaopt.tasks.digits_data`;
cross-entropy loss. Recurrent layers run as vmappable tensor ops
(:mod:`metaopt.tasks.rnn_functional`) with torch's default initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mup.parametrization import check_width
from .digits_data import N_CLASSES, N_TRAIN, check_batch_size, digits_arrays
from .module_task import ModuleTask, from_module
from .registry import register

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
ROWS = 8


class RNNClassifier(nn.Module):
    def __init__(self, cell: str, d_in: int, width: int, n_classes: int):
        super().__init__()
        self.rnn = CELLS[cell](d_in, width, batch_first=True)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


@register("rnn_digits")
def rnn_digits(cell: str = "gru", width: int = 16, batch_size: int = 64, seed: int = 0,
               device="cpu", dtype=torch.float32) -> ModuleTask:
    """A GRU, LSTM or tanh RNN classifying the 8x8 digits read row by row (8 steps of 8 pixels).

    Options: ``cell`` "gru" | "lstm" | "rnn", ``width`` (hidden units), ``batch_size``,
    ``seed``, ``device``, ``dtype``."""
    owner = "rnn_digits"
    if cell not in CELLS:
        raise ValueError(f"{owner}: cell must be one of {', '.join(CELLS)}, got {cell!r}")
    check_width(owner, "width", width)
    check_batch_size(owner, batch_size, N_TRAIN)
    xt, yt, xv, yv = digits_arrays()
    rows = lambda a: torch.as_tensor(a).reshape(-1, ROWS, a.shape[1] // ROWS)  # noqa: E731
    return from_module(lambda: RNNClassifier(cell, xt.shape[1] // ROWS, width, N_CLASSES),
                       (rows(xt), torch.as_tensor(yt)), F.cross_entropy, batch_size=batch_size,
                       val_data=(rows(xv), torch.as_tensor(yv)), name=owner, seed=seed,
                       device=device, dtype=dtype)
