"""The bilevel problem interface used by the tuners, the CLI and the comparison.

    inner_loss(params, hparams, batch=None) -> scalar   training loss g (batch: train indices)
    outer_loss(params, hparams, batch=None) -> scalar   validation loss f (batch: val indices)
    init_params(), init_hparams()                        starting points (tuples / one tensor)
    solve(hparams, params=None) -> params                inner solution (warm start from params)
    value(hparams) -> float                              F(hparams) = f(solve(hparams), hparams)

``hparams`` is one tensor (log-scale weights, so the outer problem is unconstrained; Optuna
searches the box ``hparam_range`` in each coordinate).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class BilevelProblem:
    """Base class; subclasses set ``name``, ``n_train``, ``n_val``, ``dtype`` and the losses."""

    name = "problem"
    hparam_range = (-5.0, 5.0)
    convex = True  # strongly convex inner problem: ``solve`` is exact (Newton)

    def inner_loss(self, params: Any, hparams: Tensor, batch: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def outer_loss(self, params: Any, hparams: Tensor, batch: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def init_params(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def init_hparams(self) -> Tensor:
        raise NotImplementedError

    def solve(self, hparams: Tensor, params: Any = None) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @property
    def num_hparams(self) -> int:
        return self.init_hparams().numel()

    def value(self, hparams: Tensor) -> float:
        """``F(hparams)``: the validation loss at the inner solution."""
        h = hparams.detach()
        return float(self.outer_loss(self.solve(h), h))

    def sample(self, which: str, batch_size: int, generator: torch.Generator) -> Tensor:
        """Random indices (with replacement) into the train (``"train"``) or val set."""
        n = self.n_train if which == "train" else self.n_val
        return torch.randint(0, n, (batch_size,), generator=generator)
