"""Sharded (``DTensor``) parameters, as FSDP2's ``fully_shard`` makes them.

An elementwise rule runs on the shards as they are: every op of its update is a pointwise
``DTensor`` op, each rank updates its own shard, and nothing is communicated beyond what FSDP2
already does. A rule whose update reads the whole tensor (Shampoo's and SOAP's Gram matrices,
PSGD's factors, Muon's orthogonalisation, Adafactor's row/column statistics, subset norms,
per-tensor maxima) runs on the gathered tensor instead:

    g = all_gather(g_shard); p = all_gather(p_shard)        # 2 x numel elements received
    delta, state = rule.update(g, p, state, hp, step)        # the same on every rank
    p_shard -= shard(delta)                                  # local slice: no communication

Its state is kept whole (not sharded) on every rank, so such a member costs each rank the
full state of the tensors it owns plus two all-gathers per tensor per step: the
communication of one extra FSDP forward pass. (Distributed Shampoo instead assigns each
block's preconditioner to one rank; that is a different algorithm layout, not done here.)
"""
from __future__ import annotations

from torch import Tensor

try:  # torch >= 2.5
    from torch.distributed.tensor import DTensor, Replicate
except ImportError:  # pragma: no cover - torch without torch.distributed
    DTensor = None


def is_sharded(t: Tensor) -> bool:
    """Whether ``t`` is a ``DTensor`` (a parameter or gradient sharded by FSDP2)."""
    return DTensor is not None and isinstance(t, DTensor)


def gather(t: Tensor) -> Tensor:
    """The whole tensor on every rank (an all-gather for a sharded ``t``)."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(full: Tensor, like: Tensor) -> Tensor:
    """``full`` (the same on every rank) as a ``DTensor`` placed like ``like``: each rank keeps
    its own slice, so no data moves."""
    mesh = like.device_mesh
    replicated = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, like.placements)
