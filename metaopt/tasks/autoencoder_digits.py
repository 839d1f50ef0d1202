"""``autoencoder_digits``: an MLP autoencoder of the digits (:mod:`metaopt.tasks.digits_data`),
built with :func:`metaopt.tasks.from_module`.

    x (64 standardized pixels) -> Linear(width) -> ReLU -> Linear(code) -> ReLU
                               -> Linear(width) -> ReLU -> Linear(64)

trained on the mean squared reconstruction error (Hinton & Salakhutdinov 2006 in miniature);
validation is the error on the 360 validation images. Layers have torch's default
initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..mup.parametrization import check_width
from .digits_data import N_PIXELS, N_TRAIN, check_batch_size, digits_arrays
from .module_task import ModuleTask, from_module
from .registry import register


def autoencoder(width: int, code: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(N_PIXELS, width), nn.ReLU(), nn.Linear(width, code), nn.ReLU(),
                         nn.Linear(code, width), nn.ReLU(), nn.Linear(width, N_PIXELS))


@register("autoencoder_digits")
def autoencoder_digits(width: int = 32, code: int = 8, batch_size: int = 64, seed: int = 0,
                       device="cpu", dtype=torch.float32) -> ModuleTask:
    """An MLP autoencoder of the 8x8 digits (64 -> width -> code -> width -> 64), squared error.

    Options: ``width``, ``code`` (bottleneck units), ``batch_size``, ``seed``, ``device``,
    ``dtype``."""
    owner = "autoencoder_digits"
    check_width(owner, "width", width)
    check_width(owner, "code", code)
    check_batch_size(owner, batch_size, N_TRAIN)
    xt, _, xv, _ = digits_arrays()
    return from_module(lambda: autoencoder(width, code), torch.as_tensor(xt), F.mse_loss,
                       batch_size=batch_size, val_data=torch.as_tensor(xv), name=owner,
                       seed=seed, device=device, dtype=dtype)
