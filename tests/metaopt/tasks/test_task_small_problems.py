"""rosenbrock, logreg_digits and cnn_digits against closed forms and independent references."""
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss

from metaopt import tasks


def _rosenbrock_grad(x):
    """The textbook gradient of sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2."""
    g = torch.zeros_like(x)
    g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


def test_rosenbrock_closed_forms():
    task = tasks.get("rosenbrock", dim=2, dtype=torch.float64)
    ones = torch.ones(2, dtype=torch.float64)
    assert task.loss([ones], task.sample_batch()) == 0
    start = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    assert task.evaluate([start])["val_loss"] == pytest.approx(24.2)
    big = tasks.get("rosenbrock", dim=7, dtype=torch.float64)
    x = torch.randn(7, dtype=torch.float64)
    torch.testing.assert_close(torch.func.grad(big.loss)([x], big.sample_batch())[0],
                               _rosenbrock_grad(x))


def test_rosenbrock_noise_keeps_the_optimum():
    task = tasks.get("rosenbrock", dim=5, noise=0.5, dtype=torch.float64)
    gen = task.generator(0)
    ones = torch.ones(5, dtype=torch.float64)
    for _ in range(5):
        w = task.sample_batch(gen)
        assert ((w >= 0.5) & (w <= 1.5)).all() and not torch.all(w == 1)
        assert task.loss([ones], w) == 0
        assert torch.func.grad(task.loss)([ones], w)[0].abs().max() == 0


def test_logreg_loss_matches_sklearn_log_loss():
    task = tasks.get("logreg_digits", l2=0.01, dtype=torch.float64)
    w, b = (p + 0.3 * torch.randn_like(p) for p in task.init(task.generator(0)))
    x, y = task.sample_batch(task.generator(1))
    probs = torch.softmax(x @ w.T + b, -1)
    expected = log_loss(y.numpy(), probs.numpy(), labels=list(range(10))) + 0.005 * float(
        (w ** 2).sum())
    assert float(task.loss([w, b], (x, y))) == pytest.approx(expected, rel=1e-10)


def test_cnn_matches_torch_nn_modules():
    task = tasks.get("cnn_digits", channels=5, dtype=torch.float64)
    params = [p + 0.1 * torch.randn_like(p) for p in task.init(task.generator(0))]
    conv1 = torch.nn.Conv2d(1, 5, 3, padding=1, dtype=torch.float64)
    conv2 = torch.nn.Conv2d(5, 5, 3, padding=1, dtype=torch.float64)
    lin = torch.nn.Linear(80, 10, dtype=torch.float64)
    for mod, (w, b) in zip((conv1, conv2, lin), zip(params[::2], params[1::2])):
        mod.weight.data, mod.bias.data = w.clone(), b.clone()
    net = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), conv1, torch.nn.ReLU(), conv2,
                              torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(), lin)
    x, y = task.sample_batch(task.generator(1))
    torch.testing.assert_close(task.logits(params, x), net(x))
    torch.testing.assert_close(task.loss(params, (x, y)), F.cross_entropy(net(x), y))
