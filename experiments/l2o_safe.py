"""Safeguarded Math-L2O (``learned.Safeguarded``, FISTA fallback) against the bare Math-L2O and
FISTA, in distribution and on 19 out-of-distribution LASSO / sparse-logistic distributions
(``metaopt.tasks`` variants and ``learned.l2o.ood``), with how often the safeguard fires and its
cost per iteration.

    OMP_NUM_THREADS=1 nice -n 10 python experiments/l2o_safe.py --out experiments/results

Math-L2O (L2O-PA) is meta-trained as in ``l2o_bench.py`` (same settings and seeds), evaluated in
float64. Writes ``l2o_safe.md`` and ``l2o_safe_work/`` (trained thetas and finished evaluations,
JSON: a rerun resumes from them).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from l2o_common import (TEST_SEED, VARIANTS, add_run_args, fista,  # noqa: E402
                        l2o_objectives, machine, optimal_value, problem, train, write_json)
from learned.l2o import MathL2O, Safeguarded, ood  # noqa: E402
from learned.l2o.run import l2o_step  # noqa: E402
from learned.l2o.solvers import fista_step  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402

MODEL = "Math-L2O (PA)"
FLOOR = 1e-15          # relative errors below this are float64 round-off of F
F64 = torch.float64


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, test_instances=4, work="l2o_safe_work")
    return p.parse_args(argv)


def trained(name, args, work):
    path = os.path.join(work, f"{name}_math_l2o.safetensors")
    if not os.path.exists(path):
        _, theta, sec, hist = train(name, MODEL, args.outer_steps, args.train_instances,
                                    torch.device("cpu"), checkpoint=path + ".ckpt.pt")
        save_file({k: v.contiguous() for k, v in theta.items()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        write_json(path + ".json", {"seconds": sec, "first": hist[0], "last": hist[-1]})
    return {k: v.to(F64) for k, v in load_file(path).items()}, json.load(open(path + ".json"))


def evaluate(name, variant, theta, args, work) -> dict:
    path = os.path.join(work, f"{name}_{variant}.json")
    if os.path.exists(path):
        return json.load(open(path))
    prob = problem(name, variant, args.test_instances, TEST_SEED, "cpu", dtype=F64)
    lopt = MathL2O()
    runs = {"FISTA": fista(prob, args.iterations)[1],
            MODEL: l2o_objectives(lopt, theta, prob, args.iterations)}
    safe, accepted = Safeguarded(lopt).objectives(theta, prob, args.iterations)
    runs["Safeguarded"] = safe
    # F*: 5,000 float64 FISTA iterations (Math-L2O's reference), or a lower value a run reached
    fstar = optimal_value(prob)
    for objs in runs.values():
        fstar = torch.minimum(fstar, torch.nan_to_num(objs, nan=math.inf).min(0).values)
    out = {k: ((v - fstar) / fstar).mean(-1).tolist() for k, v in runs.items()}
    fired = (~accepted).to(F64)
    out["fired_100"], out["fired_all"] = float(fired[:100].mean()), float(fired.mean())
    write_json(path, out)
    return out


@torch.no_grad()
def step_cost(name, theta, instances: int, reps: int = 5, steps: int = 30) -> dict:
    """Seconds per iteration of FISTA, Math-L2O and the safeguarded model on in-distribution
    instances (float64), median of ``reps`` interleaved timings of ``steps`` iterations."""
    prob = problem(name, "gaussian", instances, TEST_SEED, "cpu", dtype=F64)
    lopt = MathL2O()
    sg = Safeguarded(lopt)
    x0 = prob.init()[0]

    def run_fista():
        x, y, t = x0, x0, 1.0
        for _ in range(steps):
            x, y, t = fista_step(prob, x, y, t)

    def run_model():
        x, s = x0, lopt.init(x0)
        for k in range(1, steps + 1):
            x, s = l2o_step(lopt, theta, prob, x, s, k)

    def run_safe():
        s = sg.init(x0)
        for k in range(1, steps + 1):
            s = sg.step(theta, prob, s, k)

    times = {"FISTA": [], MODEL: [], "Safeguarded": []}
    for _ in range(reps):
        for key, fn in (("FISTA", run_fista), (MODEL, run_model), ("Safeguarded", run_safe)):
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) / steps)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def fmt(e: float) -> str:
    return f"{e:.2e}" if math.isfinite(e) else str(e)


def ratio(a: float, b: float) -> float:
    return max(a, FLOOR) / max(b, FLOOR) if math.isfinite(a) else math.inf


def tables(name, results, iters) -> tuple[list[str], dict]:
    lines = [f"| distribution | FISTA @100 | Math-L2O @100 | Safeguarded @100 | safe/FISTA @100 "
             f"| FISTA @{iters} | Math-L2O @{iters} | Safeguarded @{iters} | safe/FISTA "
             f"@{iters} | fires (first 100) | fires (all {iters}) |", "|" + "---|" * 11]
    summ = {"r100": [], "rK": [], "bad": []}
    for variant, r in results.items():
        r100 = ratio(r["Safeguarded"][100], r["FISTA"][100])
        rK = ratio(r["Safeguarded"][iters], r["FISTA"][iters])
        tag = "(in dist.)" if variant == "gaussian" else ""
        lines.append(
            f"| {variant} {tag} | {fmt(r['FISTA'][100])} | {fmt(r[MODEL][100])} | "
            f"{fmt(r['Safeguarded'][100])} | {r100:.3g} | {fmt(r['FISTA'][iters])} | "
            f"{fmt(r[MODEL][iters])} | {fmt(r['Safeguarded'][iters])} | {rK:.3g} | "
            f"{100 * r['fired_100']:.0f}% | {100 * r['fired_all']:.0f}% |")
        if variant != "gaussian":
            summ["r100"].append(r100)
            summ["rK"].append(rK)
            errs = r["Safeguarded"]
            if not (all(math.isfinite(e) for e in errs) and errs[-1] <= errs[0]):
                summ["bad"].append(variant)
    return lines, summ


def geomean(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main(argv=None):
    args = parse(argv)
    torch.manual_seed(0)
    work = args.work or os.path.join(args.out, "l2o_safe_work")
    os.makedirs(work, exist_ok=True)
    iters = args.iterations
    cmd = "OMP_NUM_THREADS=1 nice -n 10 python " + " ".join(sys.argv)
    lines = [f"`{cmd}`", "", "# Safeguarded Math-L2O: never worse than FISTA, in and out of "
             "distribution", "",
             f"Machine: {machine()}; CPU, 1 thread, shared cores.", "",
             "Model: Math-L2O (L2O-PA), meta-trained on the in-distribution (`gaussian`) "
             f"instances as in `l2o_bench.py` ({args.outer_steps} outer steps x "
             f"{args.train_instances} instances, horizon 100, unroll 20, float32). "
             "`Safeguarded` = `learned.Safeguarded(MathL2O(), fallback=\"fista\")`: the learned "
             "iterate is kept while F(learned) <= F(FISTA's own iterate), else the output is "
             "FISTA's iterate and the model restarts from it (guarantee F(x_k) <= F(x^FISTA_k) "
             "for every k, see `learned/l2o/safeguard.py`). "
             f"Test: {args.test_instances} instances per distribution, seed {TEST_SEED}, float64; "
             "relative error (F(x_k) - F*)/F*, mean over instances; F* = the lowest of 5,000 "
             "FISTA iterations and every run shown. Ratios floor errors at 1e-15 (float64 "
             "round-off of F). `fires` = share of (iteration, instance) pairs where the "
             "learned iterate was rejected.", ""]
    totals = {"r100": [], "rK": [], "bad": []}
    for name in args.problems.split(","):
        theta, info = trained(name, args, work)
        variants = VARIANTS[name] + list(ood.VARIANTS)
        results = {v: evaluate(name, v, theta, args, work)
                   for v in tqdm(variants, desc=f"evaluate {name}")}
        cost = step_cost(name, theta, args.test_instances)
        table, summ = tables(name, results, iters)
        for k in totals:
            totals[k] += summ[k]
        ind = results["gaussian"]
        lines += [f"## {name}", "",
                  f"Meta-training: {info['seconds']:.0f} s, meta-loss {info['first']:.4g} -> "
                  f"{info['last']:.4g}.", ""] + table + ["",
                  f"In distribution @100: Safeguarded / Math-L2O = "
                  f"{ratio(ind['Safeguarded'][100], ind[MODEL][100]):.3g} (target <= 10), "
                  f"FISTA / Safeguarded = {ratio(ind['FISTA'][100], ind['Safeguarded'][100]):.3g} "
                  "(target >= 100).",
                  f"OOD ({len(summ['r100'])} distributions): worst safe/FISTA @100 "
                  f"{max(summ['r100']):.3g}, @{iters} {max(summ['rK']):.3g}; geometric mean "
                  f"@100 {geomean(summ['r100']):.3g}, @{iters} {geomean(summ['rK']):.3g}; "
                  f"diverged (not finite, or final error above the initial one): "
                  f"{', '.join(summ['bad']) or 'none'}.", "",
                  f"Cost per iteration ({args.test_instances} in-distribution instances, float64, "
                  "median of 5): " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in cost.items())
                  + f"; safeguard overhead = Safeguarded / Math-L2O = "
                  f"{cost['Safeguarded'] / cost[MODEL]:.2f}x, Safeguarded / FISTA = "
                  f"{cost['Safeguarded'] / cost['FISTA']:.2f}x.", ""]
    lines += ["## All OOD distributions", "",
              f"{len(totals['r100'])} distributions: worst safe/FISTA @100 "
              f"{max(totals['r100']):.3g}, @{iters} {max(totals['rK']):.3g} (target <= 1.0); "
              f"geometric mean @100 {geomean(totals['r100']):.3g}, @{iters} "
              f"{geomean(totals['rK']):.3g} (target <= 0.1); diverged: "
              f"{', '.join(totals['bad']) or 'none'}.", ""]
    write_atomic(os.path.join(args.out, "l2o_safe.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
