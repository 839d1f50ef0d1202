"""A logistic-regression head on the features of a trained task network, with one weight decay
per head weight and one weight per training example (data hyper-cleaning with corrupted labels):
the implicit-differentiation problem of :mod:`bilevel` on a real model.

    phi(x)    = last hidden layer of an mlp_digits network trained by AdamW (fixed)
    g(W, h)   = sum_i 2 sigmoid(h_data_i) CE_i(phi(X) W) / n + 1/2 sum_jk exp(h_wd_jk) W_jk^2
    f(W)      = CE(phi(X_v) W)          on the (clean) validation labels

``W`` is (width + 1, 10) (a bias row); the inner problem is strongly convex, solved by Newton to
||grad|| <= 1e-10. Hyperparameters: (width + 1) * 10 decays + n_train example weights (Franceschi
et al., ICML 2017; Lorraine et al., AISTATS 2020, per-weight decay).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..inner import newton_solve
from .base import BilevelProblem
from .data import corrupt_labels
from .linear_digits import add_bias_column


class TaskHead(BilevelProblem):
    name = "task_head"

    def __init__(self, width: int = 32, train_steps: int = 150, corruption: float = 0.3, seed: int = 0,
                 dtype: torch.dtype = torch.float64, device="cpu"):
        from metaopt import tasks

        from ..online import train
        from ..space import TrainingSpace

        task = tasks.get("mlp_digits", width=width, depth=1, seed=seed)
        space = TrainingSpace.for_params(task.init(task.generator(seed)), train_steps, lr0=1e-2)
        params = train(task, space, space.init(), seed=seed)
        with torch.no_grad():
            feats = lambda x: add_bias_column(task.activations(params, x)["h1"])  # noqa: E731
            self.x_train = feats(task.x_train).to(dtype).to(device)
            self.x_val = feats(task.x_val).to(dtype).to(device)
        self.y_train, self.corrupted = corrupt_labels(task.y_train.to(device), corruption, 10, seed)
        self.y_val = task.y_val.to(device)
        self.n_train, self.n_val, self.dtype, self.width = len(self.y_train), len(self.y_val), dtype, width

    def _split(self, hparams):
        n_wd = (self.width + 1) * 10
        return hparams[:n_wd].reshape(self.width + 1, 10), hparams[n_wd:]

    def inner_loss(self, params, hparams, batch=None):
        (w,) = params
        log_wd, data = self._split(hparams)
        x, y, d = (self.x_train, self.y_train, data) if batch is None else \
            (self.x_train[batch], self.y_train[batch], data[batch])
        losses = F.cross_entropy(x @ w, y, reduction="none")
        return (2 * torch.sigmoid(d) * losses).mean() + 0.5 * (log_wd.exp() * w**2).sum()

    def outer_loss(self, params, hparams, batch=None):
        (w,) = params
        x, y = (self.x_val, self.y_val) if batch is None else (self.x_val[batch], self.y_val[batch])
        return F.cross_entropy(x @ w, y)

    def init_params(self):
        return (torch.zeros(self.width + 1, 10, dtype=self.dtype, device=self.x_train.device),)

    def init_hparams(self):
        n = (self.width + 1) * 10 + self.n_train
        h = torch.zeros(n, dtype=self.dtype, device=self.x_train.device)
        h[: (self.width + 1) * 10] = -4.0
        return h

    def solve(self, hparams, params=None, tol: float = 1e-10):
        start = self.init_params() if params is None else params
        h = hparams.detach()
        return tuple(newton_solve(lambda p: self.inner_loss(p, h), start, tol=tol))
