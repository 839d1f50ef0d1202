"""tabular: the fixed split and standardization of the scikit-learn tables, and the models."""
import numpy as np
import pytest
import torch

from metaopt import tasks
from metaopt.tasks.tabular_data import DATASETS, tabular_arrays


@pytest.mark.parametrize("name,n,d,classes", [
    ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2), ("iris", 150, 4, 3),
    ("diabetes", 442, 10, 0), ("classification", 2000, 20, 4), ("regression", 2000, 20, 0)])
def test_split_sizes_and_standardization(name, n, d, classes):
    xt, yt, xv, yv, k = tabular_arrays(name)
    assert (len(xt) + len(xv), xt.shape[1], k) == (n, d, classes)
    assert len(xt) == round(0.8 * n)
    np.testing.assert_allclose(xt.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xt.std(0), 1, atol=1e-12)
    if k == 0:
        assert abs(yt.mean()) < 1e-12 and abs(yt.std() - 1) < 1e-12
    else:
        assert set(np.unique(yt)) == set(range(k))


def test_regression_loss_is_the_mse_of_the_single_output():
    task = tasks.get("tabular", dataset="diabetes", arch="resmlp", dtype=torch.float64)
    params = task.init(task.generator(0))
    x, y = task.sample_batch(task.generator(1))
    out = task.forward(params, x)
    assert out.shape == (32, 1)
    torch.testing.assert_close(task.loss(params, (x, y)), ((out[:, 0] - y) ** 2).mean())
    assert set(task.evaluate(params)) == {"val_loss"}


def test_resmlp_has_layernorm_gains_as_vectors():
    task = tasks.get("tabular", arch="resmlp", width=16, depth=2)
    roles = [p.role for p in task.param_info]
    assert roles.count("vector") == 3 and roles[0] == "input" and roles[-2] == "output"


@pytest.mark.parametrize("kw,needle", [({"dataset": "mnist"}, "dataset must be one of"),
                                       ({"arch": "cnn"}, "arch must be one of"),
                                       ({"batch_size": 10_000}, "batch_size")])
def test_bad_options(kw, needle):
    with pytest.raises(ValueError, match=needle):
        tasks.get("tabular", **kw)


def test_every_dataset_is_offline_and_listed():
    assert set(DATASETS) == {"wine", "breast_cancer", "iris", "diabetes", "classification",
                             "regression"}
