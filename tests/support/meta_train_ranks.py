"""Meta-training jobs run by ``tests/learned/test_learned_distributed.py`` both in the test
process and, under ``torchrun``, in several gloo processes (``python -m torch.distributed.run
... meta_train_ranks.py JOBS.json``); rank 0 writes each job's theta to ``job["out"]``."""
from __future__ import annotations

import json
import sys

import torch
from safetensors.torch import save_file

from learned import MLPLOpt, SGDMLOpt, SingleTask, TaskChoice, meta_train
from learned.distributed import init_from_env
from metaopt import tasks


def setup(name: str):
    """(lopt, family, theta0) of a named test configuration."""
    if name == "quad64":  # vmappable, float64 throughout
        lopt = SGDMLOpt(lr=0.05, momentum=0.6)
        fam = SingleTask(tasks.get("quadratic", dim=4, cond=10.0, noise=0.5,
                                   dtype=torch.float64), horizon=6)
        return lopt, fam, {k: v.double() for k, v in lopt.init_theta().items()}
    if name == "mlp":  # float32 μLO on an MLP, vmapped
        lopt = MLPLOpt(hidden=8)
        fam = SingleTask(tasks.get("mlp_digits", width=16, depth=2, batch_size=16), horizon=6)
        return lopt, fam, None
    if name == "choice":  # not vmappable: tasks run one by one
        fam = TaskChoice("quadratic", horizon=6, choices={"seed": [0, 1, 2]}, dim=4, noise=0.5)
        return SGDMLOpt(), fam, None
    raise ValueError(name)


def run_job(job: dict) -> dict:
    lopt, fam, theta = setup(job["setup"])
    return meta_train(lopt, fam, job["steps"], method=job["method"], truncation=2,
                      num_tasks=job.get("num_tasks", 5), outer_lr=0.05, seed=7, theta=theta,
                      checkpoint_dir=job.get("ckpt"), checkpoint_every=1, progress=False,
                      tasks_per_vmap=job.get("tasks_per_vmap"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    comm = init_from_env("cpu")
    for job in json.loads(open(sys.argv[1]).read()):
        theta = run_job(job)
        if comm.is_root:
            save_file({k: v.contiguous() for k, v in theta.items()}, job["out"])
