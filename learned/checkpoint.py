"""Crash-safe checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``ckpt-<step>.safetensors`` and ``latest.json`` naming it. Both are
written to a temporary file and moved into place with ``os.replace`` (files mode 0644),
tensors first, so a crash at any moment leaves the previous complete checkpoint readable; older
tensor files are removed only after ``latest.json`` points at the new one. Nothing is
unpickled on load, and a checkpoint may only name a tensor file inside its own folder.

Every problem with a checkpoint on disk (unreadable or non-object ``latest.json``, a tensor
file outside the folder, missing, truncated or corrupt) is a one-line
:class:`CheckpointError` (a ``ValueError``) naming the file. ``learned.meta_train`` and the
L2O trainer (``learned.l2o.meta_train_l2o``) share this format.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load, save
from torch import Tensor

from metaopt.helpers import write_atomic

LATEST = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint on disk that cannot be used; the message names the file."""


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor],
                 meta: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (moved to the CPU, made contiguous) to a safetensors file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    write_atomic(path, save(cpu, metadata=meta))


def save_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


def save_checkpoint(folder: str | os.PathLike, step: int, tensors: dict[str, Tensor],
                    meta: dict) -> Path:
    """Save one checkpoint for outer step ``step`` and drop the older tensor files."""
    folder = Path(folder)
    name = f"ckpt-{step:08d}.safetensors"
    save_tensors(folder / name, tensors)
    save_json(folder / LATEST, {**meta, "tensors": name, "outer_step": step})
    for old in folder.glob("ckpt-*.safetensors"):
        if old.name != name:
            old.unlink()
    return folder / name


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, Tensor], dict] | None:
    """``(tensors, meta)`` of the latest checkpoint in ``folder``, or None when there is none.

    ``meta`` is ``latest.json``: a JSON object whose ``tensors`` names a file in ``folder``
    and whose ``outer_step`` is an integer >= 0."""
    folder = Path(folder)
    latest = folder / LATEST
    if not latest.exists():
        return None
    meta = read_json_object(latest)
    step = meta.get("outer_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {latest}: 'outer_step' must be an integer >= 0, "
                              f"got {step!r}")
    return read_tensors(inside(folder, meta.get("tensors"), latest)), meta


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object, or a one-line :class:`CheckpointError` naming it."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({_one_line(e)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} must hold a JSON object, got "
                              f"{type(meta).__name__}")
    return meta


def inside(folder: Path, name: Any, named_in: Path) -> Path:
    """The file ``name`` (as written in ``named_in``) if it is a plain file in ``folder``."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"checkpoint {named_in}: 'tensors' must name a file, got {name!r}")
    path = folder / name
    if Path(name).is_absolute() or path.resolve().parent != folder.resolve():
        raise CheckpointError(f"checkpoint {named_in} names {name!r}, which is not a file inside "
                              f"{folder}; a checkpoint may only reference its own folder")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {named_in} names {name!r}, which is missing")
    return path


def read_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file, or a one-line :class:`CheckpointError` naming it."""
    try:
        return load(path.read_bytes())
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError)
        raise CheckpointError(f"checkpoint tensor file {path} is unreadable (truncated or "
                              f"corrupt: {_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
