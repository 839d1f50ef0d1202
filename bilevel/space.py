"""Hyperparameters of a neural-network training run, as one dict of tensors ``h``.

A :class:`TrainingSpace` says which hyperparameters of training ``steps`` steps of an
Adam-family zoo rule on a task are tuned, and maps ``h`` to what training uses:

* ``"log_lr"`` (pieces, tensors): a piecewise-constant learning-rate schedule per tensor,
  ``lr_j(t) = exp(log_lr[floor(t pieces / steps), j])`` (per-layer schedules as in Baydin et
  al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018, and
  Micaelli & Storkey, "Gradient-based Hyperparameter Optimization Over Long Horizons",
  NeurIPS 2021).
* ``"log_wd"`` (tensors,) or, with ``elementwise_wd``, one per weight (tensor shapes): the rule's
  (decoupled, for adamw) weight decay ``exp(log_wd)`` (Lorraine et al., AISTATS 2020).
* ``"data"`` (n_train,): example weights ``2 sigmoid(data_i)`` in the training loss (weight 1 at
  0): data hyper-cleaning (Franceschi et al., ICML 2017; Ren et al., ICML 2018).
* ``"log_noise"`` (): input-noise augmentation ``x + exp(log_noise) eps``, ``eps ~ N(0, I)``
  drawn outside (reparameterised, so differentiable in the strength); floating inputs only.

Every entry is unconstrained (log or logit scale); :meth:`TrainingSpace.bounds` gives the box
that black-box search samples, and :meth:`to_vector` / :meth:`from_vector` its flat form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

KINDS = ("log_lr", "log_wd", "data", "log_noise")


@dataclass(frozen=True)
class TrainingSpace:
    """The tuned hyperparameters of one training run (see the module docstring).

    ``shapes``: the task's parameter shapes; ``steps``: the length of the run; ``lr_pieces``:
    schedule pieces (0 = the rule's fixed ``lr``); ``wd``: tune weight decay; ``elementwise_wd``:
    one decay per weight; ``n_data``: tune that many example weights (0 = none); ``noise``: tune
    an input-noise strength. ``lr0``/``wd0``/``noise0`` are the starting values, ``lr_box``,
    ``wd_box``, ``noise_box`` and ``data_box`` the black-box search ranges (natural scale, data
    in logits)."""

    shapes: tuple[tuple[int, ...], ...]
    steps: int
    lr_pieces: int = 1
    wd: bool = True
    elementwise_wd: bool = False
    n_data: int = 0
    noise: bool = False
    lr0: float = 1e-3
    wd0: float = 1e-4
    noise0: float = 0.05
    lr_box: tuple[float, float] = (1e-4, 1e-1)
    wd_box: tuple[float, float] = (1e-6, 1.0)
    noise_box: tuple[float, float] = (1e-3, 1.0)
    data_box: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        if self.steps < 1 or self.lr_pieces < 0 or self.n_data < 0:
            raise ValueError(f"TrainingSpace: steps={self.steps} (>= 1), lr_pieces={self.lr_pieces} "
                             f"(>= 0), n_data={self.n_data} (>= 0)")
        if not (self.lr_pieces or self.wd or self.n_data or self.noise):
            raise ValueError("TrainingSpace: nothing to tune; set lr_pieces, wd, n_data or noise")

    @classmethod
    def for_params(cls, params: Sequence[Tensor], steps: int, **kw) -> "TrainingSpace":
        return cls(tuple(tuple(p.shape) for p in params), steps, **kw)

    def init(self, dtype=torch.float32, device="cpu") -> dict[str, Tensor]:
        """The starting point (``lr0``, ``wd0``, weights 1, ``noise0``)."""
        full = lambda shape, v: torch.full(shape, v, dtype=dtype, device=device)  # noqa: E731
        h = {}
        if self.lr_pieces:
            h["log_lr"] = full((self.lr_pieces, len(self.shapes)), math.log(self.lr0))
        if self.wd and self.elementwise_wd:
            h["log_wd"] = [full(s, math.log(self.wd0)) for s in self.shapes]
        elif self.wd:
            h["log_wd"] = full((len(self.shapes),), math.log(self.wd0))
        if self.n_data:
            h["data"] = full((self.n_data,), 0.0)
        if self.noise:
            h["log_noise"] = full((), math.log(self.noise0))
        return h

    def size(self) -> int:
        """The number of tuned hyperparameters."""
        return sum(t.numel() for t in self._leaves(self.init()))

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Search box per entry, in ``h``'s (log / logit) coordinates."""
        logs = lambda box: (math.log(box[0]), math.log(box[1]))  # noqa: E731
        return {"log_lr": logs(self.lr_box), "log_wd": logs(self.wd_box), "data": self.data_box,
                "log_noise": logs(self.noise_box)}

    def clip(self, h: dict) -> dict:
        """``h`` projected onto the search box (the gradient tuner's feasible set)."""
        box = self.bounds()
        return {k: ([t.clamp(*box[k]) for t in v] if isinstance(v, list) else v.clamp(*box[k]))
                for k, v in h.items()}

    def piece(self, step: int) -> int:
        """The schedule piece of 0-based ``step``: ``floor(step pieces / steps)``."""
        return min(step * self.lr_pieces // self.steps, self.lr_pieces - 1)

    def rule_hp(self, h: dict, step: int, base: dict | None = None) -> list[dict]:
        """Per-tensor hyperparameters of the rule at 0-based ``step``."""
        hp = [dict(base or {}) for _ in self.shapes]
        if "log_lr" in h:
            lrs = h["log_lr"][self.piece(step)].exp()
            for j, d in enumerate(hp):
                d["lr"] = lrs[j]
        if "log_wd" in h:
            wds = [w.exp() for w in h["log_wd"]] if isinstance(h["log_wd"], list) else h["log_wd"].exp()
            for j, d in enumerate(hp):
                d["weight_decay"] = wds[j]
        return hp

    def example_weights(self, h: dict, idx: Tensor) -> Tensor | None:
        """``2 sigmoid(data[idx])`` or None when example weights are not tuned."""
        return 2 * torch.sigmoid(h["data"][idx]) if "data" in h else None

    def noise_std(self, h: dict) -> Tensor | None:
        return h["log_noise"].exp() if "log_noise" in h else None

    def _leaves(self, h: dict) -> list[Tensor]:
        out = []
        for k in KINDS:
            if k in h:
                out.extend(h[k] if isinstance(h[k], list) else [h[k]])
        return out

    def to_vector(self, h: dict) -> Tensor:
        return torch.cat([t.reshape(-1) for t in self._leaves(h)])

    def from_vector(self, v: Tensor) -> dict:
        like, out, start = self.init(v.dtype, v.device), {}, 0

        def take(t):
            nonlocal start
            piece = v[start:start + t.numel()].reshape(t.shape)
            start += t.numel()
            return piece
        for k in KINDS:
            if k in like:
                out[k] = [take(t) for t in like[k]] if isinstance(like[k], list) else take(like[k])
        return out

    def vector_bounds(self) -> tuple[Tensor, Tensor]:
        """Lower and upper bounds aligned with :meth:`to_vector`."""
        box, lo, hi = self.bounds(), [], []
        like = self.init(torch.float64)
        for k in KINDS:
            if k in like:
                n = sum(t.numel() for t in (like[k] if isinstance(like[k], list) else [like[k]]))
                lo.append(torch.full((n,), box[k][0], dtype=torch.float64))
                hi.append(torch.full((n,), box[k][1], dtype=torch.float64))
        return torch.cat(lo), torch.cat(hi)
