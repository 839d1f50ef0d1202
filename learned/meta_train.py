"""``meta_train``: learn a learned optimizer's meta-parameters ``theta`` on a task family.

The outer loop of learned_optimization's ``SingleMachineGradientLearner`` with its truncated
estimators, in PyTorch: every outer step advances ``num_tasks`` inner trainings by one
truncation of ``truncation`` LO steps (vmapped over tasks and antithetic particles), forms a
meta-gradient estimate with the estimator named by ``method`` (PES, ES, TBPTT or any other in
:mod:`learned.estimators`), and applies Adam (the zoo's rule, functionally) to ``theta``. Inner
runs reset when they reach the family's horizon. Non-finite inner runs are logged, skipped and
reset, never written into ``theta``. Under an initialised ``torch.distributed`` process group
the slots are shared among the ranks (:mod:`learned.distributed`) with the same result.

Checkpoints (safetensors + JSON, see :mod:`learned.checkpoint`) hold ``theta``, the outer Adam
state, the estimator's state (every inner state and generator) and the perturbation generator,
so resuming reproduces an uninterrupted run bit for bit. One is written every
``checkpoint_every`` outer steps, every ``checkpoint_seconds`` of wall clock, at the end, and
when the run is interrupted (Ctrl-C finishes the current outer step, saves, and re-raises
``KeyboardInterrupt``; a second Ctrl-C stops at once).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from metaopt import zoo
from metaopt.rule import apply

from . import estimators
from .base import LOpt, Theta
from .checkpoint import LATEST, CheckpointError, load_checkpoint, save_checkpoint
from .distributed import Comm, current
from .interrupt import deferred_interrupt
from .pytree import fill_named, flatten_named
from .unroll import check_meta_loss


def meta_train(lopt: LOpt, task_family, steps: int, method: str = "pes", truncation: int = 20,
               num_tasks: int = 8, outer_lr: float = 1e-3, std: float = 0.01,
               checkpoint_dir: str | None = None, checkpoint_every: int = 50,
               device: str | torch.device = "cpu", seed: int = 0,
               meta_loss: str = "mean_train_loss", progress: bool = True,
               theta: Theta | None = None, resume: bool = True,
               callback: Callable[[int, float, list[int]], None] | None = None,
               checkpoint_seconds: float = 300.0, tasks_per_vmap: int | None = None) -> Theta:
    """Meta-train ``lopt`` on ``task_family`` for ``steps`` outer steps; returns ``theta``.

    Args:
      lopt: a :class:`learned.base.LOpt`.
      task_family: has ``sample(generator) -> Task``, ``horizon`` and ``vmappable``
        (see :mod:`learned.task_family`).
      steps: total outer steps (a resumed run continues up to this count).
      method: a registered estimator: ``"pes"`` | ``"es"`` | ``"tbptt"`` | any added one.
      truncation: inner LO steps per outer step.
      num_tasks: inner trainings per estimate.
      outer_lr: Adam's learning rate on ``theta``.
      std: perturbation scale of PES / ES.
      checkpoint_dir: folder for checkpoints (None: no checkpoints).
      checkpoint_every: outer steps between checkpoints (one is also written at the end, on
        Ctrl-C, and every ``checkpoint_seconds``).
      device: where inner training runs.
      seed: seeds every random choice (tasks, inits, batches, perturbations).
      meta_loss: ``"mean_train_loss"`` | ``"final_train_loss"`` | ``"mean_log_train_loss"`` of
        each truncation (see :mod:`learned.unroll`; the log weighs the late, small losses).
      progress: show a tqdm bar with the meta-loss and the expected time left.
      theta: starting meta-parameters (default ``lopt.init_theta`` seeded with ``seed``).
      resume: continue from ``checkpoint_dir``'s checkpoint when there is one (else start over
        and overwrite it).
      callback: called as ``callback(outer_step, meta_loss, bad_slots)`` after every step.
      checkpoint_seconds: wall-clock seconds between checkpoints (besides ``checkpoint_every``).
      tasks_per_vmap: slots run in one ``torch.func.vmap`` batch (vmappable families; default:
        all of a process's slots). Runs with the same value give the same bits in any number
        of processes (:mod:`learned.distributed`).
    """
    cfg = _config(lopt, task_family, steps, method, truncation, num_tasks, outer_lr, std,
                  checkpoint_every, checkpoint_seconds, seed, meta_loss, tasks_per_vmap)
    device, comm = torch.device(device), current()
    if theta is None:
        theta = lopt.init_theta(torch.Generator().manual_seed(seed))
    theta = {k: v.detach().to(device).clone() for k, v in lopt.check_theta(theta).items()}
    outer = zoo.rule("adam", lr=outer_lr)
    adam_states = [outer.init(v) for v in theta.values()]
    gen = torch.Generator().manual_seed(seed)
    est = estimators.get(method)(lopt, task_family, num_tasks, seed=seed, device=device,
                                 truncation=truncation, meta_loss=meta_loss, std=std, comm=comm,
                                 tasks_per_vmap=tasks_per_vmap)
    start, history = 0, []
    ckpt = load_checkpoint(checkpoint_dir) if (checkpoint_dir and resume) else None
    if ckpt is not None:
        theta, adam_states, start, history = _restore(ckpt, checkpoint_dir, cfg, theta,
                                                      adam_states, gen, est)

    def save(step):
        if checkpoint_dir:
            _save(checkpoint_dir, step, cfg, theta, adam_states, gen, est, history, comm)

    bar = tqdm(total=steps, initial=start, disable=not (progress and comm.is_root),
               desc=f"meta-train ({method})", unit="step")
    last_save = time.monotonic()
    with deferred_interrupt("meta-train", saving=bool(checkpoint_dir)) as interrupt:
        for step in range(start, steps):
            e = est.estimate(theta, gen)
            if e.grad is not None:
                values, adam_states = apply(outer, list(theta.values()),
                                            [e.grad[k] for k in theta], adam_states, step + 1)
                theta = dict(zip(theta, values))
            history.append([step + 1, e.meta_loss, len(e.bad)])
            bar.update(1)
            bar.set_postfix(meta_loss=f"{e.meta_loss:.4g}", bad=len(e.bad))
            if callback is not None:
                callback(step + 1, e.meta_loss, e.bad)
            stop, due = comm.any([interrupt.requested,
                                  time.monotonic() - last_save >= checkpoint_seconds])
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps or due or stop:
                save(step + 1)
                last_save = time.monotonic()
            if stop:
                bar.close()
                interrupt.stop(step + 1)
    bar.close()
    return theta


def _config(lopt, family, steps, method, truncation, num_tasks, outer_lr, std, every, seconds,
            seed, meta_loss, tasks_per_vmap) -> dict:
    if not isinstance(lopt, LOpt):
        raise ValueError(f"meta_train needs a learned.base.LOpt, got {type(lopt).__name__}")
    if not (hasattr(family, "sample") and hasattr(family, "horizon")):
        raise ValueError("meta_train needs a task family with sample(generator) and horizon "
                         "(wrap one task as learned.SingleTask(task, horizon), or use "
                         "learned.TaskChoice)")
    estimators.check_method(method)
    check_meta_loss(meta_loss)
    for name, v, low in (("steps", steps, 0), ("truncation", truncation, 1),
                         ("num_tasks", num_tasks, 1), ("checkpoint_every", every, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"meta_train: {name} must be an integer >= {low}, got {v!r}")
    if tasks_per_vmap is not None and (not isinstance(tasks_per_vmap, int) or
                                       isinstance(tasks_per_vmap, bool) or tasks_per_vmap < 1):
        raise ValueError(f"meta_train: tasks_per_vmap must be None or an integer >= 1, got "
                         f"{tasks_per_vmap!r}")
    for name, v in (("outer_lr", outer_lr), ("std", std), ("checkpoint_seconds", seconds)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")):
            raise ValueError(f"meta_train: {name} must be a positive number, got {v!r}")
    return {"lopt": lopt.name, "family": repr(family), "method": method, "truncation": truncation,
            "num_tasks": num_tasks, "outer_lr": float(outer_lr), "std": float(std), "seed": seed,
            "meta_loss": meta_loss}


def _save(folder, step, cfg, theta, adam_states, gen, est, history, comm: Comm) -> None:
    slots = est.state(theta)  # collective: every rank takes part
    if comm.is_root:
        metas, slot_tensors = slots
        tensors = {**flatten_named(theta, "theta"), **flatten_named(adam_states, "outer"),
                   "gen/perturb": gen.get_state(), **slot_tensors}
        save_checkpoint(folder, step, tensors, {"config": cfg, "history": history,
                                                "slots": metas})
    comm.barrier()


def _restore(ckpt, folder, cfg, theta, adam_states, gen, est):
    tensors, meta = ckpt
    where = Path(folder) / LATEST
    slots = meta.get("slots")
    if not (isinstance(meta.get("config"), dict) and isinstance(meta.get("history"), list)
            and isinstance(slots, list) and all(_good_slot(m) for m in slots)):
        raise CheckpointError(f"checkpoint {where} is not a meta-training checkpoint (needs a "
                              "config object, a history list and a list of slots with resets)")
    for key, want in cfg.items():
        have = meta["config"].get(key)
        if have != want:
            raise ValueError(f"checkpoint {where} was made with {key}={have!r}, this run has "
                             f"{want!r}; use the same settings or another checkpoint folder")
    try:
        filled = fill_named(theta, tensors, "theta")  # dicts come back in sorted key order
        theta = {k: filled[k] for k in theta}  # ... but the outer Adam states follow theta's
        adam_states = fill_named(adam_states, tensors, "outer")
        gen.set_state(tensors["gen/perturb"])
        est.load_state(slots, tensors, theta)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint {where}: {' '.join(str(e).split())}") from None
    return theta, adam_states, int(meta["outer_step"]), meta["history"]


def _good_slot(m) -> bool:
    return (isinstance(m, dict) and isinstance(m.get("resets"), int)
            and not isinstance(m.get("resets"), bool) and m["resets"] >= 0)
