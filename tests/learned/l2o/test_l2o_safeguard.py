"""The safeguarded L2O model: its guarantee (never above FISTA's / ISTA's own iterate, hence
FISTA's O(1/k^2) bound) on every problem distribution for models that diverge, its restart rule,
and its use as a torch optimizer."""
import pytest
import torch

import learned
from learned.l2o import L2ODM, MathL2O, Safeguarded, fista, ista, l2o_objectives
from learned.l2o.ood import VARIANTS, lasso_ood, sparse_logreg_ood
from learned.l2o.safeguard_optim import SafeguardedOptimizer
from metaopt import tasks
from metaopt.tasks.lasso import MATRICES
from metaopt.tasks.sparse_logreg import FEATURES

F64 = torch.float64
INSTANCES = 8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


FAST = {("lasso", "gaussian"), ("lasso", "correlated"), ("sparse_logreg", "digits"),
        ("lasso_ood", "cond1e6"), ("sparse_logreg_ood", "covtype_like")}


def distributions():
    """Every LASSO and sparse-logistic distribution, at small sizes; all but a few of them are
    ``slow``."""
    out = [("lasso", v, lambda v=v: tasks.get("lasso", m=30, n=60, sparsity=6, matrix=v,
                                              instances=INSTANCES, seed=3, dtype=F64))
           for v in MATRICES]
    out += [("sparse_logreg", v, lambda v=v: tasks.get(
        "sparse_logreg", **({} if v in ("digits", "breast_cancer") else {"n": 20}), m=120,
        sparsity=8, features=v, instances=INSTANCES, seed=3, dtype=F64)) for v in FEATURES]
    out += [("lasso_ood", v, lambda v=v: lasso_ood(v, INSTANCES, seed=3, m=40, n=80, dtype=F64))
            for v in VARIANTS]
    out += [("sparse_logreg_ood", v, lambda v=v: sparse_logreg_ood(
        v, INSTANCES, seed=3, m=120, n=20, dtype=F64)) for v in VARIANTS]
    return [pytest.param(*d, id=f"{d[0]}-{d[1]}",
                         marks=() if d[:2] in FAST else pytest.mark.slow) for d in out]


def reckless_math_l2o():
    """An untrained Math-L2O whose heads are pushed to P ~ 2 (step ~ 2/L) and A ~ 1.9: it
    diverges on most problems."""
    lopt = MathL2O()
    theta = {k: v.to(F64) for k, v in lopt.init_theta(gen(1)).items()}
    theta["heads.w"] = torch.zeros_like(theta["heads.w"])
    theta["heads.b"] = torch.tensor([6.0, 3.0], dtype=F64)
    return lopt, theta


def models():
    lopt = MathL2O()
    dm = L2ODM(scale=1.0)
    return {"math_l2o_random": (lopt, {k: v.to(F64) for k, v in lopt.init_theta(gen(2)).items()}),
            "math_l2o_reckless": reckless_math_l2o(),
            "l2o_dm_random": (dm, {k: v.to(F64) for k, v in dm.init_theta(gen(3)).items()})}


@pytest.mark.parametrize("kind,variant,make", distributions())
def test_l2o_safeguard_keeps_fistas_guarantee_on_every_distribution(kind, variant, make):
    """Over 8 random float64 instances and three divergent or untrained models:
    F(x_k) <= F(x^FISTA_k) at every k, and F(x_k) - F* <= 2 L' ||x_0 - x*||^2 / (k + 1)^2
    (Beck & Teboulle 2009, Thm 4.4; L' = L / 0.9999 the step's constant) with x*, F* from
    5,000 FISTA iterations."""
    t = make()
    steps = 200
    x_star, ref = fista(t, 5000)
    f_star = ref.min(0).values
    lip = t.lipschitz[:, 0] / 0.9999
    bound = 2 * lip * (x_star ** 2).sum(-1) / (torch.arange(1, steps + 2, dtype=F64)[:, None] ** 2)
    _, f_fista = fista(t, steps)
    for name, (lopt, theta) in models().items():
        objs, accepted = Safeguarded(lopt).objectives(theta, t, steps)
        assert torch.isfinite(objs).all(), name
        assert (objs <= f_fista).all(), name
        gap = objs - f_star
        assert (gap[1:] <= bound[1:] * (1 + 1e-9) + 1e-12).all(), name
        if name == "math_l2o_reckless":
            raw = l2o_objectives(lopt, theta, t, steps)
            # where the bare model ends worse than FISTA, the safeguard must have fired
            worse = ~(raw[-1] <= f_fista[-1])
            assert (~accepted[:, worse]).any(0).all(), name


