"""Zoo quality: every member that runs on ``metaopt bench``'s functional tasks, tuned with the
same budget on quadratic, rosenbrock, logreg_digits and mlp_digits, ranked per task.

One straight ``metaopt bench`` run (:func:`metaopt.bench.run_bench`, the CLI's code path) into a
fresh ``--work`` folder, then ``zoo_quality.md`` in ``--out``: a rank summary (rank of the median
final validation loss per task, losses under the bench's floor of 1e-12 tie) above the bench's own
table, and the bench's plots copied as ``zoo_quality_*.png``.

    python experiments/zoo_quality.py --work /tmp/zoo_quality_run   # ~15-30 min on one core

Left out: ``muon`` (orthogonalises matrix updates only and rejects the tasks' bias vectors; it is
meant to be paired with AdamW for the other tensors), ``mfac`` (its official window of 1024
gradients factors a 1024 x 1024 matrix per tensor and step, far beyond this budget) and the
members that need per-layer statistics of an ``nn.Module`` (``zoo.needs_layer_statistics``:
compared in ``zoo_layer_quality.md``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metaopt import zoo
from metaopt.bench import BenchConfig, run_bench
from metaopt.bench.harness import LOSS_FLOOR
from metaopt.bench.machine import command_line
from metaopt.helpers import write_atomic

TASKS = ("quadratic", "rosenbrock", "logreg_digits", "mlp_digits")
LEFT_OUT = ("muon", "mfac")
#: bench output -> name under --out
PLOTS = {"profile": "zoo_quality_profile.png", "profile_final": "zoo_quality_profile_final_loss.png",
         **{f"plot:{t}": f"zoo_quality_curves_{t}.png" for t in TASKS}}


def members() -> tuple[str, ...]:
    """Every zoo member except ``LEFT_OUT`` and those needing an ``nn.Module``'s layer
    statistics."""
    return tuple(n for n in zoo.names()
                 if n not in LEFT_OUT and not zoo.needs_layer_statistics(zoo.rule(n)))


def ranks(values: dict[str, float]) -> dict[str, int]:
    """Competition ranks (1 = lowest; equal values share the lower rank) of
    ``max(LOSS_FLOOR, value)``."""
    floored = {k: max(LOSS_FLOOR, v) for k, v in values.items()}
    return {k: 1 + sum(w < v for w in floored.values()) for k, v in floored.items()}


def rank_table(rows: list[dict]) -> str:
    """Members x tasks: rank (median final validation loss), sorted by mean rank."""
    loss = {(r["task"], r["optimizer"]): r["final_val_loss"] for r in rows}
    tasks = sorted({t for t, _ in loss})
    opts = sorted({o for _, o in loss})
    by_task = {t: ranks({o: loss[t, o] for o in opts}) for t in tasks}
    mean = {o: sum(by_task[t][o] for t in tasks) / len(tasks) for o in opts}
    lines = ["| member | " + " | ".join(tasks) + " | mean rank |", "|---|" + "---|" * (len(tasks) + 1)]
    for o in sorted(opts, key=lambda o: (mean[o], o)):
        lines.append(f"| {o} | " + " | ".join(f"{by_task[t][o]} ({loss[t, o]:.3g})" for t in tasks)
                     + f" | {mean[o]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="the bench's output folder (must not exist: "
                   "the run is straight, never resumed)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--tune-trials", type=int, default=20)
    a = p.parse_args(argv)
    if os.path.exists(a.work):
        print(f"zoo_quality: --work {a.work} exists; give a new folder (a straight run)",
              file=sys.stderr)
        return 2
    names = members()
    result = run_bench(BenchConfig(tasks=TASKS, optimizers=names, out=a.work, seeds=a.seeds,
                                   steps=a.steps, tune_trials=a.tune_trials, device="cpu"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for key, name in PLOTS.items():
        if key in result.files:
            write_atomic(out / name, Path(result.files[key]).read_bytes())
    bench_table = Path(result.files["table"]).read_text(encoding="utf-8")
    text = (f"Command: `{command_line()}`\n\n"
            "# Zoo quality: every member tuned with the same budget on the task suite\n\n"
            f"{len(names)} members ({', '.join(LEFT_OUT)} and the members needing an nn.Module's "
            "layer statistics left out: see `experiments/zoo_quality.py`); each gets "
            f"{a.tune_trials} Optuna TPE trials on its learning rate (log-uniform over its default "
            f"x [1e-2, 1e2], tuned on a separate seed), then {a.seeds} seeds at the tuned lr, "
            f"{a.steps} steps; other hyperparameters are the official defaults. The Polyak members "
            "get the loss through the closure. Machine, versions and date: the bench's header "
            "below.\n\n"
            "## Summary: rank of the median final validation loss per task (1 = best), sorted by "
            "mean rank\n\n" + rank_table(result.rows)
            + f"\nCells: rank (median final validation loss over {a.seeds} seeds); losses under "
            f"{LOSS_FLOOR:g} tie. Plots: " + ", ".join(f"`{n}`" for n in PLOTS.values())
            + ".\n\n## Full table (as written by `metaopt bench`)\n\n"
            + bench_table.split("\n", 1)[1])
    write_atomic(out / "zoo_quality.md", text)
    print(f"wrote {out / 'zoo_quality.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
