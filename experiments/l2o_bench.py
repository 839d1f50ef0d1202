"""L2O benchmark on CPU: meta-train Math-L2O (L2O-PA), L2O-DM and RNNprop on LASSO and sparse
logistic regression, then measure Math-L2O's metric, the relative error (F(x_k) - F*)/F* with F*
from 5,000 float64 FISTA iterations, at k = 100 and 1,000, in distribution and out of it
(other matrix distributions; scikit-learn's digits and breast-cancer data), against ISTA, FISTA
and Adam (lr tuned on in-distribution validation instances). An ablation, Math-L2O with P
capped below 1 (steps <= 0.9999/L), tests whether the learned step size explains the OOD results.

    python experiments/l2o_bench.py --out experiments/results   # ~40 min on 1 shared CPU core

Writes ``l2o.md`` (tables), ``l2o_<problem>.png`` (curves) and a ``l2o_work/`` folder with the
trained thetas (safetensors) and finished evaluations (JSON): a rerun resumes from them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from l2o_common import (ADAM_LRS, MODELS, TEST_SEED, VARIANTS, add_run_args,  # noqa: E402
                        curves, machine, optimal_value, problem, slug, train, tune_adam,
                        write_json)
from learned.l2o import l2o_step  # noqa: E402
from metaopt.helpers import write_atomic


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, test_instances=8, work="l2o_work")
    return p.parse_args(argv)


def trained_models(name, args, work, device, log):
    out = {}
    for model in MODELS:
        path = os.path.join(work, f"{name}_{slug(model)}.safetensors")
        meta_path = path.replace(".safetensors", ".json")
        lopt = MODELS[model]()
        if os.path.exists(path) and os.path.exists(meta_path):
            theta = load_file(path)
            info = json.load(open(meta_path))
        else:
            ckpt = path.replace(".safetensors", ".ckpt.pt")
            lopt, theta, sec, hist = train(name, model, args.outer_steps, args.train_instances,
                                           device, checkpoint=ckpt)
            info = {"seconds": sec, "history": hist, "outer_steps": args.outer_steps,
                    "instances": args.train_instances}
            save_file({k: v.contiguous() for k, v in theta.items()}, path + ".tmp")
            os.replace(path + ".tmp", path)
            write_json(meta_path, info)
        out[model] = (lopt, theta)
        log[model] = info
    return out


def evaluate(name, args, work, device, trained, adam_lr):
    results = {}
    for variant in tqdm(VARIANTS[name], desc=f"evaluate {name}"):
        path = os.path.join(work, f"{name}_{variant}_eval.json")
        done = json.load(open(path)) if os.path.exists(path) else {}
        if not set(trained) <= set(done):
            prob = problem(name, variant, args.test_instances, TEST_SEED, device,
                           dtype=torch.float64)
            fstar_path = os.path.join(work, f"{name}_{variant}_fstar.json")
            if os.path.exists(fstar_path):
                fstar = torch.tensor(json.load(open(fstar_path)), dtype=torch.float64)
            else:
                fstar = optimal_value(prob)
                write_json(fstar_path, fstar.tolist())
            done.update(curves(prob, fstar, args.iterations, trained, adam_lr, skip=set(done)))
            write_json(path, done)
        results[variant] = done
    return results


def table(name, results, iterations) -> list[str]:
    variants = list(results)
    ks = [100, iterations] if iterations > 100 else [iterations]
    head = "| method | " + " | ".join(f"{v} @{k}" for v in variants for k in ks) + " |"
    lines = [head, "|" + "---|" * (1 + len(variants) * len(ks))]
    for method in results[variants[0]]:
        cells = [f"{results[v][method][k]:.2e}" for v in variants for k in ks]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def summary(results) -> list[str]:
    """Per method: the in-distribution error at 100 iterations, and over the OOD variants the
    geometric mean and the worst error at 100 (errors floored at 1e-16, float64's resolution)."""
    ood = [v for v in results if v != "gaussian"]
    lines = ["| method | in dist. @100 | OOD geo-mean @100 | OOD worst @100 |", "|---|---|---|---|"]
    for method in results["gaussian"]:
        errs = torch.tensor([max(results[v][method][100], 1e-16) for v in ood], dtype=torch.float64)
        lines.append(f"| {method} | {results['gaussian'][method][100]:.2e} | "
                     f"{float(errs.log().mean().exp()):.2e} | {float(errs.max()):.2e} |")
    return lines


def diverged(results, iterations) -> list[str]:
    """``method on variant`` wherever the final relative error is not finite or above 1."""
    return [f"{m} on {v}" for v, curves_ in results.items() for m, e in curves_.items()
            if not e[iterations] <= 1.0]


@torch.no_grad()
def math_l2o_coefficients(lopt, theta, prob, steps: int = 50) -> str:
    """Range of Math-L2O's P (step = P / L) and A (momentum) over the first ``steps``
    iterations: what the trained model learned to do."""
    theta = {k: v.to(prob.A.dtype) for k, v in theta.items()}
    x = prob.init()[0]
    state = lopt.init(x)
    ps, as_ = [], []
    for k in range(1, steps + 1):
        coef, _, _ = lopt.coefficients(theta, prob.smooth_grad(x), x, state)
        ps.append(coef["p"].median())
        as_.append(coef["a"].median())
        x, state = l2o_step(lopt, theta, prob, x, state, k)
    ps, as_ = torch.stack(ps[5:]), torch.stack(as_[5:])
    return (f"median over coordinates of P in [{ps.min():.3f}, {ps.max():.3f}] and of A in "
            f"[{as_.min():.3f}, {as_.max():.3f}] over iterations 6-{steps}")


def plot(name, results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), squeeze=False)
    for ax, (variant, curves_) in zip(axes[0], results.items()):
        for method, errs in curves_.items():
            ax.semilogy([min(max(e, 1e-16), 1e30) for e in errs], label=method, lw=1.2)
        ax.set_title(f"{name}: {variant}" + (" (in dist.)" if variant == "gaussian" else " (OOD)"))
        ax.set_xlabel("iteration")
        ax.set_ylim(1e-16, 1e3)
    axes[0][0].set_ylabel("(F - F*) / F*")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, f"l2o_{name}.png")
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)


