"""Worker functions for the multi-process zoo tests (importable by spawned processes).

Each worker joins a gloo group through a shared file, trains a tiny float64 MLP with one zoo
member for a few steps under DistributedDataParallel or FSDP2 (``fully_shard``), and rank 0
writes the final full parameters to ``out`` (safetensors) for the test to compare against a
single-process run on the whole batch.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from safetensors.torch import save_file

STEPS = 3
BATCH = 16


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 3)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(BATCH, 6, dtype=torch.float64, generator=g),
            torch.randn(BATCH, 3, dtype=torch.float64, generator=g))


def train(model, opt, x, y, steps: int = STEPS, world: int = 1) -> None:
    """``steps`` steps of mean squared error in the closure form (members that need the loss
    get it). The closure returns the mean loss over the ``world`` ranks, since Polyak step
    sizes need the loss of the objective whose (averaged) gradient they see."""
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            if world > 1:
                loss = loss.detach().clone()
                dist.all_reduce(loss)
                loss = loss / world
            return loss
        opt.step(closure)


def _halves(x):
    return [x[r * BATCH // 2:(r + 1) * BATCH // 2] for r in range(2)]


def reference(member: str, hp: dict) -> dict[str, torch.Tensor]:
    """The single-process result on the whole batch, with the gradient formed as the two
    ranks form it (the average of the two half-batch mean gradients, which equals the
    full-batch gradient up to round-off; SOAP's eigenbases are sensitive even to that)."""
    from metaopt import zoo

    model = tiny_model()
    opt = zoo.create(member, model.parameters(), **hp)
    xs, ys = _halves(batch()[0]), _halves(batch()[1])
    for _ in range(STEPS):
        def closure():
            grads, losses = [], []
            for xh, yh in zip(xs, ys):
                opt.zero_grad()
                loss = (model(xh) - yh).pow(2).mean()
                loss.backward()
                grads.append([p.grad.clone() for p in model.parameters()])
                losses.append(loss.detach())
            for p, *gs in zip(model.parameters(), *grads):
                p.grad = sum(gs) / len(gs)
            return sum(losses) / len(losses)
        opt.step(closure)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _join(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)


def _run_members(model_fn, rank: int, world: int, members: dict, out_dir: str,
                 gather) -> None:
    """Train a fresh wrapped model with each member; rank 0 writes ``out_dir/<member>.st``
    (the full parameters) or ``out_dir/<member>.err`` (the error's one line)."""
    from metaopt import zoo

    x, y = batch()
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for member, hp in members.items():
        model = model_fn()
        try:
            train(model, zoo.create(member, model.parameters(), **hp), x[rows], y[rows],
                  world=world)
            result = gather(model)
        except Exception as err:  # the test checks the message of members that refuse
            if rank == 0:
                with open(os.path.join(out_dir, member + ".err"), "w") as f:
                    f.write(f"{type(err).__name__}: {str(err).splitlines()[0]}")
            continue
        if rank == 0:
            save_file({k: v.contiguous() for k, v in result.items()},
                      os.path.join(out_dir, member + ".st"))


def ddp_worker(rank: int, world: int, init_file: str, members: dict, out_dir: str) -> None:
    """DDP: each rank sees its slice of the batch; DDP averages the gradients."""
    from torch.nn.parallel import DistributedDataParallel

    _join(rank, world, init_file)
    _run_members(lambda: DistributedDataParallel(tiny_model()), rank, world, members, out_dir,
                 lambda m: dict(m.module.state_dict()))
    dist.destroy_process_group()


def fsdp_worker(rank: int, world: int, init_file: str, members: dict, out_dir: str) -> None:
    """FSDP2: every Linear and the whole model sharded with ``fully_shard``; parameters are
    ``DTensor`` shards. Each rank sees its slice of the batch."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _join(rank, world, init_file)
    mesh = init_device_mesh("cpu", (world,))

    def sharded():
        model = tiny_model()
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)

    _run_members(sharded, rank, world, members, out_dir,
                 lambda m: {k: v.full_tensor() for k, v in m.state_dict().items()})
    dist.destroy_process_group()
