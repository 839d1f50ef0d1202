"""The coordinate check: is a parametrization's training dynamics width-independent?

Following Tensor Programs V (Yang et al. 2021, §7 / Appendix D) and microsoft/mup's
``coord_check.py``: train models of growing width for a few steps with the same base learning
rate and record, after each update ``t``, every layer's mean absolute activation
``mean |x|`` on a fixed probe batch. Under a correct μP these curves are flat in width (each
coordinate moves by Θ(1)); under SP with Adam they grow (roughly ∝ width after one step), i.e.
the log-log slope against width is ≈ 0 under μP and clearly positive under SP.

Models come from a ``make_task(width)`` callable returning a task with ``init``,
``sample_batch``, ``loss``, ``param_info``, ``base_param_info`` and
``activations(params, x) -> {layer: tensor}`` (``mlp_digits`` and ``charlm`` have them).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..helpers import write_atomic
from ..rule import apply, init_states
from .multipliers import lr_multipliers, per_tensor_hp


@dataclass(frozen=True)
class CoordCheck:
    """``values[t, l, w]``: mean |activation| of ``layers[l]`` after ``t + 1`` updates at
    ``widths[w]``, averaged over seeds."""

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    values: np.ndarray

    def slopes(self, step: int = -1) -> dict[str, float]:
        """Each layer's least-squares slope of log(mean |x|) against log(width) after update
        ``step`` (0-based; -1 is the last): 0 means width-independent. A layer whose
        activations collapsed to exactly 0 (every ReLU dead) counts as 1e-30, a large finite
        negative slope rather than log(0)."""
        logw = np.log(np.asarray(self.widths, dtype=np.float64))
        return {name: float(np.polyfit(logw, np.log(np.maximum(self.values[step, i], 1e-30)),
                                       1)[0])
                for i, name in enumerate(self.layers)}


def coord_check(
    make_task: Callable[[int], object],
    widths: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
    steps: int = 4,
    lr: float = 1e-2,
    rule=None,
    kind: str = "adam",
    seeds: Sequence[int] = (0,),
    progress: bool = True,
) -> CoordCheck:
    """Mean |activation| per layer after each of the first ``steps`` updates, for each width.

    Args:
      make_task: ``width -> task`` (same parametrization and base width for all widths).
      lr: the base learning rate; each tensor's is ``lr`` times its μP multiplier from
        :func:`~metaopt.mup.multipliers.lr_multipliers` (all 1 under SP).
      rule: the update rule (default ``zoo.rule("adam")``); ``kind`` picks the multipliers.
      seeds: initialisations (and batch streams) to average over.
    """
    from tqdm.auto import tqdm

    from .. import zoo

    if len(set(widths)) < 2 or min(widths) < 1:
        raise ValueError(f"coord_check: need at least two distinct positive widths, got {widths}")
    if steps < 1 or not seeds:
        raise ValueError(f"coord_check: need steps >= 1 and a seed, got {steps}, {seeds}")
    rule = rule if rule is not None else zoo.rule("adam")
    runs = [(w, s) for w in widths for s in seeds]
    per_run = {}
    for width, seed in tqdm(runs, desc="coord check", disable=not progress):
        per_run[width, seed] = _trajectory(make_task(width), rule, kind, lr, steps, seed)
    layers = tuple(per_run[runs[0]][0])
    values = np.array([[[np.mean([per_run[w, s][t][name] for s in seeds]) for w in widths]
                        for name in layers] for t in range(steps)])
    return CoordCheck(tuple(widths), layers, values)


def _trajectory(task, rule, kind, lr, steps, seed) -> list[dict[str, float]]:
    params = task.init(task.generator(seed))
    states = init_states(rule, params)
    base = getattr(task, "base_param_info", None)  # tasks without μP: one global lr
    hp = per_tensor_hp(lr_multipliers(task.param_info, kind, base), lr)
    batches = task.generator(10_000 + seed)
    probe = task.sample_batch(task.generator(20_000 + seed))[0]
    grad = torch.func.grad(task.loss)
    out = []
    for t in range(1, steps + 1):
        grads = grad(params, task.sample_batch(batches))
        params, states = apply(rule, params, grads, states, t, hp)
        with torch.no_grad():
            acts = task.activations(params, probe)
        out.append({name: float(a.abs().mean()) for name, a in acts.items()})
    return out


def plot_coord_check(results: dict[str, CoordCheck], path: str) -> None:
    """One row per labelled result (e.g. ``{"μP": ..., "SP": ...}``), one column per step:
    mean |activation| of every layer against width on log-log axes. Writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = max(r.values.shape[0] for r in results.values())
    fig, axes = plt.subplots(len(results), steps, figsize=(3 * steps, 2.8 * len(results)),
                             squeeze=False, sharex=True, sharey="row")
    for row, (label, res) in zip(axes, results.items()):
        for t, ax in enumerate(row[: res.values.shape[0]]):
            for i, name in enumerate(res.layers):
                ax.plot(res.widths, res.values[t, i], marker="o", ms=3, label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{label}, after step {t + 1}", fontsize=9)
            ax.set_xlabel("width")
        row[0].set_ylabel("mean |activation|")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())
