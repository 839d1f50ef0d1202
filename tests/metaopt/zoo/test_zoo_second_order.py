"""Second-order members (sophia, shampoo, soap, psgd) against public references in float64
(muon: test_zoo_muon.py).

Each test runs >= 20 steps on a 1-D, a 2-D and a 4-D parameter in two param groups (the second
with its own lr and weight decay) and compares parameters and state to 1e-6 relative with
pytorch_optimizer's implementation (or a literal transcription of the paper's algorithm where
no reference matches), stating every departure of the reference from the paper.
"""
import math

import pytest
import torch
import pytorch_optimizer as po

from metaopt import tasks, zoo

# gradients built with backward(create_graph=True) are differentiated on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")

SHAPES = [(5,), (4, 6), (3, 2, 2, 2)]
RTOL = 1e-6


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def _targets(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def _loss(params, targets, step):
    """A smooth non-quadratic loss whose Hessian is not diagonal."""
    total = 0.0
    for p, t in zip(params, targets):
        r = p - t * (1 + 0.1 * math.sin(step))
        total = total + 0.5 * (r * r).sum() + 0.05 * (r ** 4).sum() + 0.1 * r.sum() ** 2
    return total


def _groups(params, first, second):
    return [{"params": params[:2], **first}, {"params": params[2:], **second}]


def _run(opt, params, targets, steps, create_graph=False, seed0=100):
    for t in range(1, steps + 1):
        opt.zero_grad()
        loss = _loss(params, targets, t)
        loss.backward(create_graph=create_graph)
        torch.manual_seed(seed0 + t)
        opt.step()
        for p in params:
            p.grad = None


def _close(a, b, rtol=RTOL):
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * max(1.0, float(b.abs().max())))


def _pair(ours_hp, ref_cls, ref_hp, name, steps=25, create_graph=False, ours_group2=None,
          ref_group2=None):
    targets = _targets()
    ours = [p.clone().requires_grad_() for p in _params()]
    ref = [p.clone().requires_grad_() for p in _params()]
    opt = zoo.create(name, _groups(ours, {}, ours_group2 or {}), impl="loop", **ours_hp)
    ref_opt = ref_cls(_groups(ref, {}, ref_group2 or {}), **ref_hp)
    _run(opt, ours, targets, steps, create_graph)
    _run(ref_opt, ref, targets, steps, create_graph)
    for a, b in zip(ours, ref):
        assert not torch.equal(a.detach(), _params()[SHAPES.index(tuple(a.shape))])
        _close(a.detach(), b.detach())
    return opt, ref_opt, ours, ref


# ----------------------------------------------------------------------------- Sophia
def test_sophia_h_matches_pytorch_optimizer_sophiah():
    """pytorch_optimizer.SophiaH steps ``lr_r clip(m / max(h, eps_r), p_r)`` with decay
    ``p (1 - lr_r wd_r)``; ours ``lr clip(m / max(rho h, eps), 1)`` with ``p (1 - lr wd)``.
    They are equal for rho = p_r, eps = p_r eps_r, lr = lr_r p_r, wd = wd_r / p_r. Both draw
    Rademacher probes in the same order from the same seed, so the Hutchinson estimates agree."""
    ref_hp = dict(lr=0.2, betas=(0.9, 0.95), weight_decay=0.05, p=0.5, update_period=3,
                  eps=1e-12, hessian_distribution="rademacher")
    hp = dict(lr=0.2 * 0.5, betas=(0.9, 0.95), weight_decay=0.05 / 0.5, rho=0.5, eps=0.5e-12,
              update_period=3)
    opt, ref_opt, ours, ref = _pair(
        hp, po.SophiaH, ref_hp, "sophia", create_graph=True,
        ours_group2={"lr": 0.3 * 0.5, "weight_decay": 0.02 / 0.5},
        ref_group2={"lr": 0.3, "weight_decay": 0.02})
    for a, b in zip(ours, ref):
        _close(opt.state[a]["exp_avg"], ref_opt.state[b]["momentum"])
        _close(opt.state[a]["hessian"], ref_opt.state[b]["hessian_moment"])
        assert opt.state[a]["hessian"].abs().min() > 0


def test_sophia_hessian_refresh_schedule_and_exact_diagonal():
    """On a separable loss ``sum h_i x_i^2 / 2`` Hutchinson is exact (``u^2 = 1``): after the
    refreshes on steps 1 and 4 (period 3) the EMA started at 0 is ``(1 - b2^2) h``."""
    h = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    b2 = 0.9
    opt = zoo.create("sophia", [x], lr=1e-3, betas=(0.5, b2), update_period=3, weight_decay=0.0)
    for _ in range(5):
        opt.zero_grad()
        (0.5 * h * x * x).sum().backward(create_graph=True)
        opt.step()
    expected = h * (1 - b2 ** 2)  # two refreshes (steps 1 and 4) of an EMA started at 0
    torch.testing.assert_close(opt.state[x]["hessian"], expected, rtol=1e-12, atol=0)


