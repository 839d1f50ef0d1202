"""Re-render a meta-training run's outputs: the meta-loss curve and a summary table.

``report(folder)`` reads ``folder/meta_train.json`` (a finished ``metaopt meta-train`` run) or,
for a run that stopped early or came from the Python API, the checkpoint in
``folder/checkpoints`` or ``folder`` itself, and writes

* ``meta_loss.png``: the per-step meta-loss with a moving average (log scale when every value
  is positive);
* ``summary.md``: outer steps done, first / last / best meta-loss, mean over the last tenth,
  skipped (non-finite) slots, and the settings.

``metaopt report DIR`` dispatches here for meta-training folders.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from metaopt.helpers import write_atomic

from .checkpoint import LATEST, read_json_object

PLOT, SUMMARY, RESULT = "meta_loss.png", "summary.md", "meta_train.json"


def report(folder: str | os.PathLike) -> str:
    """Write ``meta_loss.png`` and ``summary.md`` into ``folder``; returns the table's text."""
    folder = Path(folder)
    history, settings = _read(folder)
    table = summary_table(history, settings)
    write_atomic(folder / SUMMARY, table)
    _plot(history, folder / PLOT)
    return table


def is_meta_train_dir(folder: str | os.PathLike) -> bool:
    """Does ``folder`` hold a meta-training run (result or checkpoint)?"""
    folder = Path(folder)
    return any((folder / p).is_file() for p in (RESULT, f"checkpoints/{LATEST}", LATEST))


def _read(folder: Path) -> tuple[list, dict]:
    for path in (folder / RESULT, folder / "checkpoints" / LATEST, folder / LATEST):
        if path.is_file():
            meta = read_json_object(path)
            history = meta.get("history")
            if not isinstance(history, list) or not all(
                    isinstance(h, list) and len(h) == 3 for h in history):
                raise ValueError(f"{path}: 'history' must be a list of [step, meta_loss, bad]")
            return history, meta.get("settings") or meta.get("config") or {}
    raise ValueError(f"no meta-training run in {folder} (expected {RESULT} or "
                     f"checkpoints/{LATEST})")


def summary_table(history: list, settings: dict) -> str:
    """A markdown table of the run's meta-loss (see the module docstring)."""
    losses = np.array([np.nan if h[1] is None else float(h[1]) for h in history])
    finite = np.isfinite(losses)
    tail = losses[-max(1, len(losses) // 10):] if len(losses) else losses
    best = int(np.nanargmin(np.where(finite, losses, np.inf))) if finite.any() else None
    rows = [("outer steps", f"{int(history[-1][0]) if history else 0}"),
            ("first meta-loss", _fmt(losses[0] if len(losses) else math.nan)),
            ("last meta-loss", _fmt(losses[-1] if len(losses) else math.nan)),
            ("best meta-loss (step)", "n/a" if best is None else
             f"{_fmt(losses[best])} ({int(history[best][0])})"),
            ("mean of the last tenth", _fmt(np.nanmean(tail) if np.isfinite(tail).any()
                                            else math.nan)),
            ("skipped non-finite slots", f"{sum(int(h[2]) for h in history)}")]
    lines = ["| meta-training | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    shown = {k: v for k, v in settings.items() if not isinstance(v, (dict, list))}
    if shown:
        lines += ["", "| setting | value |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in sorted(shown.items()))]
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "n/a"


def _plot(history: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = np.array([h[0] for h in history], dtype=float)
    losses = np.array([np.nan if h[1] is None else float(h[1]) for h in history])
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="meta-loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(np.nan_to_num(losses, nan=np.nanmean(losses)),
                             np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving mean ({window})")
    good = losses[np.isfinite(losses)]
    if good.size and (good > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel("meta-loss")
    ax.legend(frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())
