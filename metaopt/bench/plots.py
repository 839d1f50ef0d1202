"""PNG plots of a benchmark: loss curves per task and a performance profile across tasks.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot global state, no display
needed) and written atomically.
"""
from __future__ import annotations

import io
import math
import os
import warnings

import numpy as np

from .atomic import write_atomic
from .profile import profile


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_atomic(path, buf.getvalue())


def _stack(series: list[list[float | None]]) -> np.ndarray:
    """Rows padded with nan to a common length (diverged runs stop early)."""
    n = max(len(s) for s in series)
    out = np.full((len(series), n), np.nan)
    for i, s in enumerate(series):
        out[i, : len(s)] = [np.nan if v is None else v for v in s]
    return out


def _styles(names) -> dict[str, dict]:
    """A distinct (colour, line style) per name: 10 colours x 3 styles before any repeats."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    dashes = ("-", "--", ":")
    return {n: {"color": colours[i % 10], "linestyle": dashes[(i // 10) % 3]}
            for i, n in enumerate(names)}


def _legend_outside(ax, n: int) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if n <= 16 else 2,
              frameon=False)


def _median_band(ax, x, ys: np.ndarray, label: str, style: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns after divergence
        med, lo, hi = np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
    (line,) = ax.plot(x, med, label=label, **style)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def _log_if_positive(ax, arrays: list[np.ndarray]) -> None:
    vals = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.array([])
    if vals.size and (vals > 0).all():
        ax.set_yscale("log")


def plot_task_curves(task: str, runs_by_opt: dict[str, list[dict]], path) -> None:
    """Training loss per step and validation loss per evaluation: median over seeds with a
    min-max band, one line per optimizer."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax_train, ax_val = fig.subplots(1, 2)
    train_all, val_all = [], []
    styles = _styles(runs_by_opt)
    for opt, runs in runs_by_opt.items():
        tr = _stack([r["train_loss"] for r in runs])
        _median_band(ax_train, np.arange(1, tr.shape[1] + 1), tr, opt, styles[opt])
        longest = max(runs, key=lambda r: len(r["evals"]))
        va = _stack([[e.get("val_loss") for e in r["evals"]] for r in runs])
        _median_band(ax_val, [e["step"] for e in longest["evals"]], va, opt, styles[opt])
        train_all.append(tr)
        val_all.append(va)
    _log_if_positive(ax_train, train_all)
    _log_if_positive(ax_val, val_all)
    for ax, what in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    _legend_outside(ax_val, len(runs_by_opt))
    fig.suptitle(f"{task}: median over seeds (band: min-max)")
    _save(fig, path)


def plot_profile(ratios: dict[str, list[float]], path, metric: str) -> None:
    """Dolan-Moré performance profile rho_s(tau) on a log tau axis."""
    from matplotlib.figure import Figure

    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, 1.5 * max(finite, default=1.0))
    taus = list(np.geomspace(1.0, tau_max, 200))
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    styles = _styles(ratios)
    for s, rs in ratios.items():
        ax.step(taus, profile(rs, taus), where="post", label=s, **styles[s])
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"tau (ratio to the best {metric})")
    ax.set_ylabel("fraction of tasks within tau")
    ax.grid(alpha=0.3)
    _legend_outside(ax, len(ratios))
    fig.suptitle(f"Performance profile over {len(next(iter(ratios.values())))} task(s)")
    _save(fig, path)