def test_sophia_g_matches_transcription_of_official_algorithm():
    """Sophia-G on softmax regression against a per-parameter transcription of Liu et al.'s
    Algorithm 2 with the official code's update ``sign(m) min(|m| / (rho B h + eps), 1)``
    (``h`` the EMA of ``g_hat^2``, labels sampled from the model's logits every k steps)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=gen)
    W0 = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    b0 = torch.randn(3, generator=gen, dtype=torch.float64)
    lr, (b1, b2), rho, wd, k, eps = 0.05, (0.9, 0.95), 0.04, 0.1, 2, 1e-15

    W, b = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = zoo.create("sophia", [W, b], lr=lr, betas=(b1, b2), rho=rho, weight_decay=wd,
                     update_period=k, estimator="gnb")
    Wr, br = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    mr = [torch.zeros_like(W0), torch.zeros_like(b0)]
    hr = [torch.zeros_like(W0), torch.zeros_like(b0)]
    for t in range(1, 22):
        opt.zero_grad()
        logits = X @ W + b
        torch.nn.functional.cross_entropy(logits, y).backward(retain_graph=True)
        torch.manual_seed(t)
        opt.step(logits=logits)
        # reference
        logits_r = X @ Wr + br
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits_r, y), [Wr, br],
                                    retain_graph=True)
        if (t - 1) % k == 0:
            torch.manual_seed(t)
            ys = torch.distributions.Categorical(logits=logits_r.detach()).sample()
            ghat = torch.autograd.grad(torch.nn.functional.cross_entropy(logits_r, ys), [Wr, br])
            hr = [b2 * h + (1 - b2) * gh * gh for h, gh in zip(hr, ghat)]
        with torch.no_grad():
            for i, (p, g) in enumerate(zip([Wr, br], grads)):
                p.mul_(1 - lr * wd)
                mr[i] = b1 * mr[i] + (1 - b1) * g
                ratio = (mr[i].abs() / (rho * 32 * hr[i] + eps)).clamp(max=1)
                p.sub_(lr * mr[i].sign() * ratio)
    _close(W.detach(), Wr.detach())
    _close(b.detach(), br.detach())
    _close(opt.state[W]["hessian"], 32 * hr[0])


def test_sophia_needs_closure_or_create_graph():
    x = torch.ones(3, requires_grad=True)
    opt = zoo.create("sophia", [x])
    (x * x).sum().backward()
    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step()
    opt = zoo.create("sophia", [x], estimator="gnb")
    with pytest.raises(RuntimeError, match="logits"):
        opt.step()


# ----------------------------------------------------------------------------- Shampoo
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_shampoo_matches_pytorch_optimizer_shampoo(momentum):
    """pytorch_optimizer.Shampoo (moskomule's port of Gupta et al. Algorithm 2): coupled weight
    decay, eps I initial statistics, SVD inverse roots (ours: float64 eigh, the same matrix
    function for a symmetric positive definite input), roots every step."""
    hp = dict(lr=0.05, momentum=momentum, weight_decay=0.01, eps=1e-3)
    opt, ref_opt, ours, ref = _pair(
        hp, po.Shampoo, dict(hp, matrix_eps=hp["eps"]), "shampoo",
        ours_group2={"lr": 0.02, "weight_decay": 0.03},
        ref_group2={"lr": 0.02, "weight_decay": 0.03})
    for a, b in zip(ours, ref):
        for i in range(a.dim()):
            _close(opt.state[a][f"stat_{i}"], ref_opt.state[b][f"pre_cond_{i}"])
            _close(opt.state[a][f"root_{i}"], ref_opt.state[b][f"inv_pre_cond_{i}"])


def _shampoo_transcription(params, targets, steps, lr, eps, freq, graft_eps, max_dim):
    """Gupta et al. Algorithm 2 with AdaGrad grafting, written per tensor with explicit
    unfoldings (matrix_power of eigen-factors recomputed every ``freq`` steps from step 1)."""
    params = [p.clone().requires_grad_() for p in params]
    stats = [{i: eps * torch.eye(n, dtype=p.dtype) for i, n in enumerate(p.shape) if n <= max_dim}
             for p in params]
    roots = [{} for _ in params]
    acc = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(_loss(params, targets, t), params)
        with torch.no_grad():
            for j, (p, g) in enumerate(zip(params, grads)):
                k = p.dim()
                d = g.clone()
                for i in stats[j]:
                    unf = g.movedim(i, 0).reshape(g.shape[i], -1)
                    stats[j][i] += unf @ unf.T
                    if (t - 1) % freq == 0:
                        lam, v = torch.linalg.eigh(stats[j][i])
                        roots[j][i] = v @ torch.diag(lam ** (-1 / (2 * k))) @ v.T
                    d = torch.movedim(torch.tensordot(roots[j][i], d, dims=([1], [i])), 0, i)
                acc[j] += g * g
                graft = g / (acc[j].sqrt() + graft_eps)
                p.sub_(lr * d * graft.norm() / d.norm())
    return params


def test_shampoo_grafting_frequency_and_max_dim_match_transcription():
    targets = _targets()
    kw = dict(lr=0.05, eps=1e-4, freq=3, graft_eps=1e-10, max_dim=5)
    expected = _shampoo_transcription(_params(), targets, 21, **kw)
    ours = [p.clone().requires_grad_() for p in _params()]
    opt = zoo.create("shampoo", ours, lr=kw["lr"], eps=kw["eps"], precondition_frequency=3,
                     graft="adagrad", max_precond_dim=5)
    _run(opt, ours, targets, 21)
    assert "stat_1" not in opt.state[ours[1]]  # the 6-wide dimension has no factor
    for a, b in zip(ours, expected):
        _close(a.detach(), b.detach())


# ----------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("name,hp,steps", [
    ("shampoo", dict(lr=0.5, graft="none", eps=1e-4), 60),
    ("soap", dict(lr=0.05, weight_decay=0.0), 300),
    ("psgd", dict(lr=0.05, weight_decay=0.0), 300),
])
def test_second_order_converges_on_quadratic(name, hp, steps):
    torch.manual_seed(0)  # PSGD's probes
    task = tasks.get("quadratic", dim=16, cond=100.0, dtype=torch.float64)
    x = task.init()[0].clone().requires_grad_()
    start = task.evaluate([x.detach()])["val_loss"]
    opt = zoo.create(name, [x], **hp)
    batch = task.sample_batch()
    for _ in range(steps):
        opt.zero_grad()
        task.loss([x], batch).backward()
        opt.step()
    assert task.evaluate([x.detach()])["val_loss"] < 1e-3 * start


def test_sophia_converges_on_quadratic():
    task = tasks.get("quadratic", dim=16, cond=100.0, dtype=torch.float64)
    x = task.init()[0].clone().requires_grad_()
    start = task.evaluate([x.detach()])["val_loss"]
    opt = zoo.create("sophia", [x], lr=0.05, rho=1.0, weight_decay=0.0, update_period=5)
    batch = task.sample_batch()
    for _ in range(300):
        opt.zero_grad()
        task.loss([x], batch).backward(create_graph=True)
        opt.step()
        x.grad = None
    assert task.evaluate([x.detach()])["val_loss"] < 1e-3 * start


# ----------------------------------------------------------------------------- SOAP
@pytest.mark.parametrize("precondition_1d", [False, True])
def test_soap_matches_pytorch_optimizer_soap(precondition_1d):
    """pytorch_optimizer.SOAP is a line-by-line port of nikhilvyas/SOAP (first step only
    collects statistics, float32 QR refresh, decoupled decay after the step). Frequency 3 so
    that 25 steps include 8 eigenbasis refreshes; max dim 5 leaves the 6-wide dimension
    unrotated."""
    hp = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.05, precondition_frequency=3,
              precondition_1d=precondition_1d)
    opt, ref_opt, ours, ref = _pair(
        dict(hp, max_precond_dim=5), po.SOAP, dict(hp, max_precondition_dim=5), "soap",
        ours_group2={"lr": 0.02, "weight_decay": 0.1}, ref_group2={"lr": 0.02, "weight_decay": 0.1})
    for a, b in zip(ours, ref):
        _close(opt.state[a]["exp_avg"], ref_opt.state[b]["exp_avg"])
        _close(opt.state[a]["exp_avg_sq"], ref_opt.state[b]["exp_avg_sq"])
        for i, gg in enumerate(ref_opt.state[b]["GG"]):
            if len(gg) == 0:
                assert f"gg_{i}" not in opt.state[a]
                continue
            _close(opt.state[a][f"gg_{i}"], gg)
            _close(opt.state[a][f"q_{i}"], ref_opt.state[b]["Q"][i])


# ----------------------------------------------------------------------------- PSGD-Kron
def _solve_triangular_right_same_dtype(x, a):
    """pytorch_optimizer's ``solve_triangular_right`` casts to float32 (for bf16 support); the
    same solve kept in the input dtype, so the float64 comparison is not limited by float32."""
    flat = torch.linalg.solve_triangular(a, x.reshape(-1, x.size(-1)), upper=True, left=False)
    return flat.reshape_as(x)


def _kron(factors):
    """The full preconditioner factor ``Q_1 (x) ... (x) Q_k`` (diagonal factors as matrices);
    single factors differ by balancing scalars, their product must not."""
    out = torch.ones(1, 1, dtype=torch.float64)
    for q in factors:
        out = torch.kron(out, torch.diag(q) if q.dim() == 1 else q)
    return out


@pytest.mark.parametrize("prob,decouple,mode", [(1.0, True, None), (0.5, False, None),
                                               (1.0, True, "one_diag")])
def test_psgd_matches_pytorch_optimizer_kron(monkeypatch, prob, decouple, mode):
    """pytorch_optimizer.Kron (kron_torch's PSGD-Kron) with float64 preconditioners, its random
    factor balancing off (balancing leaves Q = Q_1 (x) ... (x) Q_k unchanged; ours balances at
    every preconditioner update) and the same probe draws (same seed, same order)."""
    import pytorch_optimizer.optimizer.psgd as po_psgd

    monkeypatch.setattr(po_psgd, "solve_triangular_right", _solve_triangular_right_same_dtype)
    hp = dict(lr=0.05, momentum=0.9, weight_decay=0.02, weight_decouple=decouple,
              precondition_lr=0.2, memory_save_mode=mode)
    ref_hp = dict(hp, pre_conditioner_update_probability=prob, precondition_dtype=None,
                  balance_prob=0.0)
    hp["precondition_lr"] = 0.1  # pytorch_optimizer fixes precondition_lr at 0.1 (a default)
    opt, ref_opt, ours, ref = _pair(
        dict(hp, update_probability=prob), po.Kron, ref_hp, "psgd",
        ours_group2={"lr": 0.02, "weight_decay": 0.05},
        ref_group2={"lr": 0.02, "weight_decay": 0.05})
    for a, b in zip(ours, ref):
        _close(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])
        ref_q = ref_opt.state[b]["Q"]
        _close(_kron([opt.state[a][f"q_{i}"] for i in range(len(ref_q))]), _kron(ref_q))
    # the 2-D weight has triangular factors (its wider one diagonal in one_diag mode)
    assert [q.dim() for q in opt.state[ours[1]].values() if q.dim() and q.shape[0] > 1][-2:] \
        == ([2, 1] if mode == "one_diag" else [2, 2])


@pytest.mark.parametrize("name", ["sophia", "shampoo", "soap", "psgd"])
def test_bf16_parameters_stay_bf16_and_make_float32_progress(name):
    """bf16 parameters stay bf16 (matrix state in float32 where the member keeps it so) and
    reduce the loss as much as the float32 run, to bf16 precision, over 15 steps."""
    hp = {"sophia": dict(lr=1e-2), "shampoo": dict(lr=0.05, eps=1e-4), "soap": dict(lr=1e-2),
          "psgd": dict(lr=1e-2, update_probability=1.0)}[name]
    x0 = torch.linspace(-1, 1, 24).reshape(4, 6)

    def loss_of(x):
        return ((x.float() - 0.5) ** 2).sum() + (x.float() ** 4).sum()

    final = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = x0.to(dtype, copy=True).requires_grad_()
        opt = zoo.create(name, [x], **hp)
        for t in range(15):
            opt.zero_grad()
            loss_of(x).backward(create_graph=name == "sophia")
            torch.manual_seed(t)
            opt.step()
            x.grad = None
        assert x.dtype == dtype and torch.isfinite(x.float()).all()
        final[dtype] = loss_of(x.detach()).item()
    start = loss_of(x0).item()
    assert final[torch.float32] < 0.9 * start
    assert final[torch.bfloat16] == pytest.approx(final[torch.float32], rel=0.05)


def test_shampoo_survives_rank_deficient_float32_statistics():
    """Deterministic gradients on a quadratic keep the statistics nearly rank one; in float32
    their small eigenvalues round to zero or below. Flooring at eps (the true minimum) keeps
    the roots finite: before, the loss went NaN within 6 steps at any learning rate."""
    from metaopt.bench.run import train_curve

    task = tasks.get("quadratic")
    rec = train_curve(task, zoo.rule("shampoo", lr=1e-2), seed=0, steps=300, eval_every=50)
    assert not rec["diverged"]
    assert rec["train_loss"][-1] < 0.9 * rec["train_loss"][0]
