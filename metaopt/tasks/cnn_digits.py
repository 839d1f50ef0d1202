"""A small convolutional network on the digits (8x8 grey images), functional ``conv2d``.

    h1 = relu(conv3x3(x; C channels, padding 1))       (B, C, 8, 8)     role input
    h2 = relu(conv3x3(h1; C channels, padding 1))      (B, C, 8, 8)     role hidden
    p  = avgpool2x2(h2)                                (B, C, 4, 4)
    z  = W_out flatten(p) + b_out                      (B, 10)          role output

LeCun et al. 1998 in miniature. Weights N(0, 1/fan_in) (fan_in = 9 x input channels, 16 C for the
readout), biases 0. Batches are the flat standardized pixels of :mod:`metaopt.tasks.digits_data`,
reshaped to images here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..mup.parametrization import check_width
from ..params import ParamInfo
from .digits_data import N_CLASSES, DigitsTask
from .registry import register


@register("cnn_digits")
class CNNDigits(DigitsTask):
    name = "cnn_digits"

    def __init__(self, channels: int = 16, seed: int = 0, batch_size: int = 128,
                 device="cpu", dtype=torch.float32):
        check_width(self.name, "channels", channels)
        super().__init__(batch_size, seed, device, dtype)
        self.channels = channels

    @property
    def param_info(self):
        c = self.channels
        return [ParamInfo("conv1.w", "input", 9, c), ParamInfo("conv1.b", "bias", 1, c),
                ParamInfo("conv2.w", "hidden", 9 * c, c), ParamInfo("conv2.b", "bias", 1, c),
                ParamInfo("out.w", "output", 16 * c, N_CLASSES),
                ParamInfo("out.b", "bias", 1, N_CLASSES)]

    def init(self, generator=None):
        g = self._default_generator(generator)
        c = self.channels
        shapes = [(c, 1, 3, 3), (c,), (c, c, 3, 3), (c,), (N_CLASSES, 16 * c), (N_CLASSES,)]
        params = []
        for info, shape in zip(self.param_info, shapes):
            if info.role == "bias":
                params.append(torch.zeros(shape, device=self.device, dtype=self.dtype))
            else:
                w = torch.randn(shape, generator=g, device=self.device, dtype=self.dtype)
                params.append(w / info.fan_in**0.5)
        return params

    def logits(self, params, x):
        w1, b1, w2, b2, w3, b3 = params
        h = x.reshape(-1, 1, 8, 8)
        h = torch.relu(F.conv2d(h, w1, b1, padding=1))
        h = torch.relu(F.conv2d(h, w2, b2, padding=1))
        return F.avg_pool2d(h, 2).flatten(1) @ w3.T + b3
