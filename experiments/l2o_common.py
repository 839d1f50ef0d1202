"""Shared pieces of the L2O experiments (CPU benchmark and GPU script): the models and their
training settings, the test problems (in and out of distribution), and evaluation.

Settings follow Math-L2O (Liu et al. 2023, §5, MS4L2O configs): horizon 100, unroll 20, Adam,
lr 1e-2 (LASSO) / 3e-3 (logistic) for Math-L2O and L2O-DM, 3e-3 for RNNprop; the number of outer
steps and of instances per step are scaled to the machine (the paper: 500 x 64).
"""
from __future__ import annotations

import json
import re
import time

import torch

from learned.l2o import (L2ODM, MathL2O, RNNProp, fista, ista, l2o_objectives,
                         meta_train_l2o, optimal_value, relative_error, rule_objectives)
from learned.l2o import ood
from metaopt import tasks, zoo
from metaopt.bench.machine import machine_line
from metaopt.helpers import write_atomic

MODELS = {"Math-L2O (PA)": MathL2O, "L2O-DM": L2ODM, "RNNprop": RNNProp,
          # ablation (not in the paper): P in (0, 1), i.e. steps capped at 0.9999/L
          "Math-L2O (PA, P<1)": lambda: MathL2O(activations={"p": "unit_sigmoid"})}
MODEL_LR = {"lasso": {"Math-L2O (PA)": 1e-2, "L2O-DM": 1e-2, "RNNprop": 3e-3,
                      "Math-L2O (PA, P<1)": 1e-2},
            "sparse_logreg": {"Math-L2O (PA)": 3e-3, "L2O-DM": 3e-3, "RNNprop": 3e-3,
                              "Math-L2O (PA, P<1)": 3e-3}}
VARIANT_KEY = {"lasso": "matrix", "sparse_logreg": "features"}
VARIANTS = {"lasso": ["gaussian", "rademacher", "correlated", "digits", "breast_cancer"],
            "sparse_logreg": ["gaussian", "correlated", "digits", "breast_cancer"]}
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
TRAIN_SEED, VAL_SEED, TEST_SEED = 0, 50_000, 90_000


OOD_MAKERS = {"lasso": ood.lasso_ood, "sparse_logreg": ood.sparse_logreg_ood}


def problem(name: str, variant: str, instances: int, seed: int, device, **kw):
    """Instances of ``name`` (``lasso`` / ``sparse_logreg``): a ``metaopt.tasks`` variant
    (``VARIANTS``) or one of :mod:`learned.l2o.ood` (``ood.VARIANTS``)."""
    if variant in ood.VARIANTS:
        return OOD_MAKERS[name](variant, instances, seed=seed, device=device, **kw)
    return tasks.get(name, **{VARIANT_KEY[name]: variant}, instances=instances, seed=seed,
                     device=device, **kw)


def add_run_args(p, test_instances: int, work: str) -> None:
    """The command-line options the L2O experiments share."""
    p.add_argument("--out", default="experiments/results")
    p.add_argument("--problems", default="lasso,sparse_logreg")
    p.add_argument("--outer-steps", type=int, default=40)
    p.add_argument("--train-instances", type=int, default=8)
    p.add_argument("--test-instances", type=int, default=test_instances)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--work", default=None,
                   help="folder for trained thetas and finished evaluations (resume); "
                        f"default OUT/{work}")


def machine() -> str:
    return machine_line("cuda" if torch.cuda.is_available() else "cpu")


def train(name: str, model: str, outer_steps: int, instances: int, device, checkpoint=None,
          progress=True):
    """Meta-train one model on ``name``'s in-distribution family; returns theta, seconds."""
    lopt = MODELS[model]()
    theta = {k: v.to(device) for k, v in lopt.init_theta(torch.Generator().manual_seed(0)).items()}
    t0 = time.perf_counter()
    theta, hist = meta_train_l2o(
        lopt, lambda i: problem(name, "gaussian", instances, TRAIN_SEED + i, device),
        outer_steps, horizon=100, unroll=20, lr=MODEL_LR[name][model], theta=theta,
        checkpoint=checkpoint, progress=progress)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return lopt, theta, time.perf_counter() - t0, hist


def tune_adam(name: str, instances: int, device, steps: int = 100) -> float:
    """Adam's lr from ADAM_LRS with the lowest mean relative error at ``steps`` on
    in-distribution validation instances."""
    val = problem(name, "gaussian", instances, VAL_SEED, device)
    fstar = optimal_value(val)
    def score(lr):
        err = relative_error(rule_objectives(zoo.rule("adam", lr=lr), val, steps), fstar)[-1]
        return float(err) if torch.isfinite(err) else float("inf")
    return min(ADAM_LRS, key=score)


def curves(prob, fstar, steps: int, trained: dict, adam_lr: float, skip=()
           ) -> dict[str, list[float]]:
    """Relative error per iteration for every method on ``prob`` but those in ``skip`` (run in
    ``prob``'s dtype: float64 resolves errors below float32's ~1e-7)."""
    runs = {"ISTA": lambda: ista(prob, steps)[1], "FISTA": lambda: fista(prob, steps)[1],
            f"Adam (lr {adam_lr:g})":
                lambda: rule_objectives(zoo.rule("adam", lr=adam_lr), prob, steps)}
    for model, (lopt, theta) in trained.items():
        theta = {k: v.to(prob.A.dtype) for k, v in theta.items()}
        runs[model] = lambda lopt=lopt, theta=theta: l2o_objectives(lopt, theta, prob, steps)
    return {k: relative_error(run().to(torch.float64), fstar).tolist()
            for k, run in runs.items() if k not in skip}


def slug(text: str) -> str:
    """A file-name-safe form of a method name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def write_json(path: str, data) -> None:
    write_atomic(path, json.dumps(data))
