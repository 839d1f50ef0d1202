"""online_subspace_descent (Liang et al., NeurIPS 2024) against

* a per-parameter transcription of the paper's update, written the way the official code
  (kyleliang919/Online-Subspace-Descent, ``proj_type="continuous"``) runs it: P from the SVD
  of the first gradient in the official orientation (``r x n`` on the right when ``m >= n``),
  the PCA loss differentiated by autograd, torch.optim.AdamW stepping P from step 2, the
  Hugging Face AdamW step in the subspace; float64, 25 steps, 1-D, two 2-D (one projected on
  each side) and a 4-D tensor (4-D and 1-D take the unprojected Adam step, as in
  pytorch_optimizer's GaLore), two param groups, weight decay and the orthogonality term on.
  Difference to the official code, followed by the paper: the weight decay uses the weight
  before the step (the official code decays the already-updated weight); P's step size is
  ``proj_lr_ratio * lr`` (official: ``lr / initial lr / update_proj_gap``, equal at a
  constant lr with ``proj_lr_ratio = 1 / (update_proj_gap * lr)``).
* pytorch_optimizer.GaLore with an update gap longer than the run, which is the method with P
  frozen (``proj_lr_ratio = 0``); no weight decay there, as GaLore too decays the updated
  weight; float32, where both take the SVD of the same float32 gradient.
* the full-rank identity: with ``rank`` the whole projected side, P_1 = Q is square and
  orthogonal, where the PCA gradient vanishes; with P kept there the method is Adam on the
  rotated weight ``Q^T W``. P is frozen (``proj_lr_ratio = 0``) for this check: in floating
  point P's Adam normalises the rounding-level PCA gradient up to steps of size eta_P.
* the online PCA step lowers the projection residual on a fixed gradient and reaches the
  best rank-r residual with orthonormal P; its closed-form gradient equals autograd's.
* convergence on a matrix quadratic with rank 2 < 6 (frozen P cannot get there).
Quadratic/Rosenbrock convergence and the generic checks are in test_zoo_common.py.
"""
import pytorch_optimizer
import torch

from metaopt import zoo
from metaopt.zoo.equivalence import SHAPES, compare_with_reference, make_problem
from metaopt.zoo.online_subspace_descent import (initial_projection, pca_loss, pca_loss_grad,
                                                 small_side_first)

NAME = "online_subspace_descent"
ALL_SHAPES = (SHAPES[0], SHAPES[1], (6, 4), SHAPES[2])  # 1-D, left-, right-projected, 4-D


