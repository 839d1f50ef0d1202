"""Proxy tasks for the program-search experiments, built on the metaopt Task interface (any
object with it can be searched on): a teacher-student MLP regression on generated data, small
enough to train thousands of candidates at once.

    student: x -> W2 tanh(W1 x + b1) + b2,   teacher: the same architecture, fixed random weights
    loss: mean squared error; validation: 1024 held-out points.
"""
from __future__ import annotations

import torch

from metaopt.tasks import ParamInfo, Task
from metaopt.bench.machine import machine_line as bench_machine_line


class TeacherStudentMLP(Task):
    name = "teacher_student_mlp"

    def __init__(self, d_in: int = 8, width: int = 16, batch: int = 32, noise: float = 0.05,
                 seed: int = 0, device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        if min(d_in, width, batch) < 1:
            raise ValueError("teacher_student_mlp: d_in, width and batch must be >= 1")
        self.d_in, self.width, self.batch, self.noise = d_in, width, batch, noise
        g = torch.Generator().manual_seed(10_000 + seed)
        self.teacher = [t.to(self.device, dtype) for t in self._weights(g, scale=2.0)]
        self.x_val = torch.randn(1024, d_in, generator=g).to(self.device, dtype)
        self.y_val = self._forward(self.teacher, self.x_val)

    def _weights(self, g, scale=1.0):
        w1 = torch.randn(self.width, self.d_in, generator=g) * scale / self.d_in ** 0.5
        w2 = torch.randn(1, self.width, generator=g) * scale / self.width ** 0.5
        return [w1, torch.zeros(self.width), w2, torch.zeros(1)]

    @staticmethod
    def _forward(p, x):
        return torch.tanh(x @ p[0].T + p[1]) @ p[2].T + p[3]

    @property
    def param_info(self):
        return [ParamInfo("w1", "input", self.d_in, self.width), ParamInfo("b1", "bias", 1, self.width),
                ParamInfo("w2", "output", self.width, 1), ParamInfo("b2", "bias", 1, 1)]

    def init(self, generator=None):
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator,
                                                            device=self.device).item()))
        return [t.to(self.device, self.dtype) for t in self._weights(g)]

    def sample_batch(self, generator=None):
        x = torch.randn(self.batch, self.d_in, generator=generator, device=self.device, dtype=self.dtype)
        y = self._forward(self.teacher, x)
        return x, y + self.noise * torch.randn(y.shape, generator=generator, device=self.device, dtype=self.dtype)

    def loss(self, params, batch):
        x, y = batch
        return ((self._forward(params, x) - y) ** 2).mean()

    def val_loss_fn(self, params):
        """The validation MSE as a tensor (vmappable; search's batched evaluator uses it)."""
        return ((self._forward(params, self.x_val) - self.y_val) ** 2).mean()

    def evaluate(self, params):
        with torch.no_grad():
            return {"val_loss": float(self.val_loss_fn(params))}


def machine_line() -> str:
    """CPU model / GPU name, torch version and the date, for result files."""
    return "machine: " + bench_machine_line("cuda" if torch.cuda.is_available() else "cpu")
