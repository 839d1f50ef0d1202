"""The bilevel problems: corruption as specified, hyper-cleaning's hypergradient points at the
corrupted examples, and the MLP weight-decay problem's thousands of hyperparameters are
differentiable through an unroll (float64 central differences)."""
import pytest
import torch

import bilevel
from bilevel import problems

DT = torch.float64


def test_hyperclean_corrupts_half_of_the_labels():
    pb = problems.get("hyperclean", n_train=200, n_val=100, seed=3)
    assert int(pb.corrupted.sum()) == 100
    assert torch.all(pb.y_train[pb.corrupted] != pb.y_clean[pb.corrupted])
    assert torch.equal(pb.y_train[~pb.corrupted], pb.y_clean[~pb.corrupted])


def test_hyperclean_hypergradient_pushes_corrupted_weights_down():
    pb = problems.get("hyperclean", n_train=150, n_val=150, seed=0)
    h = pb.init_hparams()
    hg = bilevel.hypergrad(lambda p, x: pb.inner_loss(p, x), lambda p, x: pb.outer_loss(p, x), pb.solve(h), h,
                           "cg", maxiter=300)
    # increasing a corrupted example's weight raises the validation loss: positive hypergradient
    assert float(hg[pb.corrupted].mean()) > 0
    assert float(hg[pb.corrupted].mean()) > 3 * float(hg[~pb.corrupted].mean())


def test_mlp_weight_decay_hypergradient_matches_fd():
    pb = problems.get("mlp_wd", hidden=16, n_train=60, n_val=60, seed=0)
    h = pb.init_hparams() + 0.5 * torch.randn(pb.num_hparams, generator=torch.Generator().manual_seed(0), dtype=DT)
    assert pb.num_hparams == 64 * 16 + 16 + 16 * 10 + 10

    def run(x):
        return bilevel.unrolled_hypergrad(lambda p, y: pb.inner_loss(p, y), lambda p, y: pb.outer_loss(p, y),
                                          pb.init_params(), x, "sgd", 8, rule_hp={"lr": 0.5, "momentum": 0.9},
                                          return_value=True)

    grad, _ = run(h)
    u = torch.randn(pb.num_hparams, generator=torch.Generator().manual_seed(1), dtype=DT)
    eps = 1e-4
    fd = float(run(h + eps * u)[1] - run(h - eps * u)[1]) / (2 * eps)
    assert float(grad @ u) == pytest.approx(fd, rel=1e-6)


def test_default_mlp_problem_has_thousands_of_hyperparameters():
    assert problems.get("mlp_wd").num_hparams == 2410


@pytest.mark.slow
def test_task_head_implicit_hypergradient_matches_fd():
    """Per-weight decay + example weights of a head on a trained mlp_digits network (float64)."""
    import bilevel

    pb = problems.get("task_head", width=8, train_steps=20, seed=0)
    assert pb.num_hparams == 9 * 10 + pb.n_train
    g = torch.Generator().manual_seed(0)
    h = pb.init_hparams() + 0.5 * torch.randn(pb.num_hparams, generator=g, dtype=DT)
    params = pb.solve(h)
    hg, info = bilevel.hypergrad(pb.inner_loss, pb.outer_loss, params, h, "cg", tol=1e-12, return_info=True)
    assert bool(info.converged)
    eps = 1e-5
    for _ in range(2):
        u = torch.randn(pb.num_hparams, generator=g, dtype=DT)
        fd = (pb.value(h + eps * u) - pb.value(h - eps * u)) / (2 * eps)
        assert float(hg @ u) == pytest.approx(fd, rel=1e-6)
