"""Save and load meta-parameters ``theta`` safely (safetensors + JSON metadata; no pickle).

The file holds the tensors plus metadata naming the learned optimizer (``lopt``: its name,
``class``: its class in :data:`LOPT_CLASSES`) and its configuration (``config``: the
constructor's keyword arguments as a JSON object). So

    learned.save_theta("theta.safetensors", theta, lopt)      # or opt.save(path)
    opt = learned.load("theta.safetensors", model)            # one line: class, config, theta
    lopt, theta = learned.load_lopt("theta.safetensors")

:func:`load_theta` checks every name, shape, dtype and value against the LO it is loaded into,
so a theta trained for another architecture, a non-float or non-finite tensor, or malformed
metadata is a one-line ``ValueError`` naming the file, never a silent mismatch or a traceback.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .base import LOpt, Theta
from .checkpoint import save_tensors
from .mlp_lopt import MLPLOpt

#: LO classes a theta file may name (rebuilt as ``cls(**config)``; never an import by name)
LOPT_CLASSES: dict[str, type] = {"MLPLOpt": MLPLOpt}
#: files saved before the class was recorded name only the LO (``lopt.name``)
LOPT_BY_NAME: dict[str, type] = {"mu_mlp_lopt": MLPLOpt, "mlp_lopt": MLPLOpt}
FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
MAX_CONFIG_CHARS = 100_000


def _config(lopt: LOpt) -> dict:
    return lopt.config() if hasattr(lopt, "config") else {}


def save_theta(path: str | os.PathLike, theta: Theta, lopt: LOpt) -> None:
    """Write ``theta`` (checked against ``lopt``) with the LO's name, class and configuration
    to ``path`` atomically."""
    theta = lopt.check_theta(theta)
    meta = {"lopt": lopt.name, "class": type(lopt).__name__,
            "config": json.dumps(_config(lopt), sort_keys=True)}
    save_tensors(path, theta, meta)


def _read(path: str | os.PathLike, device) -> tuple[dict[str, str], Theta]:
    """The file's metadata and tensors (one-line errors naming the file)."""
    where = repr(str(path))
    if not os.path.isfile(path):
        raise ValueError(f"no theta file at {where}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{where} is not a safetensors theta file ({first})") from None
    for k, v in tensors.items():
        if v.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{where}: theta[{k!r}] has dtype {v.dtype}; allowed: float32, "
                             "float64, bfloat16, float16")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{where}: theta[{k!r}] has non-finite values (NaN or inf)")
    return meta, tensors


def _saved_config(path, meta: dict[str, str]) -> dict[str, Any]:
    """The metadata's ``config`` as a dict of JSON scalars and flat lists."""
    where = repr(str(path))
    text = meta.get("config", "{}")
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError(f"{where}: metadata 'config' is too long ({len(text)} characters)")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{where}: metadata 'config' is not valid JSON (or nested too "
                         "deeply)") from None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: metadata 'config' must be a JSON object of the LO's "
                         f"options, got {type(config).__name__}")
    for k, v in config.items():
        items = v if isinstance(v, list) else [v]
        if not all(x is None or isinstance(x, (bool, int, float, str)) for x in items):
            raise ValueError(f"{where}: metadata config[{k!r}] must be a number, string, "
                             "boolean, null or a flat list of them")
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            raise ValueError(f"{where}: metadata config[{k!r}] is not finite")
    return config


def load_theta(path: str | os.PathLike, lopt: LOpt, device: str | torch.device = "cpu") -> Theta:
    """``theta`` from ``path``, checked against ``lopt`` (name, configuration, shapes, dtypes,
    finite values)."""
    meta, tensors = _read(path, device)
    if meta.get("lopt") not in (None, lopt.name):
        raise ValueError(f"{str(path)!r} holds a theta for {meta['lopt']!r}, not {lopt.name!r}")
    saved = _saved_config(path, meta)
    ours = _config(lopt)
    diff = sorted(k for k in saved if saved[k] != ours.get(k))
    if diff:
        theirs = ", ".join(f"{k}={saved[k]!r}" for k in diff)
        mine = ", ".join(f"{k}={ours.get(k)!r}" for k in diff)
        raise ValueError(f"{str(path)!r} was trained with {theirs}; this LO has {mine}")
    try:
        return lopt.check_theta(tensors)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None


def load_lopt(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[LOpt, Theta]:
    """The LO a theta file was saved from (its class and configuration) and its theta."""
    meta, _ = _read(path, device)
    cls = LOPT_CLASSES.get(meta["class"]) if "class" in meta else \
        LOPT_BY_NAME.get(meta.get("lopt", ""))
    if cls is None:
        raise ValueError(f"{str(path)!r} names LO class {meta.get('class')!r}; loadable: "
                         f"{', '.join(sorted(LOPT_CLASSES))}")
    config = _saved_config(path, meta)
    try:
        lopt = cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: its config does not build a {cls.__name__} ({e})") \
            from None
    return lopt, load_theta(path, lopt, device)


def load(path: str | os.PathLike, params, lr: float = 1.0, **kwargs):
    """A :class:`learned.LearnedOptimizer` of ``params`` (parameters, named parameters, param
    groups, or an ``nn.Module``: then with inferred roles, see
    :meth:`LearnedOptimizer.from_module`) running the LO and theta saved at ``path``."""
    from .optimizer import LearnedOptimizer
    lopt, theta = load_lopt(path)
    if isinstance(params, nn.Module):
        return LearnedOptimizer.from_module(params, lopt, theta, lr=lr, **kwargs)
    return LearnedOptimizer(params, lopt, theta, lr=lr, **kwargs)
