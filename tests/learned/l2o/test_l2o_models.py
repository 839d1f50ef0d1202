"""The L2O models: shapes and state, their pieces against independent references, Math-L2O's
reduction to ISTA, and use as a torch optimizer."""
import math

import pytest
import torch

import learned
from learned.l2o import L2ODM, MathL2O, RNNProp, ista, l2o_objectives, l2o_step
from learned.l2o.lstm import init_lstm, lstm, lstm_state
from learned.l2o.preprocess import log_and_sign
from metaopt import RuleOptimizer, tasks
from metaopt.zoo.adam import adam_direction

F64 = torch.float64
MODELS = [L2ODM, RNNProp, MathL2O]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small_lasso(dtype=F64, **kw):
    return tasks.get("lasso", **{"m": 20, "n": 40, "sparsity": 5, "instances": 3,
                                 "dtype": dtype, **kw})


def to64(theta):
    return {k: v.to(F64) for k, v in theta.items()}


def test_l2o_exported_names():
    assert {"L2ODM", "RNNProp", "MathL2O"} <= set(learned.__all__)
    assert learned.MathL2O is MathL2O


@pytest.mark.parametrize("cls", MODELS)
def test_l2o_shapes_and_state(cls):
    lopt = cls()
    theta = lopt.check_theta(lopt.init_theta(gen()))
    p = torch.randn(3, 7)
    state = lopt.init(p)
    assert state["h"].shape == state["c"].shape == (3, 7, 2, 20)
    ext = {"l1": 0.1, "lipschitz": torch.ones(3, 1)} if lopt.uses_prox else {}
    delta, new = lopt.update(theta, torch.randn(3, 7), p, state, 1, None, **ext)
    assert delta.shape == p.shape and torch.isfinite(delta).all()
    assert set(new) == set(state) and all(new[k].shape == state[k].shape for k in state)
    assert not torch.equal(new["h"], state["h"])


def test_l2o_lstm_matches_torch_lstm():
    theta = {k: v.to(F64) for k, v in init_lstm("l", 3, 5, 2, gen()).items()}
    ref = torch.nn.LSTM(3, 5, 2, dtype=F64)
    with torch.no_grad():
        for layer in range(2):
            getattr(ref, f"weight_ih_l{layer}").copy_(theta[f"l.w_ih{layer}"])
            getattr(ref, f"weight_hh_l{layer}").copy_(theta[f"l.w_hh{layer}"])
            getattr(ref, f"bias_ih_l{layer}").copy_(theta[f"l.b{layer}"])
            getattr(ref, f"bias_hh_l{layer}").zero_()
    xs = torch.randn(4, 6, 3, dtype=F64)                     # (time, coords, features)
    state = lstm_state(torch.Size([6]), 5, 2, xs)
    h, c = state["h"], state["c"]
    outs = []
    for t in range(4):
        out, h, c = lstm(theta, "l", xs[t], h, c)
        outs.append(out)
    ref_out, (ref_h, ref_c) = ref(xs)
    torch.testing.assert_close(torch.stack(outs), ref_out)
    torch.testing.assert_close(h.transpose(0, 1), ref_h)
    torch.testing.assert_close(c.transpose(0, 1), ref_c)


def test_l2o_log_and_sign_matches_paper_cases():
    """Andrychowicz et al. (2016), App. A: (log|g|/k, sgn g) if |g| >= e^-k, else (-1, e^k g)."""
    k = 5.0
    g = torch.tensor([3.0, -0.5, 1e-2, -1e-3, 1e-4, -2e-3, 0.0], dtype=F64)
    out = log_and_sign(g, k)
    for gi, (a, b) in zip(g.tolist(), out.tolist()):
        if abs(gi) >= math.exp(-k):
            want = (math.log(abs(gi)) / k, math.copysign(1.0, gi))
        else:
            want = (-1.0, math.exp(k) * gi)
        assert a == pytest.approx(want[0], abs=1e-12) and b == pytest.approx(want[1], abs=1e-12)


