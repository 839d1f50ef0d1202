"""Truncated-BPTT meta-training of the L2O models, with Math-L2O's protocol (Liu et al. 2023,
§5; MS4L2O ``main.py``): each outer step samples a batch of problem instances, runs the model
from ``x_0`` for ``horizon`` iterations in segments of ``unroll``, and after every segment takes
one Adam step on

    meta-loss = (1 / unroll) sum_{k in segment} mean_instances F(x_k)

then detaches the iterate and the model state (truncation). Paper settings: horizon 100,
unroll 20, 500 outer steps, 64 instances, Adam lr 1e-2 (LASSO) / 3e-3 (logistic).

This trainer exists beside the generic :func:`learned.meta_train` because Math-L2O needs the
problem's structure (``grad f`` apart from the L1 term, the L1 weight and L) that the generic
task interface does not carry; L2O-DM and RNNprop also train with ``learned.meta_train``.
A checkpoint folder in :func:`learned.meta_train`'s format (:mod:`learned.checkpoint`:
safetensors + JSON, written atomically, nothing unpickled) lets a crashed run resume.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..base import LOpt, Theta
from ..checkpoint import LATEST, CheckpointError, load_checkpoint, save_checkpoint
from ..pytree import flatten_named
from .run import l2o_step


def meta_train_l2o(lopt: LOpt, make_problem: Callable[[int], object], outer_steps: int,
                   horizon: int = 100, unroll: int = 20, lr: float = 1e-2, seed: int = 0,
                   theta: Theta | None = None, checkpoint: str | None = None,
                   checkpoint_every: int = 10, progress: bool = True,
                   time_limit_s: float | None = None) -> tuple[Theta, list[float]]:
    """Meta-train ``lopt``; returns ``theta`` and the meta-loss of every segment.

    ``make_problem(i)`` builds the instances of outer step ``i`` (an
    :class:`~metaopt.tasks.lasso.L1Composite`, e.g. ``lambda i: Lasso(instances=64, seed=i)``);
    ``horizon`` must be a multiple of ``unroll``. Segments whose meta-loss is not finite are
    skipped (no update) and recorded as ``nan``. With ``time_limit_s`` training stops after the
    outer step that exceeds it (``len(history) / (horizon / unroll)`` steps were done).
    """
    if outer_steps < 0 or unroll < 1 or horizon < unroll or horizon % unroll or lr <= 0:
        raise ValueError(f"meta_train_l2o: need outer_steps >= 0, unroll >= 1, horizon a positive "
                         f"multiple of unroll and lr > 0; got outer_steps={outer_steps}, "
                         f"horizon={horizon}, unroll={unroll}, lr={lr}")
    if theta is None:
        theta = lopt.init_theta(torch.Generator().manual_seed(seed))
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in theta.items()}
    opt = torch.optim.Adam(list(theta.values()), lr=lr)
    start, history = 0, []
    if checkpoint:
        start, history = _load(checkpoint, theta, opt)
    bar = tqdm(range(start, outer_steps), disable=not progress, desc=f"meta-train {lopt.name}")
    t0 = time.perf_counter()
    for i in bar:
        history += _outer_step(lopt, theta, opt, make_problem(i), horizon, unroll)
        bar.set_postfix(meta_loss=f"{history[-1]:.4g}")
        if checkpoint and ((i + 1) % checkpoint_every == 0 or i + 1 == outer_steps):
            _save(checkpoint, theta, opt, i + 1, history)
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            break
    return {k: v.detach() for k, v in theta.items()}, history


def _outer_step(lopt, theta, opt, problem, horizon, unroll) -> list[float]:
    x = problem.init()[0]
    state = lopt.init(x)
    losses = []
    for seg in range(horizon // unroll):
        meta_loss = 0.0
        for k in range(seg * unroll + 1, (seg + 1) * unroll + 1):
            x, state = l2o_step(lopt, theta, problem, x, state, k)
            meta_loss = meta_loss + problem.objective(x).mean() / unroll
        opt.zero_grad()
        if torch.isfinite(meta_loss):
            meta_loss.backward()
            opt.step()
            losses.append(float(meta_loss.detach()))
        else:
            losses.append(math.nan)
        x, state = x.detach(), {k: v.detach() for k, v in state.items()}
    return losses


def _save(folder, theta, opt, step, history) -> None:
    """The shared checkpoint format (:mod:`learned.checkpoint`): theta and Adam's per-tensor
    state in safetensors, the history in JSON."""
    tensors = {**flatten_named({k: v.detach() for k, v in theta.items()}, "theta"),
               **flatten_named(opt.state_dict()["state"], "adam")}
    save_checkpoint(folder, step, tensors, {"config": {"theta": sorted(theta)},
                                            "history": history})


def _load(folder, theta, opt) -> tuple[int, list[float]]:
    if os.path.isfile(folder):
        raise CheckpointError(f"checkpoint {folder} is a file; give a folder (checkpoints are "
                              "a folder with latest.json, as learned.meta_train writes)")
    ckpt = load_checkpoint(folder)
    if ckpt is None:
        return 0, []
    tensors, meta = ckpt
    where = os.path.join(folder, LATEST)
    if not isinstance(meta.get("config"), dict) or meta["config"].get("theta") != sorted(theta):
        raise CheckpointError(f"checkpoint {where} holds another model's theta; remove it or use "
                              "another folder")
    history = meta.get("history")
    if not isinstance(history, list):
        raise CheckpointError(f"checkpoint {where}: 'history' must be a list")
    try:
        with torch.no_grad():
            for k, v in theta.items():
                v.copy_(tensors[f"theta/{k}"])
        state = opt.state_dict()
        state["state"] = {}
        for name, t in tensors.items():
            if name.startswith("adam/"):
                _, i, field = name.split("/", 2)
                state["state"].setdefault(int(i), {})[field] = t
        opt.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {where}: {' '.join(str(e).split())}") from None
    return int(meta["outer_step"]), [float(h) for h in history]
