"""``tabular``: an MLP or a residual MLP on a small scikit-learn table (see
:mod:`metaopt.tasks.tabular_data`), built with :func:`metaopt.tasks.from_module`.

    mlp      x -> [Linear(width) -> ReLU] x depth -> Linear(out)
    resmlp   h = Linear(width) x;  h = h + Linear(GELU(Linear(LayerNorm(h)))) per block (depth);
             -> LayerNorm -> Linear(out)        (pre-norm residual blocks, He et al. 2016)

Classification tables use the cross-entropy of the logits, regression tables the mean squared
error of the single output (standardized targets). Layers have torch's default initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mup.parametrization import check_width
from .digits_data import check_batch_size
from .module_task import ModuleTask, from_module
from .registry import register
from .tabular_data import check_dataset, tabular_arrays

ARCHS = ("mlp", "resmlp")


class ResBlock(nn.Module):
    """``h + W2 gelu(W1 LayerNorm(h))``."""

    def __init__(self, width: int):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, width), \
            nn.Linear(width, width)

    def forward(self, h):
        return h + self.fc2(F.gelu(self.fc1(self.norm(h))))


def mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(depth):
        layers += [nn.Linear(d_in if k == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, d_out))


def resmlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), *(ResBlock(width) for _ in range(depth)),
                         nn.LayerNorm(width), nn.Linear(width, d_out))


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a single-output model's ``(B, 1)`` output against ``(B,)``."""
    return F.mse_loss(out.squeeze(-1), y)


@register("tabular")
def tabular(dataset: str = "wine", arch: str = "mlp", width: int = 64, depth: int = 2,
            batch_size: int = 32, seed: int = 0, device="cpu",
            dtype=torch.float32) -> ModuleTask:
    """An MLP or residual MLP on a small scikit-learn table (wine, breast_cancer, iris, diabetes,
    or generated classification / regression data).

    Options: ``dataset``, ``arch`` "mlp" | "resmlp", ``width``, ``depth`` (hidden layers or
    residual blocks), ``batch_size``, ``seed``, ``device``, ``dtype``."""
    owner = "tabular"
    check_dataset(owner, dataset)
    if arch not in ARCHS:
        raise ValueError(f"{owner}: arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    check_width(owner, "width", width)
    check_width(owner, "depth", depth)
    xt, yt, xv, yv, n_classes = tabular_arrays(dataset)
    check_batch_size(owner, batch_size, len(xt))
    build = mlp if arch == "mlp" else resmlp
    d_out = n_classes or 1
    return from_module(lambda: build(xt.shape[1], width, depth, d_out),
                       (torch.as_tensor(xt), torch.as_tensor(yt)),
                       F.cross_entropy if n_classes else squared_error, batch_size=batch_size,
                       val_data=(torch.as_tensor(xv), torch.as_tensor(yv)), name=owner,
                       seed=seed, device=device, dtype=dtype)
