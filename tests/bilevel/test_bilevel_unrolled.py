"""Unrolled hypergradients: converge to the implicit one as K grows; the zoo rule's own
hyperparameters are differentiable (checked against float64 central differences)."""
import pytest
import torch

import bilevel
from bilevel import problems
from metaopt import zoo

DT = torch.float64


@pytest.fixture(scope="module")
def ridge():
    return problems.get("ridge", n_features=10, n_train=40, n_val=40, seed=5)


def test_unrolled_converges_to_implicit_as_k_grows(ridge):
    h = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=DT)
    lip = float(torch.linalg.eigvalsh(ridge.system(h))[-1])
    exact = ridge.closed_form_hypergrad(h)
    errors = []
    for k in (5, 20, 80, 320):
        hg = bilevel.unrolled_hypergrad(lambda p, x: ridge.inner_loss(p, x), lambda p, x: ridge.outer_loss(p, x),
                                        ridge.init_params(), h, zoo.rule("sgd", lr=1.0 / lip), k)
        errors.append(float(torch.linalg.vector_norm(hg - exact) / torch.linalg.vector_norm(exact)))
    assert all(b < 0.5 * a for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-2 and errors[-1] < 1e-8, errors


def test_rule_hyperparameters_are_differentiable_against_fd(ridge):
    """d F_K / d (per-feature decay, lr, weight decay, beta1, beta2) of Adam on minibatches."""
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, ridge.n_train, (16,), generator=g) for _ in range(12)]
    start = (torch.randn(10, generator=g, dtype=DT),)
    hp = {"lam": 0.3 * torch.randn(10, generator=g, dtype=DT), "lr": torch.tensor(0.05, dtype=DT),
          "wd": torch.tensor(0.1, dtype=DT), "b1": torch.tensor(0.8, dtype=DT), "b2": torch.tensor(0.95, dtype=DT)}

    def run(h):
        return bilevel.unrolled_hypergrad(
            lambda p, x, b: ridge.inner_loss(p, x["lam"], b), lambda p, x: ridge.outer_loss(p, x),
            start, h, "adam", 12, batches=batches, return_value=True,
            rule_hp=lambda x: {"lr": x["lr"], "weight_decay": x["wd"], "betas": (x["b1"], x["b2"])})

    grad, _ = run(hp)
    eps = 1e-6
    for name in ("lr", "wd", "b1", "b2"):
        plus = run({**hp, name: hp[name] + eps})[1]
        minus = run({**hp, name: hp[name] - eps})[1]
        fd = float(plus - minus) / (2 * eps)
        assert float(grad[name]) == pytest.approx(fd, rel=1e-6, abs=1e-12), name
    u = torch.randn(10, generator=g, dtype=DT)
    fd = float(run({**hp, "lam": hp["lam"] + eps * u})[1] - run({**hp, "lam": hp["lam"] - eps * u})[1]) / (2 * eps)
    assert float(grad["lam"] @ u) == pytest.approx(fd, rel=1e-6)
