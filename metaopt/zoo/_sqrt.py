"""Kept for old imports: :func:`metaopt.helpers.sqrt0`."""
from ..helpers import sqrt0

__all__ = ["sqrt0"]