def test_l2o_rnnprop_features_are_adam_normalised():
    lopt = RNNProp()
    g1, g2 = torch.randn(2, 50, dtype=F64, generator=gen(7))
    state = lopt.init(torch.zeros(50, dtype=F64))
    f1, m, v = lopt.features(g1, state, 1)
    # step 1: v_hat = g^2 and m_hat = g, so both inputs are g / (|g| + eps) ~ sign(g)
    torch.testing.assert_close(f1, (g1 / (g1.abs() + 1e-8))[:, None].expand(50, 2))
    f2, _, _ = lopt.features(g2, {**state, "m": m, "v": v}, 2)
    hp = {"betas": (0.95, 0.95), "eps": 1e-8}
    d1, s1 = adam_direction(g1, {"exp_avg": torch.zeros(50, dtype=F64),
                                 "exp_avg_sq": torch.zeros(50, dtype=F64)}, hp, 1)
    d2, _ = adam_direction(g2, s1, hp, 2)                   # zoo Adam's m_hat / (sqrt v_hat + eps)
    torch.testing.assert_close(f2[:, 1], d2)


def neutral_theta(lopt):
    """Math-L2O parameters whose heads output 0: with 2*sigmoid for P and B and identity for
    A, B1, B2 the coefficients are exactly P = 1, B = 1, A = B1 = B2 = 0."""
    theta = to64(lopt.init_theta(gen(1)))
    theta["heads.w"] = torch.zeros_like(theta["heads.w"])
    theta["heads.b"] = torch.zeros_like(theta["heads.b"])
    return theta


@pytest.mark.parametrize("terms", [(), ("p", "b", "a", "b1", "b2")])
@pytest.mark.parametrize("name", ["lasso", "sparse_logreg"])
def test_l2o_math_l2o_reduces_to_ista(terms, name):
    t = small_lasso(seed=2) if name == "lasso" else tasks.get(
        "sparse_logreg", m=60, n=10, sparsity=4, rho=0.02, instances=3, dtype=F64, seed=2)
    lopt = MathL2O(terms=terms, activations={"a": "eye"})
    theta = neutral_theta(lopt)
    x = t.init()[0]
    state = lopt.init(x)
    ref = x
    worst = 0.0
    for k in range(1, 301):
        x, state = l2o_step(lopt, theta, t, x, state, k)
        ref = ista(t, 1, ref)[0]
        worst = max(worst, float((x - ref).abs().max()))
    assert worst <= 1e-12
    assert float(t.objective(ref).sub(t.objective(t.init()[0])).max()) < 0   # it did descend


def test_l2o_math_l2o_coefficients_enter_the_template():
    """One step with every term active equals eqs. (18)-(19) written out by hand."""
    t = small_lasso(seed=3)
    lopt = MathL2O(terms=("p", "b", "a", "b1", "b2"))
    theta = to64(lopt.init_theta(gen(4)))
    x = torch.randn(3, 40, dtype=F64)
    state = {**lopt.init(x), "z": torch.randn(3, 40, dtype=F64)}
    coef, _, _ = lopt.coefficients(theta, t.smooth_grad(x), x, state)
    P, B, A, B1, B2 = (coef[k] for k in ("p", "b", "a", "b1", "b2"))
    a = 0.9999 / t.lipschitz
    z = state["z"]
    prox_in = B * (x - P * a * t.smooth_grad(x)) + (1 - B) * (z - P * a * t.smooth_grad(z)) + B1
    thr = t.lam * P * a
    z_new = torch.where(prox_in > thr, prox_in - thr, torch.where(prox_in < -thr, prox_in + thr, 0.0))
    x_new = z_new + A * (z_new - z) + B2
    x2, s2 = l2o_step(lopt, theta, t, x, state, 1)
    torch.testing.assert_close(x2, x_new)
    torch.testing.assert_close(s2["z"], z_new)
    assert ((0 < P) & (P < 2)).all() and ((0 < A) & (A < 2)).all()


