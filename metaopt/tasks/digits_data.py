"""scikit-learn's handwritten digits as a classification task family.

1797 grey 8x8 images in 10 classes (UCI optical digits; Alpaydin & Kaynak 1995), shipped with
scikit-learn, so no network is needed. The split is fixed: a permutation seeded with
:data:`SPLIT_SEED` gives 1437 training and 360 validation images. Pixels are standardized with the
training set's per-pixel mean and standard deviation (pixels that are constant in the training set
are only centred).

:class:`DigitsTask` is the base of ``logreg_digits``, ``mlp_digits`` and ``cnn_digits``: it owns
the data, batch sampling, the cross-entropy loss and the evaluation; a subclass supplies
``logits(params, x)`` on flat (N, 64) inputs.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .base import Task

N_TRAIN = 1437
SPLIT_SEED = 0
N_CLASSES = 10
N_PIXELS = 64


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val) as float64 / int64 numpy arrays, standardized."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data.astype(np.float64), data.target.astype(np.int64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    train, val = perm[:N_TRAIN], perm[N_TRAIN:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    return x[train], y[train], x[val], y[val]


def check_batch_size(task: str, batch_size: int, limit: int) -> None:
    if not isinstance(batch_size, int) or not 1 <= batch_size <= limit:
        raise ValueError(
            f"{task}: batch_size must be an integer in [1, {limit}], got {batch_size!r}")


class DigitsTask(Task):
    """Softmax classification of the digits; subclasses define ``logits(params, x)``."""

    def __init__(self, batch_size: int = 128, seed: int = 0, device="cpu", dtype=torch.float32):
        super().__init__(device, dtype)
        check_batch_size(self.name, batch_size, N_TRAIN)
        self.batch_size, self.seed = batch_size, seed
        xt, yt, xv, yv = digits_arrays()
        self.x_train = torch.as_tensor(xt, dtype=dtype, device=self.device)
        self.y_train = torch.as_tensor(yt, device=self.device)
        self.x_val = torch.as_tensor(xv, dtype=dtype, device=self.device)
        self.y_val = torch.as_tensor(yv, device=self.device)
        self._batch_gen = self.generator(seed + 1)

    def logits(self, params, x):
        raise NotImplementedError

    def loss(self, params, batch):
        """Mean cross-entropy of ``batch = (x, y)``, x of shape (B, 64), y class ids."""
        x, y = batch
        return F.cross_entropy(self.logits(params, x), y)

    def sample_batch(self, generator=None):
        """``batch_size`` training examples drawn uniformly with replacement."""
        g = generator if generator is not None else self._batch_gen
        idx = torch.randint(N_TRAIN, (self.batch_size,), generator=g, device=self.device)
        return self.x_train[idx], self.y_train[idx]

    def evaluate(self, params):
        """Cross-entropy and accuracy on the 360 validation images."""
        with torch.no_grad():
            z = self.logits(list(params), self.x_val)
            return {
                "val_loss": float(F.cross_entropy(z, self.y_val)),
                "accuracy": float((z.argmax(-1) == self.y_val).to(torch.float64).mean()),
            }

    def _default_generator(self, generator):
        return generator if generator is not None else self.generator(self.seed)
