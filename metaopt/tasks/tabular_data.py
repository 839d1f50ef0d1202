"""Small tables that ship with scikit-learn (no network), as fixed train/validation tensors.

    name             kind            examples  features  source
    wine             3 classes       178       13        UCI wine (Forina et al. 1988)
    breast_cancer    2 classes       569       30        UCI breast cancer Wisconsin (diagnostic)
    iris             3 classes       150       4         Fisher 1936
    diabetes         regression      442       10        Efron et al. 2004
    classification   4 classes       2000      20        ``make_classification`` (10 informative,
                                                         ``random_state=0``; Guyon 2003's design)
    regression       regression      2000      20        ``make_regression`` (10 informative,
                                                         noise 10, ``random_state=0``)

The split is fixed: a permutation seeded with :data:`SPLIT_SEED` puts 80% of the rows in the
training set. Features are standardized with the training rows' mean and standard deviation;
regression targets too, so a constant predictor scores about 1.0 in mean squared error.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

DATASETS = ("wine", "breast_cancer", "iris", "diabetes", "classification", "regression")
SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "classification":
        return datasets.make_classification(n_samples=2000, n_features=20, n_informative=10,
                                            n_classes=4, random_state=0)
    if name == "regression":
        return datasets.make_regression(n_samples=2000, n_features=20, n_informative=10,
                                        noise=10.0, random_state=0)
    bunch = getattr(datasets, f"load_{name}")()
    return bunch.data, bunch.target


def check_dataset(owner: str, name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"{owner}: dataset must be one of {', '.join(DATASETS)}, got {name!r}")


@lru_cache(maxsize=len(DATASETS))
def tabular_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(x_train, y_train, x_val, y_val, n_classes) of table ``name``; ``n_classes`` is 0 for a
    regression (targets float64, standardized), else targets are int64 class ids."""
    check_dataset("tabular_arrays", name)
    x, y = _raw(name)
    x = np.asarray(x, dtype=np.float64)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    cut = int(round(TRAIN_FRACTION * len(x)))
    train, val = perm[:cut], perm[cut:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    regression = name in ("diabetes", "regression")
    if regression:
        y = np.asarray(y, dtype=np.float64)
        y = (y - y[train].mean()) / y[train].std()
        n_classes = 0
    else:
        y = np.asarray(y, dtype=np.int64)
        n_classes = int(y.max()) + 1
    return x[train], y[train], x[val], y[val], n_classes
