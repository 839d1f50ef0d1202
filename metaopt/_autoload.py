"""Import every module of a package so that its ``@register`` decorators run."""
from __future__ import annotations

import importlib
import pkgutil


def import_submodules(package_name: str, package_path) -> None:
    """Import each module under ``package_path`` (skipping private ``_*`` modules)."""
    for mod in pkgutil.iter_modules(package_path):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package_name}.{mod.name}")
