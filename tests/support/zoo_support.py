"""Pieces shared by the zoo's test files: Rosenbrock's gradient (a closed form, independent of
the task code) and the check that a population of learning rates run under ``vmap`` equals one
run per learning rate."""
import torch
from torch.func import vmap


def rosenbrock_grad(x):
    """The gradient of ``(1 - a)^2 + 100 (b - a^2)^2`` at ``x = (a, b)``."""
    a, b = x[0], x[1]
    return torch.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


def assert_lr_vmap_equals_loop(run, lrs, p0, s0, steps=3):
    """``run(lr, params, states, step_list)`` vmapped over ``lrs`` (steps as float64 0-d
    tensors) equals ``run`` called once per lr with int steps, to 1e-10."""
    steps_t = [torch.tensor(float(t), dtype=torch.float64) for t in range(1, steps + 1)]
    batched = vmap(run, in_dims=(0, None, None, None))(lrs, p0, s0, steps_t)
    for i in range(len(lrs)):
        single = run(float(lrs[i]), p0, s0, list(range(1, steps + 1)))
        for x, y in zip(batched, single):
            torch.testing.assert_close(x[i], y, rtol=1e-10, atol=1e-12)
