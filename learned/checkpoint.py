"""Crash-safe checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``ckpt-<step>.safetensors`` and ``latest.json`` naming it. Both are
written to a temporary file and moved into place with ``os.replace``, tensors first, so a crash
at any moment leaves the previous complete checkpoint readable; older tensor files are removed
only after ``latest.json`` points at the new one. Nothing is unpickled on load.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

LATEST = "latest.json"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor],
                 meta: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (moved to the CPU, made contiguous) to a safetensors file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=meta))


def save_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)

    _atomic_write(path, write)


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
    """``(tensors, meta)`` of the latest checkpoint in ``folder``, or None when there is none."""
    folder = Path(folder)
    latest = folder / LATEST
    if not latest.exists():
        return None
    with open(latest) as f:
        meta = json.load(f)
    tensor_file = folder / meta.get("tensors", "")
    if not tensor_file.is_file():
        raise ValueError(f"checkpoint {latest} names {tensor_file.name!r}, which is missing")
    return load_file(str(tensor_file)), meta
