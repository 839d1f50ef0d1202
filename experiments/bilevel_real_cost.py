"""Cost and memory of the implicit hypergradient on the new real-model problem ``task_head``
(a logistic head on a trained mlp_digits network; per-weight decays + one weight per training
example): FLOPs of one hypergradient with K CG iterations in units of one inner gradient
(target <= 2K + 3), and peak memory against the number of inner steps T (implicit: T steps
without a graph + CG; unrolled: reverse mode through the T steps).

    OMP_NUM_THREADS=1 nice -n 10 python experiments/bilevel_real_cost.py

Writes experiments/results/bilevel_real_cost.md. Memory: the resident-set high-water mark
(VmHWM) of a fresh process per point, glibc mmap threshold 64 KiB so freed tensors leave the
RSS at once (approximate; tracemalloc does not see torch's CPU allocator).
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bilevel  # noqa: E402
from bilevel import problems  # noqa: E402
from bilevel.inner import rule_solve  # noqa: E402
from metaopt import zoo  # noqa: E402
from metaopt.bench.machine import machine_line  # noqa: E402
from metaopt.helpers import write_atomic  # noqa: E402
from bilevel_compare import memory_table, peak_rss_kib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OPTIONS = {"width": 32, "train_steps": 150, "seed": 0}


def cost_table(pb) -> str:
    from torch.utils.flop_counter import FlopCounterMode

    h = pb.init_hparams()
    params = pb.solve(h, tol=1e-8)
    with FlopCounterMode(display=False) as one:
        torch.func.grad(pb.inner_loss)(params, h)
    lines = ["| K (CG iterations) | Hessian/mixed products | FLOPs / one inner gradient | bound 2K+3 |",
             "|---|---|---|---|"]
    for k in (1, 5, 20, 50):
        with FlopCounterMode(display=False) as total:
            _, info = bilevel.hypergrad(pb.inner_loss, pb.outer_loss, params, h, "cg", maxiter=k,
                                        early_stop=False, return_info=True, on_fail="ignore")
        ratio = total.get_total_flops() / one.get_total_flops()
        lines.append(f"| {k} | {info.products} | {ratio:.2f} | {2 * k + 3} |")
    return "\n".join(lines)


def memory_probe(method: str, steps: int) -> None:
    torch.set_num_threads(1)
    pb = problems.get("task_head", **OPTIONS)
    h = pb.init_hparams()
    rule = zoo.rule("sgd", lr=0.5, momentum=0.9)
    tiny = problems.get("ridge", n_features=3, n_train=5, n_val=5)  # one-time allocations first
    bilevel.unrolled_hypergrad(tiny.inner_loss, tiny.outer_loss, tiny.init_params(), tiny.init_hparams(), rule, 2)
    bilevel.hypergrad(tiny.inner_loss, tiny.outer_loss, tiny.solve(tiny.init_hparams()), tiny.init_hparams())
    base = peak_rss_kib()
    one_hypergrad(pb, h, rule, method, steps)
    print(json.dumps({"mb": (peak_rss_kib() - base) / 1024}))


def one_hypergrad(pb, h, rule, method: str, steps: int) -> None:
    """One hypergradient of ``pb`` at ``h`` after ``steps`` inner steps: ``"unrolled"``
    (reverse mode through the steps of ``rule``) or ``"implicit"`` (SGD with momentum to near
    stationarity without a graph, then CG with 20 iterations)."""
    if method == "unrolled":
        bilevel.unrolled_hypergrad(pb.inner_loss, pb.outer_loss, pb.init_params(), h, rule, steps)
        return
    params = rule_solve(lambda p: pb.inner_loss(p, h), pb.init_params(), rule="sgd", steps=steps,
                        lr=0.5, momentum=0.9)
    bilevel.hypergrad(pb.inner_loss, pb.outer_loss, tuple(params), h, "cg", maxiter=20,
                      on_fail="ignore")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-probe":
        memory_probe(sys.argv[2], int(sys.argv[3]))
        return
    torch.set_num_threads(1)
    pb = problems.get("task_head", **OPTIONS)
    text = "\n".join([
        "Command: `OMP_NUM_THREADS=1 nice -n 10 python experiments/bilevel_real_cost.py`", "",
        "# Implicit hypergradient on a real-model problem: cost per hypergradient and memory vs inner steps", "",
        f"Machine: {machine_line('cpu')}.", "",
        f"Problem `task_head` ({OPTIONS}): logistic head on the hidden layer of an mlp_digits network trained "
        f"150 AdamW steps, 30% corrupted training labels; {pb.num_hparams} hyperparameters "
        "(one log weight decay per head weight + one weight per training example); float64.", "",
        "## Cost of one hypergradient (FLOPs, torch.utils.flop_counter)", "",
        "One outer gradient + one linearisation + K Hessian-vector products + one final product (which also "
        "gives the true residual).", "", cost_table(pb), "",
        "## Peak memory against the number of inner steps", "",
        "Peak resident-set growth of one hypergradient in a fresh process (VmHWM, glibc mmap threshold "
        "64 KiB; approximate). The implicit method trains without a graph, so its memory should not grow "
        "with T.", "", memory_table(__file__, "implicit (T steps, no graph, + CG 20)", "unrolled through T steps"), ""])
    write_atomic(os.path.join(HERE, "results", "bilevel_real_cost.md"), text)
    print(text)


if __name__ == "__main__":
    main()
