"""Which parametrization a width-parametrized model uses, and its readout multiplier.

Two choices, ``"mup"`` and ``"sp"``:

* μP, the Maximal Update Parametrization (Yang & Hu, "Feature Learning in Infinite-Width
  Neural Networks", ICML 2021; Yang et al., "Tensor Programs V", NeurIPS 2021, Table 8, and
  microsoft/mup's ``MuReadout``): input and hidden weights ~ N(0, 1/fan_in), the readout
  weight is zero-initialised and its output multiplied by ``output_mult / width_mult`` with
  ``width_mult = width / base_width``; (transformers) attention logits scaled by 1/d_head.
  Per-layer learning-rate multipliers live in :mod:`metaopt.mup.multipliers`.
* SP, the standard parametrization: every weight ~ N(0, 1/fan_in), readout multiplier 1,
  attention 1/sqrt(d_head), one global learning rate.

At ``width == base_width`` both use the same multipliers, so a learning rate tuned on the base
model is the one μP transfers to wider models.
"""
from __future__ import annotations

PARAMS = ("mup", "sp")


def check_param(owner: str, param: str) -> None:
    """One-line ``ValueError`` unless ``param`` is ``"mup"`` or ``"sp"``."""
    if param not in PARAMS:
        raise ValueError(f"{owner}: param must be one of {PARAMS}, got {param!r}")


def check_width(owner: str, name: str, value: int, minimum: int = 1) -> None:
    """One-line ``ValueError`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def readout_multiplier(param: str, width: int, base_width: int, output_mult: float = 1.0) -> float:
    """The readout's output factor: ``output_mult * base_width / width`` (μP) or 1 (SP)."""
    return output_mult * base_width / width if param == "mup" else 1.0