def main(argv=None):
    args = parse(argv)
    torch.manual_seed(0)
    device = torch.device("cpu")
    work = args.work or os.path.join(args.out, "l2o_work")
    os.makedirs(work, exist_ok=True)
    lines = ["# L2O structures: Math-L2O vs L2O-DM, RNNprop, ISTA, FISTA, Adam", "",
             f"Machine: {machine()} (CPU run, shared cores; `OMP_NUM_THREADS=1`).", "",
             f"Meta-training (TBPTT, horizon 100, unroll 20, Adam; Math-L2O's protocol) with "
             f"**{args.outer_steps} outer steps x {args.train_instances} instances** (the paper: "
             f"500 x 64). Test: {args.test_instances} instances per distribution, seed {TEST_SEED}; "
             "relative error (F(x_k) - F*)/F*, mean over instances, F* from 5,000 float64 FISTA "
             "iterations; everything evaluated in float64 (models trained in float32). In distribution = "
             "`gaussian`.", "",
             "Notes: errors below ~1e-15 are float64 round-off of F (F* itself is the best of "
             "5,000 FISTA iterations, so a method can also land slightly below it: negative "
             "entries). L2O-DM and RNNprop take steps of a fixed scale (0.1 x network output) and "
             "see only the subgradient, so they cannot converge exactly on a non-smooth problem; "
             "Math-L2O and ISTA/FISTA use the problem's L and prox. Adam's lr is the best of "
             f"{list(ADAM_LRS)} at 100 iterations on in-distribution validation instances. "
             "`Math-L2O (PA, P<1)` is an ablation, not in the paper: P = sigmoid instead of "
             "2 sigmoid, so the step never exceeds 0.9999/L.", ""]
    for name in args.problems.split(","):
        log = {}
        trained = trained_models(name, args, work, device, log)
        adam_lr = tune_adam(name, args.test_instances, device)
        results = evaluate(name, args, work, device, trained, adam_lr)
        plot(name, results, args.out)
        lines += [f"## {name}", "", "Meta-training time (CPU, 1 thread):", "",
                  "| model | outer steps | seconds | s / outer step | first -> last segment meta-loss |",
                  "|---|---|---|---|---|"]
        for model, info in log.items():
            h = info["history"]
            lines.append(f"| {model} | {info['outer_steps']} | {info['seconds']:.0f} | "
                         f"{info['seconds'] / max(info['outer_steps'], 1):.1f} | "
                         f"{h[0]:.4g} -> {h[-1]:.4g} |")
        lines += ["", f"Relative error at iteration 100 and {args.iterations}:", ""]
        lines += table(name, results, args.iterations)
        lines += ["", "Summary at 100 iterations:", ""] + summary(results)
        lopt, theta = trained["Math-L2O (PA)"]
        test = problem(name, "gaussian", args.test_instances, TEST_SEED, device,
                       dtype=torch.float64)
        bad = diverged(results, args.iterations)
        lines += ["", f"Diverged (relative error > 1 or not finite at {args.iterations}): "
                  + (", ".join(bad) if bad else "none") + ".",
                  "", f"Learned Math-L2O coefficients on the in-distribution test instances: "
                  f"{math_l2o_coefficients(lopt, theta, test)}."]
        lines += ["", f"![{name}](l2o_{name}.png)", ""]
    write_atomic(os.path.join(args.out, "l2o.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
