"""scikit-learn's digits (1797 8x8 images, ships with the package; no network), standardised
with training statistics and split by a seed."""
from __future__ import annotations

import torch
from torch import Tensor


def digits_split(n_train: int, n_val: int, seed: int, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Disjoint random train / val / test splits (the test split is the rest)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=dtype)
    y = torch.tensor(data.target, dtype=torch.long)
    if n_train < 1 or n_val < 1 or n_train + n_val >= len(y):
        raise ValueError(f"n_train={n_train}, n_val={n_val}: both must be >= 1 and sum to < {len(y)}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    tr, va, te = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    out = {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va],
           "x_test": x[te], "y_test": y[te]}
    return {k: v.to(device) for k, v in out.items()}


def corrupt_labels(labels: Tensor, fraction: float, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """Replace a random ``fraction`` of labels by a different class chosen uniformly; returns the
    new labels and the boolean mask of corrupted examples."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"corruption fraction {fraction}; it must be in [0, 1]")
    g = torch.Generator().manual_seed(seed + 1)
    n = labels.numel()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: int(round(fraction * n))]] = True
    shift = torch.randint(1, num_classes, (n,), generator=g)
    noisy = torch.where(mask.to(labels.device), (labels + shift.to(labels.device)) % num_classes, labels)
    return noisy, mask.to(labels.device)
