"""Save and load meta-parameters ``theta`` safely (safetensors; no pickle).

The file holds the tensors plus metadata naming the learned optimizer and its configuration;
:func:`load_theta` checks every name and shape against the LO it is loaded into, so a theta
trained for another architecture is a one-line ``ValueError``, never a silent mismatch.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .base import LOpt, Theta
from .checkpoint import save_tensors


def _config(lopt: LOpt) -> dict:
    return lopt.config() if hasattr(lopt, "config") else {}


def save_theta(path: str | os.PathLike, theta: Theta, lopt: LOpt) -> None:
    """Write ``theta`` (checked against ``lopt``) to ``path`` atomically."""
    theta = lopt.check_theta(theta)
    meta = {"lopt": lopt.name, "config": json.dumps(_config(lopt), sort_keys=True)}
    save_tensors(path, theta, meta)


def load_theta(path: str | os.PathLike, lopt: LOpt, device: str | torch.device = "cpu") -> Theta:
    """``theta`` from ``path``, checked against ``lopt`` (name, configuration, shapes)."""
    if not os.path.isfile(path):
        raise ValueError(f"no theta file at {str(path)!r}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a safetensors theta file ({e})") from None
    if meta.get("lopt") not in (None, lopt.name):
        raise ValueError(f"{str(path)!r} holds a theta for {meta['lopt']!r}, not {lopt.name!r}")
    saved = json.loads(meta.get("config", "{}"))
    ours = _config(lopt)
    diff = sorted(k for k in saved if saved[k] != ours.get(k))
    if diff:
        theirs = ", ".join(f"{k}={saved[k]!r}" for k in diff)
        mine = ", ".join(f"{k}={ours.get(k)!r}" for k in diff)
        raise ValueError(f"{str(path)!r} was trained with {theirs}; this LO has {mine}")
    return lopt.check_theta(tensors)
