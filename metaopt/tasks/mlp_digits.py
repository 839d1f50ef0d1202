"""An MLP of any width and depth on the digits, in μP or standard parametrization.

The network is :mod:`metaopt.mup.mlp` (64 standardized pixels -> ``depth`` ReLU layers of
``width`` units -> 10 logits). With ``param="mup"`` the readout is zero-initialised and scaled by
``output_mult * base_width / width`` (Tensor Programs V, Table 8); train it with the per-layer
learning rates of :func:`metaopt.mup.lr_multipliers` (``task.base_param_info`` is the base
model's shapes) to transfer a learning rate tuned at ``base_width`` to any width.
"""
from __future__ import annotations

import torch

from ..mup.mlp import mlp_activations, mlp_forward, mlp_init, mlp_param_info
from ..mup.parametrization import check_param, check_width, readout_multiplier
from .digits_data import N_CLASSES, N_PIXELS, DigitsTask
from .registry import register


@register("mlp_digits")
class MLPDigits(DigitsTask):
    """Options: ``width`` units per layer, ``depth`` ReLU layers (1 = no hidden matrix),
    ``param`` "sp" | "mup", ``base_width`` and ``output_mult`` (μP readout), ``seed`` (the
    initialisation and batch stream used when no generator is passed), ``batch_size``,
    ``device``, ``dtype``. Batches are ``(x, y)``: x (B, 64) standardized pixels, y labels."""

    name = "mlp_digits"

    def __init__(self, width: int = 128, depth: int = 2, param: str = "sp", base_width: int = 64,
                 output_mult: float = 1.0, seed: int = 0, batch_size: int = 128,
                 device="cpu", dtype=torch.float32):
        check_param(self.name, param)
        check_width(self.name, "width", width)
        check_width(self.name, "depth", depth)
        check_width(self.name, "base_width", base_width)
        super().__init__(batch_size, seed, device, dtype)
        self.width, self.depth, self.param, self.base_width = width, depth, param, base_width
        self.readout_mult = readout_multiplier(param, width, base_width, output_mult)

    @property
    def param_info(self):
        return mlp_param_info(N_PIXELS, self.width, self.depth, N_CLASSES)

    @property
    def base_param_info(self):
        """Shapes at ``base_width`` under μP (for per-layer lrs); under SP, this model's own."""
        width = self.base_width if self.param == "mup" else self.width
        return mlp_param_info(N_PIXELS, width, self.depth, N_CLASSES)

    def init(self, generator=None):
        g = self._default_generator(generator)
        return mlp_init(self.param_info, self.param, g, self.device, self.dtype)

    def logits(self, params, x):
        return mlp_forward(params, x, self.readout_mult)

    def activations(self, params, x):
        """Every layer's output on inputs ``x`` (for the coordinate check)."""
        return mlp_activations(params, x, self.readout_mult)