def small_lasso(**kw):
    return tasks.get("lasso", **{"m": 20, "n": 40, "sparsity": 5, "instances": 4, "dtype": F64,
                                 "seed": 1, **kw})


def test_l2o_safeguard_ista_fallback_and_exact_fallback_sequence():
    t = small_lasso(matrix="correlated")
    lopt, theta = reckless_math_l2o()
    for fallback, solver in (("ista", ista), ("fista", fista)):
        sg = Safeguarded(lopt, fallback=fallback)
        state = sg.init(t.init()[0])
        _, ref = solver(t, 200)
        for k in range(1, 201):
            state = sg.step(theta, t, state, k)
            # the fallback's own iterate is exactly ISTA's / FISTA's
            torch.testing.assert_close(t.objective(state["fb_x"]), ref[k], rtol=0, atol=0)
            assert (state["fx"] <= ref[k]).all()
            torch.testing.assert_close(state["fx"], t.objective(state["x"]), rtol=0, atol=0)


def test_l2o_safeguard_accepts_a_model_better_than_fista_and_matches_it():
    """A model whose iterate always beats FISTA (an oracle that jumps to the solution) is never
    overridden: the safeguarded run is the bare model's run."""
    t = small_lasso()
    x_star, _ = fista(t, 5000)

    class Oracle(learned.LOpt):
        """Jumps to the solution at the first step."""
        name = "oracle"

        def init_theta(self, generator=None):
            return {}

        def init(self, param, info=None):
            return {}

        def update(self, theta, grad, param, state, step, info=None, **ext):
            return param - x_star, {}

    objs, accepted = Safeguarded(Oracle()).objectives({}, t, 20)
    assert accepted.all()
    torch.testing.assert_close(objs[1:], t.objective(x_star).expand(20, -1))


def test_l2o_safeguard_restart_rules():
    t = small_lasso(matrix="correlated")
    lopt, theta = reckless_math_l2o()
    for restart in ("keep", "fresh"):
        sg = Safeguarded(lopt, restart=restart)
        state = sg.init(t.init()[0])
        for k in range(1, 30):
            prev = state
            state = sg.step(theta, t, state, k)
            rej = ~state["accepted"]
            if rej.any():
                break
        assert rej.any()
        # rejected instances continue from the fallback's iterate, with z reset to it
        torch.testing.assert_close(state["p"][rej], state["fb_x"][rej])
        torch.testing.assert_close(state["model"]["z"][rej], state["fb_x"][rej])
        if restart == "fresh":
            assert (state["model"]["h"][rej] == 0).all()
        else:
            _, h, _ = lopt.coefficients(theta, t.smooth_grad(prev["p"]), prev["p"], prev["model"])
            torch.testing.assert_close(state["model"]["h"][rej], h[rej])


def test_l2o_safeguard_as_torch_optimizer_matches_functional_run():
    t = small_lasso(instances=1, matrix="correlated")
    lopt, theta = reckless_math_l2o()
    sg = learned.Safeguarded(lopt)
    objs, accepted = sg.objectives(theta, t, 25)
    x = torch.zeros(40, dtype=F64, requires_grad=True)
    opt = SafeguardedOptimizer([x], sg, theta, l1=t.lam, lipschitz=float(t.lipschitz))
    A, b = t.A[0], t.b[0]

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((A @ x - b) ** 2).sum()
        loss.backward()
        return loss

    for k in range(25):
        f = opt.step(closure)
        torch.testing.assert_close(f, objs[k + 1, 0])
        torch.testing.assert_close(t.objective(x.detach()[None])[0], objs[k + 1, 0])
    assert not accepted.all() and accepted.any()


def test_l2o_safeguard_errors():
    with pytest.raises(ValueError, match="fallback must be one of"):
        Safeguarded(MathL2O(), fallback="adam")
    with pytest.raises(ValueError, match="learned.LOpt"):
        Safeguarded("math_l2o")
    sg = Safeguarded(MathL2O())
    theta = sg.init_theta(gen())
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="lipschitz > 0"):
        SafeguardedOptimizer([x], sg, theta, l1=0.1, lipschitz=0.0)
    opt = SafeguardedOptimizer([x], sg, theta, l1=0.1, lipschitz=1.0)
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
    with pytest.raises(ValueError, match="unknown OOD variant"):
        lasso_ood("iris")
