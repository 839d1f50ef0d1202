"""The first-order zoo members on three small CPU tasks with an equal learning-rate budget.

    python experiments/zoo_first_order_convergence.py [--steps-scale 1.0] [--work DIR]
                                                      [--out experiments/results/zoo_first_order.md]

For every member and task, 9 learning rates on a log grid around the member's default
(default x 10^{-2 .. 2}, half-decade steps) each train from the same start for a fixed
number of steps (the rule applied functionally: ``metaopt.apply`` with ``torch.func.grad``);
the table gives the best lr's final loss (on the task's validation split for
``logreg_digits``) and the member's rank on that task (losses below 1e-12 tie). Tasks:
``quadratic`` (dim 64, condition 100, exact gradients, 300 steps), ``rosenbrock`` (dim 10,
exact, 1500 steps), ``logreg_digits`` (batches of 128, 300 steps). One seed: a coarse, cheap sweep
for spotting broken members and rough rankings, not a tuned benchmark (that is
``metaopt bench``). Every finished (member, task) cell is cached in ``--work`` (JSON), so a
rerun resumes.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metaopt import apply, init_states, tasks, zoo  # noqa: E402
from metaopt.bench.machine import command_line, machine_line
from metaopt.helpers import write_atomic

MEMBERS = ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam",
           "amsgrad", "radam", "lion", "clion", "adabelief", "adabound", "diffgrad", "adafactor",
           "ademamix", "grams", "adamp", "sgdp", "gravity", "dog", "optimistic_amsgrad", "cadamw"]
TASKS = {  # name -> (constructor kwargs, steps)
    "quadratic": ({"dim": 64, "cond": 100.0}, 300),
    "rosenbrock": ({"dim": 10}, 1500),
    "logreg_digits": ({"batch_size": 128}, 300),
}
EXTRA_HP = {"sgd": {"momentum": 0.9}, "sgdp": {"momentum": 0.9}}


def lr_grid(default: float) -> list[float]:
    return [default * 10 ** (k / 2) for k in range(-4, 5)]


def final_loss(name: str, lr: float, task_name: str, steps: int) -> float:
    kwargs, _ = TASKS[task_name]
    task = tasks.get(task_name, **kwargs)
    gen = task.generator(0)
    params = task.init(gen)
    rule = zoo.rule(name, **EXTRA_HP.get(name, {}), lr=lr)
    torch.manual_seed(0)
    states = init_states(rule, params)
    grad = torch.func.grad(lambda ps, b: task.loss(list(ps), b))
    for t in range(1, steps + 1):
        batch = task.sample_batch(gen)
        grads = grad(tuple(params), batch)
        params, states = apply(rule, params, list(grads), states, t)
        if not all(torch.isfinite(p).all() for p in params):
            return math.inf
    if task_name == "logreg_digits":
        return task.evaluate(params)["val_loss"]
    with torch.no_grad():
        return float(task.loss(params, task.sample_batch(gen)))


def write_file(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def render(results: dict, scale: float) -> str:
    lines = [
        f"Command: `{command_line()}`",
        "",
        "# First-order zoo members: equal lr budget on three CPU tasks",
        "",
        f"Machine: {machine_line('cpu')}. Steps x {scale}.",
        "",
        "Each cell: the final loss at the best of 9 learning rates (default x 10^-2..10^2),"
        " that lr, and the member's rank on the task (losses below 1e-12 tie); sorted by mean"
        " rank. One seed; the `logreg_digits` loss is the validation loss; `*` marks a best lr"
        " at the edge of the grid (the member may do better outside it).",
        "",
        "| member | " + " | ".join(f"{t} ({_steps(results, t)} steps)" for t in TASKS)
        + " | mean rank |",
        "|---|" + "---|" * (len(TASKS) + 1),
    ]
    done = [m for m in MEMBERS if len(results.get(m, {})) == len(TASKS)]
    floor = lambda m, t: max(results[m][t]["loss"], 1e-12)  # noqa: E731
    rank = {(m, t): 1 + sum(floor(o, t) < floor(m, t) for o in done) for m in done for t in TASKS}
    rows = []
    for m in done:
        mean = sum(rank[m, t] for t in TASKS) / len(TASKS)
        cells = [f"{results[m][t]['loss']:.3g} (lr {results[m][t]['lr']:.2g}"
                 f"{_edge(m, results[m][t]['lr'])}, #{rank[m, t]})" for t in TASKS]
        rows.append((mean, f"| {m} | " + " | ".join(cells) + f" | {mean:.1f} |"))
    lines += [row for _, row in sorted(rows)]
    return "\n".join(lines) + "\n"


def _steps(results: dict, task: str) -> int:
    return next((r[task]["steps"] for r in results.values() if task in r), TASKS[task][1])


def _edge(member: str, lr: float) -> str:
    grid = lr_grid(zoo.defaults(member)["lr"])
    return "*" if math.isclose(lr, grid[0]) or math.isclose(lr, grid[-1]) else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps-scale", type=float, default=1.0)
    results_dir = ROOT / "experiments" / "results"
    ap.add_argument("--work", default=str(results_dir / "zoo_first_order_work"))
    ap.add_argument("--out", default=str(results_dir / "zoo_first_order.md"))
    args = ap.parse_args(argv)
    if args.steps_scale <= 0:
        print(f"error: --steps-scale must be > 0, got {args.steps_scale}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    # the cache is keyed by the grid and step counts, so a changed protocol starts afresh
    tag = f"grid{len(lr_grid(1.0))}_" + "_".join(str(TASKS[t][1]) for t in TASKS)
    cache = Path(args.work) / f"cells_{tag}_x{args.steps_scale:g}.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    cells = [(m, t) for m in MEMBERS for t in TASKS if t not in results.get(m, {})]
    for m, t in tqdm(cells, desc="member x task"):
        steps = max(1, int(TASKS[t][1] * args.steps_scale))
        lr0 = zoo.defaults(m)["lr"]
        runs = [(final_loss(m, lr, t, steps), lr) for lr in lr_grid(lr0)]
        loss, lr = min(runs)
        results.setdefault(m, {})[t] = {"loss": loss, "lr": lr, "steps": steps}
        write_file(cache, json.dumps(results, indent=1))
    text = render(results, args.steps_scale)
    write_file(Path(args.out), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
