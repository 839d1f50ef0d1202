"""The coordinate check for a learned optimizer: μP's test, with the LO making the updates.

As :func:`metaopt.mup.coord_check` (Tensor Programs V, §7; microsoft/mup's ``coord_check.py``),
but every update is ``lopt.update(theta, ...)`` with each tensor's ParamInfo, so μLO's per-layer
scales act. Train models of growing width for a few steps from the same seeds and record each
layer's mean |activation| on a fixed probe batch after every update: with a μLO on a μP model the
curves are flat in width (log-log slope ≈ 0); with the SP-LO on an SP model they grow.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from metaopt.mup import CoordCheck

from .base import LOpt, Theta
from .unroll import lopt_step


def lo_coord_check(lopt: LOpt, theta: Theta, make_task: Callable[[int], object],
                   widths: Sequence[int] = (64, 128, 256, 512, 1024), steps: int = 4,
                   seeds: Sequence[int] = (0,), progress: bool = True) -> CoordCheck:
    """Mean |activation| per layer after each of the first ``steps`` LO updates, per width.

    ``make_task(width)`` returns a task with ``activations(params, x) -> {layer: tensor}``
    (``mlp_digits``, ``charlm``)."""
    runs = [(w, s) for w in widths for s in seeds]
    per_run = {}
    for width, seed in tqdm(runs, desc="LO coord check", disable=not progress):
        per_run[width, seed] = _trajectory(lopt, theta, make_task(width), steps, seed)
    layers = tuple(per_run[runs[0]][0])
    values = np.array([[[np.mean([per_run[w, s][t][name] for s in seeds]) for w in widths]
                        for name in layers] for t in range(steps)])
    return CoordCheck(tuple(widths), layers, values)


def _trajectory(lopt, theta, task, steps, seed) -> list[dict[str, float]]:
    params = task.init(task.generator(seed))
    infos = task.param_info
    states = [lopt.init(p, i) for p, i in zip(params, infos)]
    batches = task.generator(10_000 + seed)
    probe = task.sample_batch(task.generator(20_000 + seed))[0]
    grad = torch.func.grad(task.loss)
    out = []
    with torch.no_grad():
        for t in range(1, steps + 1):
            with torch.enable_grad():
                grads = grad(params, task.sample_batch(batches))
            params, states = lopt_step(lopt, theta, params, list(grads), states,
                                       torch.tensor(float(t)), infos)
            acts = task.activations(params, probe)
            out.append({name: float(a.abs().mean()) for name, a in acts.items()})
    return out
