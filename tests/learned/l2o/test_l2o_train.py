"""TBPTT meta-training of the L2O models: meta-gradient against float64 finite differences,
one step reduces the meta-loss, resume after a crash, and learned.meta_train compatibility."""
import pytest
import torch

from learned.l2o import L2ODM, MathL2O, RNNProp, l2o_step, meta_train_l2o
from metaopt import tasks

F64 = torch.float64


def tiny(seed=0, dtype=F64):
    return tasks.get("lasso", m=8, n=16, sparsity=3, instances=4, seed=seed, dtype=dtype)


def segment_loss(lopt, theta, problem, steps):
    """Math-L2O's meta-loss over one segment from x_0: mean_k mean_i F_i(x_k)."""
    x = problem.init()[0]
    state = lopt.init(x)
    total = 0.0
    for k in range(1, steps + 1):
        x, state = l2o_step(lopt, theta, problem, x, state, k)
        total = total + problem.objective(x).mean() / steps
    return total


def f64_theta(lopt, seed=0):
    return {k: v.to(F64) for k, v in lopt.init_theta(torch.Generator().manual_seed(seed)).items()}


def test_l2o_meta_gradient_matches_finite_differences():
    # the exact gradient needs the network's inputs attached (the default drops that path)
    lopt = MathL2O(terms=("p", "b", "a", "b1", "b2"), detach_inputs=False)
    theta = f64_theta(lopt)
    problem = tiny()
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    grads = torch.autograd.grad(segment_loss(lopt, leaves, problem, 6), list(leaves.values()))
    gen = torch.Generator().manual_seed(1)
    for (name, v), g in zip(theta.items(), grads):
        direction = torch.randn(v.shape, generator=gen, dtype=F64)
        eps = 1e-6

        def at(s):
            return float(segment_loss(lopt, {**theta, name: v + s * direction}, problem, 6))

        fd = (at(eps) - at(-eps)) / (2 * eps)
        assert float((g * direction).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-9), name


@pytest.mark.parametrize("cls,lr", [(L2ODM, 1e-3), (RNNProp, 1e-3), (MathL2O, 1e-3)])
def test_l2o_one_meta_step_reduces_the_meta_loss(cls, lr):
    lopt = cls()
    problem = tiny(dtype=torch.float32)
    theta0 = lopt.init_theta(torch.Generator().manual_seed(0))
    before = float(segment_loss(lopt, theta0, problem, 10))
    theta1, hist = meta_train_l2o(lopt, lambda i: problem, 1, horizon=10, unroll=10, lr=lr,
                                  theta=theta0, progress=False)
    after = float(segment_loss(lopt, theta1, problem, 10))
    assert hist == [pytest.approx(before, rel=1e-5)]
    assert after < before


def test_l2o_meta_training_resumes_bit_for_bit(tmp_path):
    lopt = MathL2O()
    make = lambda i: tiny(seed=10 + i, dtype=torch.float32)   # noqa: E731
    full, hist_full = meta_train_l2o(lopt, make, 3, horizon=8, unroll=4, progress=False)
    ckpt = str(tmp_path / "ckpt.pt")
    meta_train_l2o(lopt, make, 2, horizon=8, unroll=4, checkpoint=ckpt, checkpoint_every=1,
                   progress=False)                               # "crashes" after 2 steps
    resumed, hist = meta_train_l2o(lopt, make, 3, horizon=8, unroll=4, checkpoint=ckpt,
                                   progress=False)
    assert hist == hist_full and len(hist) == 6
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_l2o_meta_train_l2o_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiple of unroll"):
        meta_train_l2o(MathL2O(), lambda i: tiny(), 1, horizon=10, unroll=3)


def test_l2o_models_train_with_generic_meta_train():
    """L2O-DM and RNNprop are plain LOpts: learned.meta_train (TBPTT) runs them on `lasso`."""
    from learned.meta_train import meta_train
    from learned.task_family import SingleTask

    family = SingleTask(tasks.get("lasso", m=8, n=16, sparsity=3, instances=2), horizon=10)
    for lopt in (L2ODM(), RNNProp()):
        theta0 = lopt.init_theta(torch.Generator().manual_seed(0))
        theta = meta_train(lopt, family, 2, method="tbptt", truncation=5, num_tasks=1,
                           outer_lr=1e-3, progress=False, theta=theta0)
        assert all(torch.isfinite(v).all() for v in theta.values())
        assert any(not torch.equal(theta[k], theta0[k]) for k in theta)
