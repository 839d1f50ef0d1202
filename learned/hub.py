"""Pretrained learned optimizers shipped with the package (``learned/pretrained/*.safetensors``).

    opt = learned.pretrained("mulo_small", model)          # any nn.Module: μLO roles inferred
    opt = learned.pretrained("mulo_small", model.parameters(), lr=0.5)
    print(learned.model_card("mulo_small"))                # what it was meta-trained on, results

Each theta file carries its LO's class and configuration (:mod:`learned.theta_io`), so loading
one is :func:`learned.load`; beside it ``<name>.md`` is its model card. Files are package data
(``[tool.setuptools.package-data]`` in ``pyproject.toml``), read with ``importlib.resources``.
"""
from __future__ import annotations

from importlib import resources

from .theta_io import load, load_lopt

SUFFIX = ".safetensors"


def _folder():
    return resources.files("learned") / "pretrained"


def names() -> list[str]:
    """The names of the shipped pretrained LOs."""
    folder = _folder()
    if not folder.is_dir():
        return []
    return sorted(f.name[:-len(SUFFIX)] for f in folder.iterdir() if f.name.endswith(SUFFIX))


def _path(name: str, suffix: str):
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"no pretrained learned optimizer {name!r}; available: "
                         f"{', '.join(names()) or 'none'}")
    return _folder() / f"{name}{suffix}"


def pretrained(name: str, params, lr: float = 1.0, **kwargs):
    """A ready :class:`learned.LearnedOptimizer` running the shipped LO ``name`` on ``params``
    (an ``nn.Module``, whose parameters' roles and fans are then inferred for μLO's per-layer
    scales; or parameters, named parameters or param groups, stepped without per-layer scales).
    ``lr`` multiplies its meta-trained step; ``kwargs`` go to the optimizer (``weight_decay``,
    ``impl``, ``base``)."""
    with resources.as_file(_path(name, SUFFIX)) as path:
        return load(path, params, lr=lr, **kwargs)


def pretrained_lopt(name: str):
    """``(lopt, theta)`` of the shipped LO ``name`` (for meta-training on from it, or
    functional use)."""
    with resources.as_file(_path(name, SUFFIX)) as path:
        return load_lopt(path)


def model_card(name: str) -> str:
    """The model card of the shipped LO ``name`` (Markdown)."""
    return _path(name, SUFFIX).with_name(f"{name}.md").read_text()
