"""Small helpers on nested lists / tuples / dicts of tensors (the inner-training state).

Meta-training keeps each task's inner state as a tree with a leading *particle* axis, and
concatenates the trees of tasks that share shapes to run them in one ``torch.func.vmap``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from metaopt.helpers import flatten_tree, unflatten_tree


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``fn`` applied leafwise (tensors are leaves) to ``tree`` and same-shaped ``rest``."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, tree[k], *(r[k] for r in rest)) for k in tree}
    if isinstance(tree, (list, tuple)):
        out = [tree_map(fn, t, *(r[i] for r in rest)) for i, t in enumerate(tree)]
        return type(tree)(out) if isinstance(tree, tuple) else out
    return fn(tree, *rest)


def tree_leaves(tree: Any) -> list[Tensor]:
    """Every tensor in ``tree``, depth first."""
    out: list[Tensor] = []
    tree_map(out.append, tree)
    return out


def tree_cat(trees: list[Any], dim: int = 0) -> Any:
    """Concatenate same-structured trees leafwise along ``dim``."""
    return tree_map(lambda *xs: torch.cat(xs, dim), trees[0], *trees[1:])


def tree_stack(trees: list[Any], dim: int = 0) -> Any:
    """Stack same-structured trees leafwise along a new axis ``dim``."""
    return tree_map(lambda *xs: torch.stack(xs, dim), trees[0], *trees[1:])


def tree_split(tree: Any, sizes: list[int]) -> list[Any]:
    """Inverse of :func:`tree_cat` along axis 0: one tree per chunk of ``sizes``."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [tree_map(lambda x, a=a, n=n: x[a:a + n], tree) for a, n in zip(starts, sizes)]


def tree_index(tree: Any, i: int) -> Any:
    """Leafwise ``x[i]``."""
    return tree_map(lambda x: x[i], tree)


def tree_detach(tree: Any) -> Any:
    """Leafwise ``x.detach()``."""
    return tree_map(lambda x: x.detach(), tree)


def _paths(spec: Any, path: str) -> list[str]:
    """The ``/``-joined path of every leaf of a :func:`metaopt.helpers.flatten_tree` spec, in
    its leaf order."""
    if spec is None:
        return [path]
    kind, keys, subs = spec
    names = keys if kind == "dict" else range(keys)
    return [q for k, sub in zip(names, subs) for q in _paths(sub, f"{path}/{k}")]


def flatten_named(tree: Any, prefix: str) -> dict[str, Tensor]:
    """``{"prefix/path/to/leaf": tensor}`` (dict keys and list indices joined by ``/``)."""
    leaves, spec = flatten_tree(tree)
    return dict(zip(_paths(spec, prefix), leaves))


def fill_named(skeleton: Any, flat: dict[str, Tensor], prefix: str) -> Any:
    """Inverse of :func:`flatten_named`: ``skeleton``'s structure, leaves read from ``flat``.

    Raises ``ValueError`` naming the first missing entry or shape mismatch."""
    refs, spec = flatten_tree(skeleton)
    paths = _paths(spec, prefix)
    for path, ref in zip(paths, refs):
        if path not in flat:
            raise ValueError(f"checkpoint lacks {path!r}")
        if tuple(flat[path].shape) != tuple(ref.shape):
            raise ValueError(
                f"checkpoint entry {path!r} has shape {tuple(flat[path].shape)}, "
                f"expected {tuple(ref.shape)}"
            )
    return unflatten_tree([flat[p].to(device=r.device, dtype=r.dtype) for p, r in zip(paths, refs)],
                          spec)
