"""F2SA with its constants tuned per problem, against F2SA with `run_f2sa`'s default constants,
implicit-CG and Optuna TPE at equal wall clock (issue 18).

Problems: per-feature logistic regression (64 hyperparameters) and data hyper-cleaning (300) on
digits, as in ``bilevel.md``, and ``task_head`` (1,767: a logistic head on the hidden layer of a
trained mlp_digits network, one weight decay per head weight and one weight per training example,
30% corrupted labels). For each problem:

1. tune: :func:`bilevel.f2sa_constants.tune_f2sa`, multivariate TPE over F2SA's constants
   (gamma0, lam0, beta0, k0, T, batch size, STORM momentum), each trial scored by the validation
   loss at the exact inner solution after ``--budget`` seconds, geometric mean over the tuning
   seeds 100-101 (data splits and label corruptions the comparison never sees);
2. compare on seeds 0..``--seeds``-1: f2sa (defaults), f2sa_tuned, implicit (``--budget`` s each)
   and Optuna TPE (``--optuna-budget`` s), as ``experiments/bilevel_compare.py`` does.

    OMP_NUM_THREADS=1 python experiments/bilevel_f2sa.py --trials 25 --seeds 5

Everything finished is kept under ``--work`` (the Optuna studies in SQLite, one JSON per
comparison run), so a killed run resumes. Writes experiments/results/bilevel_f2sa.md and
bilevel_f2sa_<problem>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bilevel import problems  # noqa: E402
from bilevel.f2sa_constants import DEFAULTS, F2SAConstants, tune_f2sa  # noqa: E402
from bilevel.tuning import RUNNERS, evaluate_trace  # noqa: E402
from metaopt.bench.machine import command_line, machine_line  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402

from bilevel_compare import best_of, fmt, med, reach  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROBLEMS = {"logreg": {"n_train": 300, "n_val": 300}, "hyperclean": {"n_train": 300, "n_val": 300},
            "task_head": {}}
TUNE_SEEDS = (100, 101)
METHODS = ("f2sa", "f2sa_tuned", "implicit", "optuna")


def make_problem(name: str):
    return lambda seed: problems.get(name, seed=seed, **PROBLEMS[name])


def tune(name: str, work: str, trials: int, budget: float) -> F2SAConstants:
    path = os.path.join(work, f"{name}_constants.json")
    if os.path.exists(path):
        return F2SAConstants.from_json(open(path).read())
    start = time.perf_counter()
    per_trial = len(TUNE_SEEDS) * (budget + 3)

    def progress(number, constants, value):
        left = (trials - number - 1) * per_trial
        print(f"  {name} trial {number + 1}/{trials}: score {value:.4f}  ({constants})  "
              f"{time.perf_counter() - start:.0f} s, about {left / 60:.0f} min left", file=sys.stderr, flush=True)

    best, study = tune_f2sa(make_problem(name), seeds=TUNE_SEEDS, trials=trials, budget_s=budget,
                            storage=f"sqlite:///{os.path.join(work, 'studies.db')}", study_name=name,
                            on_trial=progress)
    record = {"constants": json.loads(best.to_json()), "score": study.best_value,
              "default_score": study.trials[0].value, "trials": len(study.trials)}
    write_atomic(os.path.join(work, f"{name}_tuning.json"), json.dumps(record))
    write_atomic(path, best.to_json())
    return best


def compare_one(name: str, method: str, seed: int, budget: float, constants: F2SAConstants, work: str) -> dict:
    path = os.path.join(work, f"{name}_{method}_{seed}_{budget:g}.json")
    if os.path.exists(path):
        return json.load(open(path))
    problem = problems.get(name, seed=seed, **PROBLEMS[name])
    if method.startswith("f2sa"):
        trace = (constants if method == "f2sa_tuned" else DEFAULTS).run(problem, budget, seed)
    else:
        trace = RUNNERS[method](problem, budget, seed)
    out = evaluate_trace(problem, trace).to_json()
    write_atomic(path, json.dumps(out))
    return out


def table(runs: dict, seeds: list[int]) -> str:
    lines = ["| problem | #hparams | method | median best val loss | min | max | median steps/trials | "
             "reached Optuna's best (seeds) | median time to reach / Optuna's time to its best |",
             "|---|---:|---|---:|---:|---:|---:|---|---:|"]
    for name in PROBLEMS:
        nh = problems.get(name, seed=0, **PROBLEMS[name]).num_hparams
        opt = {s: best_of(runs[name, "optuna", s]) for s in seeds}
        for method in METHODS:
            bests = [best_of(runs[name, method, s])[0] for s in seeds]
            steps = [runs[name, method, s]["inner_trainings"][-1] for s in seeds]
            hits = [reach(runs[name, method, s], opt[s][0])[0] for s in seeds]
            ratios = [t / max(opt[s][1], 1e-9) for t, s in zip(hits, seeds) if t is not None]
            lines.append(f"| {name} | {nh} | {method} | {fmt(med(bests), '.4f')} | {fmt(min(bests), '.4f')} | "
                         f"{fmt(max(bests), '.4f')} | {fmt(med(steps), '.0f')} | "
                         f"{sum(t is not None for t in hits)}/{len(seeds)} | {fmt(med(ratios), '.3f')} |")
    return "\n".join(lines)


def constants_table(work: str) -> str:
    lines = ["| problem | gamma0 | lam0 | beta0 | k0 | T | batch | momentum | tuning score (defaults) | "
             "tuning score (tuned) | trials |", "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name in PROBLEMS:
        rec = json.load(open(os.path.join(work, f"{name}_tuning.json")))
        c = rec["constants"]
        lines.append(f"| {name} | {c['gamma0']:.3g} | {c['lam0']:.3g} | {c['beta0']:.3g} | {c['k0']:.3g} | "
                     f"{c['inner_steps']} | {c['batch_size']} | {c['momentum']} | {rec['default_score']:.4f} | "
                     f"{rec['score']:.4f} | {rec['trials']} |")
    return "\n".join(lines)


def plot(runs: dict, seeds: list[int], budget: float, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name in PROBLEMS:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, method in enumerate(METHODS):
            for j, s in enumerate(seeds):
                tr = runs[name, method, s]
                best = [min(tr["values"][: k + 1]) for k in range(len(tr["values"]))]
                ax.step(tr["seconds"] + [budget], best + [best[-1]], where="post", color=f"C{i}", alpha=0.6,
                        label=method if j == 0 else None)
        ax.set(xlabel="wall clock (s)", ylabel="best validation loss (exact inner solution)", yscale="log",
               title=f"{name}: {len(seeds)} seeds")
        ax.legend()
        fig.tight_layout()
        file = f"bilevel_f2sa_{name}.png"
        fig.savefig(os.path.join(out_dir, file), dpi=100)
        plt.close(fig)
        files.append(file)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=25, help="TPE trials per problem (the first: the defaults)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per gradient run (tuning and comparison)")
    parser.add_argument("--optuna-budget", type=float, default=60.0, help="seconds per Optuna TPE run")
    parser.add_argument("--seeds", type=int, default=5, help="comparison seeds 0..N-1")
    parser.add_argument("--work", default=os.path.join(os.path.dirname(HERE), "runs", "bilevel_f2sa"))
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    for flag, value in (("--trials", args.trials), ("--budget", args.budget),
                        ("--optuna-budget", args.optuna_budget), ("--seeds", args.seeds)):
        if not value > 0:
            parser.error(f"{flag} {value}: it must be > 0")
    torch.set_num_threads(1)
    command = command_line()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.results, exist_ok=True)
    seeds = list(range(args.seeds))
    tune_min = len(PROBLEMS) * args.trials * len(TUNE_SEEDS) * (args.budget + 3) / 60
    compare_min = len(PROBLEMS) * args.seeds * (3 * args.budget + args.optuna_budget + 20) / 60
    print(f"tuning about {tune_min:.0f} min, comparison about {compare_min:.0f} min", file=sys.stderr)
    constants = {name: tune(name, args.work, args.trials, args.budget) for name in PROBLEMS}
    runs, jobs = {}, [(n, m, s) for n in PROBLEMS for s in seeds for m in METHODS]
    for k, (name, method, seed) in enumerate(jobs):
        budget = args.optuna_budget if method == "optuna" else args.budget
        runs[name, method, seed] = compare_one(name, method, seed, budget, constants[name], args.work)
        print(f"[{k + 1}/{len(jobs)}] {name} {method} seed {seed}: best "
              f"{best_of(runs[name, method, seed])[0]:.4f}", file=sys.stderr, flush=True)
    pngs = plot(runs, seeds, max(args.budget, args.optuna_budget), args.results)
    text = "\n\n".join([
        f"Command: `{command}`",
        "# F2SA with tuned constants against implicit-CG and Optuna TPE",
        f"Machine: {machine_line('cpu')}.",
        f"Setup: float64; each problem built per seed (data split, label corruption; for task_head also the "
        f"feature network). Tuning: multivariate TPE, {args.trials} trials per problem (the first: the "
        f"defaults), each scored by the validation loss at the exact inner solution (Newton) for F2SA's final "
        f"hyperparameters after {args.budget:g} s, geometric mean over seeds {TUNE_SEEDS[0]}-{TUNE_SEEDS[-1]}. "
        f"Comparison on seeds {seeds[0]}-{seeds[-1]}: {args.budget:g} s per gradient method, "
        f"{args.optuna_budget:g} s for Optuna TPE (box [-5, 5] per hyperparameter, first trial the gradient "
        "methods' start); f2sa: the defaults (gamma0 0.5, lam0 10, beta0 0.1, k0 1, T 10, batch 64, no "
        "momentum; exponents a = 5/7, c = 4/7 always); implicit: 20 warm-started heavy-ball steps + 20 CG "
        "iterations, Adam (lr 0.1) on h. Values are computed outside the clock at up to 8 snapshots per run.",
        "## Tuned constants",
        constants_table(args.work),
        f"## Comparison at equal wall clock (gradient methods), Optuna at {args.optuna_budget / args.budget:g}x their time",
        table(runs, seeds),
        "\n".join(f"![{p}]({p})" for p in pngs),
    ])
    write_atomic(os.path.join(args.results, "bilevel_f2sa.md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
