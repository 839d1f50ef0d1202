"""Issue 14's "done when": a task built from a user-defined nn.Module and tensors runs through
program search, learned-optimizer meta-training and the benchmark (the bilevel tuners take
their own problem type; their owner wires a task into them)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaopt import tasks


class UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture(scope="module")
def user_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return tasks.from_module(UserNet, (x[:160], y[:160]), F.cross_entropy, batch_size=16,
                             val_data=(x[160:], y[160:]), name="usernet")


@pytest.mark.slow
def test_program_search_on_a_user_module(user_task):
    search = pytest.importorskip("search")
    from search.fitness import FitnessConfig

    result = search.run(user_task, budget=6, population=4, tournament=2, batch=2,
                        fitness=FitnessConfig(steps=20), progress=False)
    assert math.isfinite(result.fitness)


@pytest.mark.slow
def test_meta_training_on_a_user_module(user_task):
    learned = pytest.importorskip("learned")
    from learned.meta_train import meta_train
    from learned.task_family import SingleTask

    theta = meta_train(learned.MLPLOpt(hidden=4), SingleTask(user_task, 10), 2, truncation=5,
                       num_tasks=2, progress=False)
    assert all(torch.isfinite(t).all() for t in torch.utils._pytree.tree_leaves(theta))


def test_bench_on_a_user_module(user_task, tmp_path):
    from metaopt.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(tasks=(user_task,), optimizers=("adamw",), out=str(tmp_path),
                                   seeds=1, steps=30, tune_trials=0))
    (rec,) = result.records
    assert rec["evals"][-1]["val_loss"] < rec["evals"][0]["val_loss"]
    assert "accuracy" in rec["evals"][-1]
