"""Atomic file output: a reader (or a crash) never sees a half-written file. Lives in
:mod:`metaopt.helpers`; re-exported here for old imports."""
from ..helpers import write_atomic

__all__ = ["write_atomic"]
