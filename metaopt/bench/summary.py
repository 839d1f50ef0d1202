"""Summaries of benchmark records: targets, time-to-target and the markdown table.

Definitions (per task):
  * final validation loss of a run: its last ``val_loss`` (``inf`` when the run diverged);
  * best = the smallest median (over seeds) final validation loss of any optimizer;
  * target = best + tol * |best|  (best times ``1 + tol`` for a non-negative loss);
  * steps-to-target of a run: the first evaluated step whose ``val_loss <= target`` (``inf``
    when never reached; its resolution is the evaluation interval); time-to-target: the
    cumulative optimiser wall time at that evaluation.
Per (task, optimizer) the table reports medians over seeds; a median of ``inf`` means at least
half of the seeds missed (AlgoPerf scores a miss as infinite time the same way).
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from .run import final_val_loss


def group_runs(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """``{task: {optimizer: [records sorted by seed]}}``."""
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[r["task"]][r["optimizer"]].append(r)
    return {t: {o: sorted(rs, key=lambda r: r["seed"]) for o, rs in sorted(by.items())}
            for t, by in sorted(groups.items())}


def median(values: list[float]) -> float:
    """Median that keeps ``inf`` (a missed target) as a value."""
    return statistics.median(values) if values else math.nan


def task_target(runs_by_opt: dict[str, list[dict]], tol: float) -> float:
    """``best + tol * |best|`` with best the smallest median final validation loss."""
    best = min(median([final_val_loss(r) for r in runs]) for runs in runs_by_opt.values())
    return best + tol * abs(best) if math.isfinite(best) else math.inf


def first_reaching(record: dict, target: float) -> dict | None:
    """The first evaluation of ``record`` with ``val_loss <= target``, or None (also when the
    target is not finite: every optimizer diverged)."""
    if not math.isfinite(target):
        return None
    for e in record["evals"]:
        if e.get("val_loss") is not None and e["val_loss"] <= target:
            return e
    return None


def steps_to_target(record: dict, target: float) -> float:
    e = first_reaching(record, target)
    return math.inf if e is None else float(e["step"])


def time_to_target(record: dict, target: float) -> float:
    e = first_reaching(record, target)
    return math.inf if e is None else float(e["time_s"])


def summary_rows(records: list[dict], tol: float) -> list[dict]:
    """One row per (task, optimizer) with medians over seeds."""
    rows = []
    for task, by_opt in group_runs(records).items():
        target = task_target(by_opt, tol)
        for opt, runs in by_opt.items():
            accs = [r["evals"][-1].get("accuracy") for r in runs if not r["diverged"]]
            rows.append({
                "task": task, "optimizer": opt, "seeds": len(runs), "target": target,
                "lr": median([float(r["lr"]) for r in runs if r["lr"] is not None]),
                "final_val_loss": median([final_val_loss(r) for r in runs]),
                "accuracy": median([a for a in accs if a is not None]),
                "diverged": sum(r["diverged"] for r in runs),
                "steps_to_target": median([steps_to_target(r, target) for r in runs]),
                "time_to_target": median([time_to_target(r, target) for r in runs]),
            })
    return rows


def _fmt(x: float, spec: str, inf_text: str = "inf") -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return inf_text if x > 0 else "-inf"
    return format(x, spec)


def markdown_table(rows: list[dict], tol: float) -> str:
    """The summary as a markdown table, with a line defining the target."""
    head = ("| task | optimizer | seeds | lr | final val loss (median) | accuracy (median) | "
            "diverged | target | steps to target (median) | time to target s (median) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['optimizer']} | {r['seeds']} | {_fmt(r['lr'], '.3g')} | "
            f"{_fmt(r['final_val_loss'], '.4g', 'diverged')} | {_fmt(r['accuracy'], '.4f')} | "
            f"{r['diverged']} | {_fmt(r['target'], '.4g')} | "
            f"{_fmt(r['steps_to_target'], '.0f', 'not reached')} | "
            f"{_fmt(r['time_to_target'], '.3f', 'not reached')} |"
        )
    note = (f"\nTarget per task: the best median final validation loss of any optimizer, "
            f"plus {tol:g} times its magnitude; steps/time to target: first evaluation at or "
            "below it (median over seeds; 'not reached' when half or more of the seeds missed).\n")
    return "\n".join(lines) + "\n" + note