def test_l2o_math_l2o_errors():
    lopt = MathL2O(terms=("p", "b"))
    theta = lopt.init_theta(gen())
    p = torch.zeros(4)
    with pytest.raises(ValueError, match="Lipschitz"):
        lopt.update(theta, p, p, lopt.init(p), 1)
    with pytest.raises(ValueError, match="grad_z"):
        lopt.update(theta, p, p, lopt.init(p), 1, l1=0.1, lipschitz=1.0)
    with pytest.raises(ValueError, match="invalid terms"):
        MathL2O(terms=("q",))
    with pytest.raises(ValueError, match="lipschitz"):
        RuleOptimizer([torch.zeros(3, requires_grad=True)], MathL2O().rule(theta), l1=0.1,
                      lipschitz=0.0)
    with pytest.raises(ValueError, match="set the problem's l1"):
        RuleOptimizer([torch.zeros(3, requires_grad=True)], MathL2O().rule(theta))


@pytest.mark.parametrize("cls", MODELS)
def test_l2o_as_torch_optimizer_matches_functional_run(cls):
    t = small_lasso(dtype=torch.float32)
    lopt = cls()
    theta = lopt.init_theta(gen(5))
    ref = l2o_objectives(lopt, theta, t, 6)
    x = t.init()[0].clone().requires_grad_(True)
    hp = {"l1": t.lam, "lipschitz": t.lipschitz} if lopt.uses_prox else {}
    opt = RuleOptimizer([x], lopt.rule(theta), impl="loop", **hp)
    for k in range(6):
        opt.zero_grad()
        # Math-L2O is given grad f (the smooth part); the others the whole objective's gradient
        (t.smooth(x).sum() if lopt.uses_prox else t.loss([x])).backward()
        opt.step()
        torch.testing.assert_close(t.objective(x.detach()), ref[k + 1])


@pytest.mark.parametrize("cls", [L2ODM, RNNProp])
def test_l2o_update_vmaps_over_a_population(cls):
    lopt = cls()
    theta = lopt.init_theta(gen())
    p, g = torch.randn(2, 4, 9)
    state = lopt.init(p[0])
    states = {k: torch.stack([v] * 4) for k, v in state.items()}
    batched, _ = torch.func.vmap(lambda gg, pp, ss: lopt.update(theta, gg, pp, ss, 2))(g, p, states)
    for i in range(4):
        one, _ = lopt.update(theta, g[i], p[i], state, 2)
        torch.testing.assert_close(batched[i], one)


@pytest.mark.parametrize("cls", [L2ODM, RNNProp])
def test_l2o_model_free_models_run_in_learned_optimizer(cls):
    t = small_lasso(dtype=torch.float32)
    lopt = cls()
    theta = lopt.init_theta(gen(6))
    ref = l2o_objectives(lopt, theta, t, 4)
    x = t.init()[0].clone().requires_grad_(True)
    opt = learned.LearnedOptimizer([x], lopt, theta)
    for k in range(4):
        opt.zero_grad()
        t.loss([x]).backward()
        opt.step()
        torch.testing.assert_close(t.objective(x.detach()), ref[k + 1])


def test_l2o_math_l2o_runs_in_learned_optimizer_with_problem_constants():
    """``LearnedOptimizer`` forwards the LO's own hyperparameters (Math-L2O's l1 and L)."""
    t = small_lasso(dtype=torch.float32)
    lopt = MathL2O()
    theta = lopt.init_theta(gen(7))
    ref = l2o_objectives(lopt, theta, t, 4)
    x = t.init()[0].clone().requires_grad_(True)
    opt = learned.LearnedOptimizer([x], lopt, theta, l1=t.lam, lipschitz=t.lipschitz)
    for k in range(4):
        opt.zero_grad()
        t.smooth(x).sum().backward()
        opt.step()
        torch.testing.assert_close(t.objective(x.detach()), ref[k + 1])
    with pytest.raises(ValueError, match="l1"):
        learned.LearnedOptimizer([x], lopt, theta)