def hf_adam_step(grad, state, lr, betas, eps):
    """The official (Hugging Face) AdamW direction times lr, state updated in place."""
    b1, b2 = betas
    state["step"] += 1
    state["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
    step_size = lr * (1 - b2 ** state["step"]) ** 0.5 / (1 - b1 ** state["step"])
    return step_size * state["exp_avg"] / (state["exp_avg_sq"].sqrt() + eps)


class TranscribedOSD(torch.optim.Optimizer):
    """The paper's Online Subspace Descent with Adam for W and AdamW for P, per parameter."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 rank=128, scale=1.0, proj_lr_ratio=5.0, proj_weight_decay=0.01, ortho_reg=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      rank=rank, scale=scale, proj_lr_ratio=proj_lr_ratio,
                                      proj_weight_decay=proj_weight_decay, ortho_reg=ortho_reg))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                step = self._matrix_step if p.dim() == 2 else self._dense_step
                step(p, p.grad, self.state[p], group)

    @staticmethod
    def _dense_step(p, g, st, group):
        if not st:
            st.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        update = hf_adam_step(g, st, group["lr"], group["betas"], group["eps"])
        p.sub_(update + group["lr"] * group["weight_decay"] * p)

    @staticmethod
    def _matrix_step(p, g, st, group):
        right = g.shape[0] >= g.shape[1]
        if not st:  # P_1 from the SVD of the first gradient; no PCA step yet
            u, _, vh = torch.linalg.svd(g, full_matrices=False)
            P = (vh[:group["rank"]] if right else u[:, :group["rank"]]).clone()
            low = g @ P.T if right else P.T @ g
            P_opt = torch.optim.AdamW([P], lr=group["proj_lr_ratio"] * group["lr"],
                                      weight_decay=group["proj_weight_decay"])
            st.update(step=0, right=right, P=P, P_opt=P_opt, exp_avg=torch.zeros_like(low),
                      exp_avg_sq=torch.zeros_like(low))
        else:  # the online PCA loss of the normalised gradient at the current P
            P = st["P"]
            with torch.enable_grad():
                P.requires_grad_(True)
                gn = g / g.norm()
                proj = P.T @ P if right else P @ P.T
                residual = gn @ proj - gn if right else proj @ gn - gn
                gram = P @ P.T if right else P.T @ P
                eye = torch.eye(gram.shape[0], dtype=P.dtype)
                loss = (residual ** 2).sum() + group["ortho_reg"] * ((gram - eye) ** 2).sum()
                P.grad = torch.autograd.grad(loss, P)[0]
                P.requires_grad_(False)
        low = g @ P.T if right else P.T @ g
        d = hf_adam_step(low, st, group["lr"], group["betas"], group["eps"])
        back = d @ P if right else P @ d
        p.sub_(group["scale"] * back + group["lr"] * group["weight_decay"] * p)
        if P.grad is not None:
            st["P_opt"].step()  # P_{t+1}, after W used P_t


def _ours(st_key):
    """Our state in the official orientation (low-rank moments and P transposed when the
    matrix is projected on the right)."""
    return lambda st: st[st_key].T if st.get("right") else st[st_key]


GROUPS = [{"lr": 0.02, "rank": 2, "scale": 0.5, "weight_decay": 0.1, "ortho_reg": 0.1},
          {"lr": 0.01, "rank": 3, "betas": (0.8, 0.95), "eps": 1e-8, "proj_lr_ratio": 2.0,
           "proj_weight_decay": 0.0}]


def test_matches_transcription_of_the_paper_update():
    compare_with_reference(NAME, TranscribedOSD, GROUPS, shapes=ALL_SHAPES,
                           state_map={"exp_avg": _ours("exp_avg"),
                                      "exp_avg_sq": _ours("exp_avg_sq")})


def test_projection_and_its_adam_state_match_the_transcription():
    def proj_moment(key):  # zero before P's first step (step 2)
        def get(st):
            moment = st["P_opt"].state[st["P"]].get(key, torch.zeros_like(st["P"]))
            return moment.T if st["right"] else moment
        return get

    compare_with_reference(NAME, TranscribedOSD, GROUPS, shapes=((5, 6), (6, 4)), steps=20,
                           state_map={"proj": _ours("P"),
                                      "proj_exp_avg": proj_moment("exp_avg"),
                                      "proj_exp_avg_sq": proj_moment("exp_avg_sq")})


def test_frozen_projection_equals_pytorch_optimizer_galore():
    ours = [{"lr": 0.02, "rank": 2, "scale": 0.5, "proj_lr_ratio": 0.0},
            {"lr": 0.01, "rank": 3, "betas": (0.8, 0.95), "proj_lr_ratio": 0.0}]
    theirs = [{"lr": 0.02, "rank": 2, "scale": 0.5, "update_proj_gap": 10**9,
               "projection_type": "std"},
              {"lr": 0.01, "rank": 3, "betas": (0.8, 0.95), "scale": 1.0,
               "update_proj_gap": 10**9, "projection_type": "std"}]
    float32_problem = lambda shapes, n: make_problem(shapes, n, dtype=torch.float32)
    compare_with_reference(NAME, lambda g: pytorch_optimizer.GaLore(g, foreach=False), ours,
                           ref_groups=theirs, shapes=ALL_SHAPES, problem=float32_problem,
                           rtol=1e-5, atol=1e-6)


def _matrix_loss(w, a, b):
    return 0.5 * (a * w * w).sum() + (b * w).sum() + 0.1 * torch.sin(3 * w).sum()


def test_full_rank_is_adam_on_the_rotated_weight():
    """rank = the projected side, P kept at Q = P_1: W_t = Q Z_t (left) or Z_t Q^T (right)
    with Z the AdamW iterates on f(Q Z) (resp. f(Z Q^T)); Q is a zero of the PCA gradient."""
    gen = torch.Generator().manual_seed(3)
    for shape in ((3, 5), (5, 3)):
        w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
        a = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
        b = torch.randn(shape, generator=gen, dtype=torch.float64)
        grad = lambda w: torch.func.grad(_matrix_loss)(w, a, b)
        right = shape[0] >= shape[1]
        q = initial_projection(grad(w0), 3)
        stationary = pca_loss_grad(q, small_side_first(grad(w0)), 0.0)
        assert stationary.abs().max() < 1e-14
        to_w = (lambda z: z @ q.T) if right else (lambda z: q @ z)

        w = w0.clone().requires_grad_()
        z = ((w0 @ q) if right else (q.T @ w0)).requires_grad_()
        ours = zoo.create(NAME, [w], lr=0.05, eps=0.0, weight_decay=0.1, rank=3,
                          proj_lr_ratio=0.0)
        adam = torch.optim.AdamW([z], lr=0.05, eps=0.0, weight_decay=0.1)
        for _ in range(20):
            for opt, loss in ((ours, lambda: _matrix_loss(w, a, b)),
                              (adam, lambda: _matrix_loss(to_w(z), a, b))):
                opt.zero_grad()
                loss().backward()
                opt.step()
            torch.testing.assert_close(w.detach(), to_w(z.detach()), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ours.state[w]["proj"], q, rtol=0, atol=0)


def _fixed_gradient(shape=(8, 12), seed=0):
    """A gradient with singular values 2^-k."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(shape[1], shape[0], generator=gen, dtype=torch.float64)).Q
    return (u * 2.0 ** -torch.arange(shape[0], dtype=torch.float64)) @ v.T


def test_pca_loss_grad_is_the_gradient_of_the_pca_loss():
    g = _fixed_gradient()
    proj = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for ortho_reg in (0.0, 0.3):
        want = torch.func.grad(pca_loss)(proj, g, ortho_reg)
        torch.testing.assert_close(pca_loss_grad(proj, g, ortho_reg), want, rtol=1e-12, atol=1e-14)


def test_online_pca_steps_lower_the_residual_to_the_best_rank_r_one():
    """Start from the top subspace of another gradient, then feed one fixed gradient G: the
    residual ||P P^T Gn - Gn||^2 falls after the first PCA step and ends at the rank-2 optimum
    (the tail energy of Gn) with P^T P = I."""
    g, start = _fixed_gradient(), _fixed_gradient(seed=5)
    rule = zoo.rule(NAME, lr=0.01, rank=2, proj_lr_ratio=1.0, proj_weight_decay=0.0)
    w = torch.zeros(8, 12, dtype=torch.float64)
    _, state = rule.update(start, w, rule.init(w), rule.hp, 1)
    gs = small_side_first(g)
    residuals = [pca_loss(state["proj"], gs, 0.0)]
    for t in range(2, 400):
        _, state = rule.update(g, w, state, rule.hp, t)
        residuals.append(pca_loss(state["proj"], gs, 0.0))
    s = torch.linalg.svdvals(g)
    best = (s[2:] ** 2).sum() / (s ** 2).sum()
    assert residuals[1] < residuals[0] and residuals[0] > 10 * best
    torch.testing.assert_close(residuals[-1], best, rtol=1e-3, atol=1e-6)
    proj = state["proj"]
    torch.testing.assert_close(proj.T @ proj, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-3)


def test_converges_on_a_matrix_quadratic_with_a_low_rank_subspace():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    curv = 0.5 + torch.rand(8, 6, generator=gen, dtype=torch.float64)
    loss = lambda w: 0.5 * (curv * (w - target) ** 2).sum()

    def train(**hp):
        w = torch.zeros(8, 6, dtype=torch.float64, requires_grad=True)
        opt = zoo.create(NAME, [w], lr=0.05, rank=2, **hp)
        for _ in range(600):
            opt.zero_grad()
            loss(w).backward()
            opt.step()
        return loss(w).item()

    start = loss(torch.zeros(8, 6, dtype=torch.float64)).item()
    assert train() < 1e-6 * start
    assert train(proj_lr_ratio=0.0) > 1e-2 * start  # a frozen rank-2 subspace cannot
