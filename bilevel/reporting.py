"""Tables and plots of a finished ``metaopt bilevel`` run, re-rendered from its folder.

A run folder holds ``run.json`` (problem name and number of hyperparameters) and
``traces.json`` (per method: ``seconds``, ``inner_trainings`` and ``values``, the validation
loss at the exact inner solution). :func:`report` rewrites ``results.md`` and
``val_loss_vs_time.png`` (validation loss vs wall clock, one line per method) from them.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

from metaopt.helpers import write_atomic

RUN_FILE, TRACES_FILE, TABLE_FILE, PLOT_FILE = "run.json", "traces.json", "results.md", "val_loss_vs_time.png"


def best_so_far(values: list[float | None]) -> list[float]:
    out, best = [], math.inf
    for v in values:
        best = min(best, v if v is not None and math.isfinite(v) else math.inf)
        out.append(best)
    return out


def table(problem: str, num_hparams: int, traces: dict[str, dict]) -> str:
    """The markdown results table: per method, outer steps / trials, best loss and when."""
    lines = [f"problem {problem}: {num_hparams} hyperparameters, validation loss at the exact inner solution",
             "", "| method | outer steps / trials | best val loss | at second | final val loss |",
             "|---|---|---|---|---|"]
    for method, t in traces.items():
        best = best_so_far(t["values"])
        i = min(range(len(best)), key=lambda j: (best[j], j))
        lines.append(f"| {method} | {t['inner_trainings'][-1]} | {best[-1]:.4f} | {t['seconds'][i]:.1f} | "
                     f"{t['values'][-1]:.4f} |")
    return "\n".join(lines)


def plot(problem: str, traces: dict[str, dict], path: str | Path) -> None:
    """Best validation loss so far against wall-clock seconds, one step line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, t in traces.items():
        ax.step(t["seconds"], best_so_far(t["values"]), where="post", label=method, marker=".")
    ax.set_xlabel("wall clock (s)")
    ax.set_ylabel("best validation loss so far")
    ax.set_title(f"metaopt bilevel: {problem}")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def write(folder: str | Path, problem: str, num_hparams: int, traces: dict[str, dict]) -> str:
    """Write ``run.json``, ``traces.json``, ``results.md`` and the plot into ``folder`` (0644)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / RUN_FILE, json.dumps({"problem": problem, "num_hparams": num_hparams}))
    write_atomic(folder / TRACES_FILE, json.dumps(traces))
    return report(folder)


def report(folder: str | Path) -> str:
    """Re-render ``results.md`` and ``val_loss_vs_time.png`` of a finished bilevel run from its
    ``run.json`` and ``traces.json``; returns the table. A folder that holds no bilevel run is
    a one-line ``ValueError``."""
    folder = Path(folder)
    try:
        run = json.loads((folder / RUN_FILE).read_text())
        traces = json.loads((folder / TRACES_FILE).read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no finished bilevel run ({RUN_FILE} and {TRACES_FILE} missing)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{folder}: unreadable bilevel run file ({e.msg})") from None
    text = table(run["problem"], run["num_hparams"], traces)
    write_atomic(folder / TABLE_FILE, text + "\n")
    plot(run["problem"], traces, folder / PLOT_FILE)
    return text
