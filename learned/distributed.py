"""Meta-training across processes with ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Each of the ``world`` processes (ranks) holds some of the ``num_tasks`` inner trainings
(slots): consecutive chunks of ``tasks_per_vmap`` slots (one ``torch.func.vmap`` batch each; by
default one chunk per rank) dealt round-robin. Every rank draws the same perturbations from the same seed
(the draws for all slots, using its own), so no randomness is sent. After a truncation the
ranks exchange only, per slot, the scalar meta-loss and the gradient estimate (an
``all_gather`` of float64 rows, exact for every float dtype); every rank then averages all
slots in slot order, exactly as one process does, and applies the same outer step. Thetas stay
identical on every rank without ever being sent, and the result equals the single-process run
with the same seed: bit for bit when the vmapped batches are the same (the same
``tasks_per_vmap``, or a family that is not vmappable), else to rounding (a CPU kernel may
round a batch of 6 rows differently from one of 10).

Checkpoints gather every slot's state on rank 0, which alone writes them; each rank of a
resumed run (with any number of ranks) loads the slots it now holds.

Launch with ``torchrun --standalone --nproc-per-node N -m learned.cli ...`` (or ``metaopt
meta-train --nproc N``, which runs that); a script calls :func:`init_from_env` first and
:func:`learned.meta_train` then uses the process group it finds.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from .estimators.base import Estimator, SlotEstimate

# float dtypes of a slot's meta-loss, coded in the exchanged rows
LOSS_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Comm:
    """One process: every slot is local and nothing is exchanged."""

    rank, world = 0, 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def owners(self, n: int, chunk: int | None = None) -> list[int]:
        """The rank holding each of ``n`` slots: consecutive chunks of ``chunk`` slots (one
        ``vmap`` batch each) dealt round-robin; ``None`` gives each rank one chunk."""
        return [(s // (chunk or -(-n // self.world))) % self.world for s in range(n)]

    def owned(self, n: int, chunk: int | None = None) -> list[int]:
        """The slots of ``n`` this rank holds."""
        return [s for s, r in enumerate(self.owners(n, chunk)) if r == self.rank]

    def any(self, flags: list[bool]) -> list[bool]:
        """Each flag, raised on any rank (so all ranks save or stop at the same step)."""
        return list(flags)

    def gather_rows(self, rows: dict[int, Tensor], owners: list[int]) -> list[Tensor]:
        """Every rank's vectors ``rows[s]`` (for its own slots) -> every slot's row, in slot
        order (one process holds them all)."""
        return [rows[s] for s in range(len(owners))]

    def gather_slot_estimates(self, mine: dict, owners: list[int], theta) -> list:
        return [mine[s] for s in range(len(owners))]

    def gather_slot_states(self, est: Estimator, theta) -> tuple[list[dict], dict[str, Tensor]]:
        metas, tensors = [], {}
        for s in range(est.num_tasks):
            metas.append(est.slot_meta(s))
            tensors.update({f"slot/{s}/{k}": v for k, v in est.slot_tensors(s).items()})
        return metas, tensors

    def barrier(self) -> None:
        pass


LOCAL = Comm()


class TorchComm(Comm):
    """The default ``torch.distributed`` process group (already initialised)."""

    def __init__(self):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        nccl = dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else \
            torch.device("cpu")

    def gather_rows(self, rows: dict[int, Tensor], owners: list[int]) -> list[Tensor]:
        """Every rank's float64 vectors ``rows[s]`` (for its own slots) -> every slot's row."""
        n = len(owners)
        lengths = torch.zeros(n, dtype=torch.int64, device=self.device)
        for s, r in rows.items():
            lengths[s] = r.numel()
        dist.all_reduce(lengths)
        buf = torch.zeros(n, int(lengths.max()), dtype=torch.float64, device=self.device)
        for s, r in rows.items():
            buf[s, :r.numel()] = r.to(self.device)
        parts = [torch.empty_like(buf) for _ in range(self.world)]
        dist.all_gather(parts, buf)
        return [parts[owners[s]][s, :int(lengths[s])] for s in range(n)]

    def any(self, flags: list[bool]) -> list[bool]:
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def gather_slot_estimates(self, mine: dict, owners: list[int], theta) -> list:
        rows = self.gather_rows({s: _encode_estimate(e, theta) for s, e in mine.items()}, owners)
        return [mine[s] if s in mine else _decode_estimate(r, theta) for s, r in enumerate(rows)]

    def gather_slot_states(self, est: Estimator, theta):
        keys = est.slot_meta_keys
        rows = {}
        for s in est.pool.slots:
            meta = est.slot_meta(s)
            rows[s] = torch.cat([torch.tensor([float(meta[k]) for k in keys], dtype=torch.float64),
                                 _flat(est.slot_tensors(s)).cpu()])
        rows = self.gather_rows(rows, est.owners)
        if not self.is_root:
            return None
        metas, tensors = [], {}
        for s, row in enumerate(rows):
            meta = {k: int(v) for k, v in zip(keys, row[:len(keys)].tolist())}
            mine = (est.slot_tensors(s) if s in est.pool.slots
                    else _unflat(row[len(keys):], est.slot_skeleton(s, meta, theta)))
            metas.append(meta)
            tensors.update({f"slot/{s}/{k}": v for k, v in mine.items()})
        return metas, tensors

    def barrier(self) -> None:
        dist.barrier()


def _flat(tensors: dict[str, Tensor]) -> Tensor:
    """Every tensor (sorted by name) as one float64 vector (exact for every float and small
    integer dtype, the generator states' uint8 included)."""
    return torch.cat([tensors[k].detach().reshape(-1).to("cpu", torch.float64)
                      for k in sorted(tensors)]) if tensors else torch.zeros(0, dtype=torch.float64)


def _unflat(vec: Tensor, skeleton: dict[str, Tensor]) -> dict[str, Tensor]:
    out, at = {}, 0
    for k in sorted(skeleton):
        ref = skeleton[k]
        out[k] = vec[at:at + ref.numel()].reshape(ref.shape).to(ref.device, ref.dtype)
        at += ref.numel()
    if at != vec.numel():
        raise RuntimeError(f"slot state of {vec.numel()} numbers does not match its skeleton "
                           f"({at}); the ranks disagree about the slots")
    return out


def _encode_estimate(e: SlotEstimate | None, theta) -> Tensor:
    if e is None:
        return torch.zeros(1, dtype=torch.float64)
    head = torch.tensor([1.0, float(LOSS_DTYPES.index(e.loss.dtype))], dtype=torch.float64)
    return torch.cat([head, e.loss.detach().reshape(1).to("cpu", torch.float64),
                      _flat({k: e.grad[k] for k in theta})])


def _decode_estimate(row: Tensor, theta):
    from .estimators.base import SlotEstimate

    if row[0] == 0:
        return None
    ref = next(iter(theta.values()))
    loss = row[2].to(ref.device, LOSS_DTYPES[int(row[1])])
    return SlotEstimate(_unflat(row[3:], theta), loss)


def current() -> Comm:
    """The initialised default process group with more than one rank, else :data:`LOCAL`."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchComm()
    return LOCAL


def init_from_env(device: str | torch.device = "cpu") -> Comm:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``...): gloo for a CPU run, NCCL (one GPU per local rank) for CUDA.
    Without those variables (a plain run) nothing happens and :data:`LOCAL` is returned."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return LOCAL
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()
