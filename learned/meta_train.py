"""``meta_train``: learn a learned optimizer's meta-parameters ``theta`` on a task family.

The outer loop of learned_optimization's ``SingleMachineGradientLearner`` with its truncated
estimators, in PyTorch: every outer step advances ``num_tasks`` inner trainings by one
truncation of ``truncation`` LO steps (vmapped over tasks and antithetic particles), forms a
meta-gradient estimate (PES, ES or TBPTT; see :mod:`learned.estimators`), and applies Adam
(the zoo's rule, functionally) to ``theta``. Inner runs reset when they reach the family's
horizon. Non-finite inner runs are logged, skipped and reset, never written into ``theta``.

Checkpoints (safetensors + JSON, see :mod:`learned.checkpoint`) hold ``theta``, the outer Adam
state, every inner state and every generator, so resuming reproduces an uninterrupted run bit
for bit.
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from metaopt import zoo
from metaopt.rule import apply

from .base import LOpt, Theta
from .checkpoint import load_checkpoint, save_checkpoint
from .estimators import PARTICLES, check_method, estimate
from .pool import InnerPool
from .pytree import fill_named, flatten_named
from .unroll import check_meta_loss


def meta_train(lopt: LOpt, task_family, steps: int, method: str = "pes", truncation: int = 20,
               num_tasks: int = 8, outer_lr: float = 1e-3, std: float = 0.01,
               checkpoint_dir: str | None = None, checkpoint_every: int = 50,
               device: str | torch.device = "cpu", seed: int = 0,
               meta_loss: str = "mean_train_loss", progress: bool = True,
               theta: Theta | None = None, resume: bool = True,
               callback: Callable[[int, float, list[int]], None] | None = None) -> Theta:
    """Meta-train ``lopt`` on ``task_family`` for ``steps`` outer steps; returns ``theta``.

    Args:
      lopt: a :class:`learned.base.LOpt`.
      task_family: has ``sample(generator) -> Task``, ``horizon`` and ``vmappable``
        (see :mod:`learned.task_family`).
      steps: total outer steps (a resumed run continues up to this count).
      method: ``"pes"`` | ``"es"`` | ``"tbptt"``.
      truncation: inner LO steps per outer step.
      num_tasks: inner trainings per estimate.
      outer_lr: Adam's learning rate on ``theta``.
      std: perturbation scale of PES / ES.
      checkpoint_dir: folder for checkpoints (None: no checkpoints).
      checkpoint_every: outer steps between checkpoints (one is also written at the end).
      device: where inner training runs.
      seed: seeds every random choice (tasks, inits, batches, perturbations).
      meta_loss: ``"mean_train_loss"`` | ``"final_train_loss"`` | ``"mean_log_train_loss"`` of
        each truncation (see :mod:`learned.unroll`; the log weighs the late, small losses).
      progress: show a tqdm bar with the meta-loss.
      theta: starting meta-parameters (default ``lopt.init_theta`` seeded with ``seed``).
      resume: continue from ``checkpoint_dir``'s checkpoint when there is one (else start over
        and overwrite it).
      callback: called as ``callback(outer_step, meta_loss, bad_slots)`` after every step.
    """
    cfg = _config(lopt, task_family, steps, method, truncation, num_tasks, outer_lr, std,
                  checkpoint_every, seed, meta_loss)
    device = torch.device(device)
    if theta is None:
        theta = lopt.init_theta(torch.Generator().manual_seed(seed))
    theta = {k: v.detach().to(device).clone() for k, v in lopt.check_theta(theta).items()}
    outer = zoo.rule("adam", lr=outer_lr)
    adam_states = [outer.init(v) for v in theta.values()]
    gen = torch.Generator().manual_seed(seed)
    pool = InnerPool(lopt, task_family, num_tasks, PARTICLES[method], seed, device, truncation,
                     meta_loss)
    start, history = 0, []
    ckpt = load_checkpoint(checkpoint_dir) if (checkpoint_dir and resume) else None
    if ckpt is not None:
        theta, adam_states, start, history = _restore(ckpt, cfg, theta, adam_states, gen, pool)

    bar = tqdm(total=steps, initial=start, disable=not progress, desc=f"meta-train ({method})")
    for step in range(start, steps):
        est = estimate(method, pool, theta, std, gen)
        if est.grad is not None:
            values, adam_states = apply(outer, list(theta.values()),
                                        [est.grad[k] for k in theta], adam_states, step + 1)
            theta = dict(zip(theta, values))
        history.append([step + 1, est.meta_loss, len(est.bad)])
        bar.update(1)
        bar.set_postfix(meta_loss=f"{est.meta_loss:.4g}", bad=len(est.bad))
        if callback is not None:
            callback(step + 1, est.meta_loss, est.bad)
        if checkpoint_dir and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            _save(checkpoint_dir, step + 1, cfg, theta, adam_states, gen, pool, history)
    bar.close()
    return theta


def _config(lopt, family, steps, method, truncation, num_tasks, outer_lr, std, every, seed,
            meta_loss) -> dict:
    if not isinstance(lopt, LOpt):
        raise ValueError(f"meta_train needs a learned.base.LOpt, got {type(lopt).__name__}")
    if not (hasattr(family, "sample") and hasattr(family, "horizon")):
        raise ValueError("meta_train needs a task family with sample(generator) and horizon")
    check_method(method)
    check_meta_loss(meta_loss)
    for name, v, low in (("steps", steps, 0), ("truncation", truncation, 1),
                         ("num_tasks", num_tasks, 1), ("checkpoint_every", every, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"meta_train: {name} must be an integer >= {low}, got {v!r}")
    for name, v in (("outer_lr", outer_lr), ("std", std)):
        if not (isinstance(v, (int, float)) and v > 0 and v < float("inf")):
            raise ValueError(f"meta_train: {name} must be a positive number, got {v!r}")
    return {"lopt": lopt.name, "family": repr(family), "method": method, "truncation": truncation,
            "num_tasks": num_tasks, "outer_lr": float(outer_lr), "std": float(std), "seed": seed,
            "meta_loss": meta_loss}


def _save(folder, step, cfg, theta, adam_states, gen, pool: InnerPool, history) -> None:
    tensors = {**flatten_named(theta, "theta"), **flatten_named(adam_states, "outer"),
               "gen/perturb": gen.get_state()}
    for s, slot in enumerate(pool.slots):
        tensors.update(flatten_named(slot.inner, f"slot/{s}/inner"))
        tensors[f"slot/{s}/batch_gen"] = slot.batch_gen.get_state()
        if slot.acc is not None:
            tensors.update(flatten_named(slot.acc, f"slot/{s}/acc"))
    meta = {"config": cfg, "history": history,
            "slots": [{"resets": sl.resets, "acc": sl.acc is not None} for sl in pool.slots]}
    save_checkpoint(folder, step, tensors, meta)


def _restore(ckpt, cfg, theta, adam_states, gen, pool: InnerPool):
    tensors, meta = ckpt
    for key, want in cfg.items():
        have = meta["config"].get(key)
        if have != want:
            raise ValueError(f"checkpoint was made with {key}={have!r}, this run has {want!r}; "
                             "use the same settings or another checkpoint folder")
    theta = fill_named(theta, tensors, "theta")
    adam_states = fill_named(adam_states, tensors, "outer")
    gen.set_state(tensors["gen/perturb"])
    for s, info in enumerate(meta["slots"]):
        slot = pool.restore_slot(s, info["resets"])
        slot.inner = fill_named(slot.inner, tensors, f"slot/{s}/inner")
        slot.batch_gen.set_state(tensors[f"slot/{s}/batch_gen"])
        if info["acc"]:
            slot.acc = fill_named(theta, tensors, f"slot/{s}/acc")
    return theta, adam_states, int(meta["outer_step"]), meta["history"]
