"""Online Subspace Descent: GaLore's low-rank Adam with the projection learned by online PCA.

Liang, Liu, Chen, Liu, "Memory-Efficient LLM Training with Online Subspace Descent"
(NeurIPS 2024, arXiv 2408.12857); official code github.com/kyleliang919/Online-Subspace-Descent
(``galore_torch/galore_projector.py``, ``proj_type="continuous"``, and ``galore_torch/adamw.py``).

For a matrix ``W`` (m x n) with gradient ``G``, let ``G'`` be ``G`` when ``m < n`` and ``G^T``
otherwise (as GaLore's ``"std"`` projection, the smaller side is projected), ``s`` its row count
and ``P`` an ``s x r`` basis (``r = min(rank, s)``). Step ``t``:

    g_t    = P_t^T G'_t                                       (r x max(m, n))
    m_t    = b1 m_{t-1} + (1 - b1) g_t,   v_t = b2 v_{t-1} + (1 - b2) g_t^2
    D_t    = sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)
    W_t    = W_{t-1} - lr (scale * P_t D_t + wd W_{t-1})      (P_t D_t transposed back)

and the projection takes one AdamW step on the online-PCA loss of the normalised gradient,
``Gn = G'_t / ||G'_t||``,

    L_t(P)  = ||P P^T Gn - Gn||^2 + ortho_reg ||P^T P - I||^2
    grad    = 2 (R A^T + Gn R^T P) + 4 ortho_reg P (P^T P - I),   A = P^T Gn,  R = P A - Gn
    P_{t+1} = P_t - eta_P (AdamW_dir(grad) + proj_weight_decay P_t),   eta_P = proj_lr_ratio lr

where ``AdamW_dir`` is torch.optim.AdamW's bias-corrected ``m_hat / (sqrt(v_hat) + 1e-8)`` with
betas (0.9, 0.999) (the official optimizer on ``P``, with torch's defaults). ``P_1`` holds the
top-``r`` singular vectors of the first gradient (left ones of ``G``, or right ones when
``m >= n``); as in the official code the first PCA step comes at step 2 and the
projection's Adam counts its own steps (``t - 1``). The gradient of ``L`` is written in closed
form (the official code differentiates ``L`` with autograd). Tensors that are not matrices
(biases, 4-D convolution kernels) take the same Adam step unprojected (as pytorch_optimizer's
GaLore, which projects only 2-D tensors): ``W_t = W_{t-1} - lr (D_t + wd W_{t-1})``.

Defaults are the official code's: lr 1e-3, betas (0.9, 0.999), eps 1e-6 (with the eps placement
of its Hugging Face AdamW, above), weight_decay 0, rank 128, scale 1. The official step size on
``P`` is ``(lr / initial lr) / update_proj_gap`` (``update_proj_gap`` 200 in its projector);
here it is ``proj_lr_ratio * lr``, the paper's ``eta_P = alpha eta_W`` form, which scales with
an LR schedule the same way; the default ``proj_lr_ratio`` 5 gives the official ``1 / 200`` at
lr 1e-3. ``proj_weight_decay`` 0.01 is torch.optim.AdamW's default decay that the official
code leaves on ``P`` (the paper suggests equal decays on ``W`` and ``P``); ``ortho_reg`` is the
paper's regulariser, 0 in the official code.

Departures: weight decay uses ``W_{t-1}`` as in the paper's update and torch's AdamW (the
official code decays the already-updated weight); the singular vectors of a float64 gradient
are computed in float64 (the official code always uses float32); a zero gradient gives a zero
PCA loss instead of a division by zero. ``rank = s`` makes ``P_1`` square and orthogonal, a
zero of the PCA gradient: with ``P`` kept there the method is Adam on the rotated weight
``P_1^T W``. (In floating point the rounding-level PCA gradient is amplified by ``P``'s Adam
normalisation as soon as it exceeds ``1e-8``, so a full-rank ``P`` wanders at the scale of its
step size unless ``proj_lr_ratio = 0``.)

State (created on a matrix's first update): ``proj`` (s x r), ``exp_avg``/``exp_avg_sq``
(r x max(m, n), the low-rank moments), ``proj_exp_avg``/``proj_exp_avg_sq`` (the moments of
``P``'s AdamW), in the parameter's dtype, or float32 for a bf16/fp16 matrix (whose step is
computed in float32 and rounded once: in float16 the projection's update overflows).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..capabilities import Capabilities
from ..rule import UpdateRule
from ..helpers import compute_dtype
from ._sqrt import sqrt0
from .adam import adam_direction
from .checks import check_betas, check_int, check_min
from .registry import member_rule, register

# torch.optim.AdamW's defaults: the official optimizer on the projection
PROJ_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}


def projects_right(shape: torch.Size) -> bool:
    """GaLore's ``"std"`` rule: an ``m x n`` matrix with ``m >= n`` is projected on the right."""
    return shape[0] >= shape[1]


def small_side_first(g: Tensor) -> Tensor:
    """``G'``: the matrix oriented so that the projected (smaller) side is its rows."""
    return g.T if projects_right(g.shape) else g


def initial_projection(g: Tensor, rank: int) -> Tensor:
    """``P_1``: the top-``rank`` singular vectors of ``g`` on its projected side, as columns of
    an ``s x r`` matrix (the SVD in float32 for half-precision ``g``)."""
    work = g if g.dtype in (torch.float32, torch.float64) else g.float()
    u, _, vh = torch.linalg.svd(work, full_matrices=False)
    basis = vh[:rank].T if projects_right(g.shape) else u[:, :rank]
    return basis.to(g.dtype)


def normalized(g: Tensor) -> Tensor:
    """``g / ||g||_F`` (zero for a zero ``g``)."""
    return g / torch.linalg.vector_norm(g).clamp_min(torch.finfo(g.dtype).tiny)


def pca_loss(proj: Tensor, g: Tensor, ortho_reg) -> Tensor:
    """``||P P^T Gn - Gn||^2 + ortho_reg ||P^T P - I||^2`` for ``Gn = g / ||g||`` (``g``
    oriented as ``G'``)."""
    gn = normalized(g)
    residual = proj @ (proj.T @ gn) - gn
    gram_error = proj.T @ proj - torch.eye(proj.shape[1], dtype=proj.dtype, device=proj.device)
    return (residual * residual).sum() + ortho_reg * (gram_error * gram_error).sum()


def pca_loss_grad(proj: Tensor, g: Tensor, ortho_reg) -> Tensor:
    """The gradient of :func:`pca_loss` in ``P``:
    ``2 (R A^T + Gn R^T P) + 4 ortho_reg P (P^T P - I)`` with ``A = P^T Gn``, ``R = P A - Gn``."""
    gn = normalized(g)
    a = proj.T @ gn
    residual = proj @ a - gn
    grad = 2 * (residual @ a.T + gn @ (residual.T @ proj))
    if isinstance(ortho_reg, Tensor) or ortho_reg != 0:
        eye = torch.eye(proj.shape[1], dtype=proj.dtype, device=proj.device)
        grad = grad + 4 * ortho_reg * (proj @ (proj.T @ proj - eye))
    return grad


def hf_adam_direction(g: Tensor, m: Tensor, v: Tensor, hp, step) -> tuple[Tensor, Tensor, Tensor]:
    """The official (Hugging Face AdamW) direction
    ``sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` and the new moments."""
    b1, b2 = hp["betas"]
    m = torch.lerp(m, g, 1 - b1)
    v = b2 * v + (1 - b2) * g * g
    step_scale = (1 - b2**step) ** 0.5 / (1 - b1**step)
    return step_scale * m / (sqrt0(v) + hp["eps"]), m, v


def _init(p):
    if p.dim() == 2:  # the projection comes from the first gradient
        return {}
    return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


def _first_matrix_state(g: Tensor, rank: int) -> dict:
    proj = initial_projection(g, rank)
    low_shape = (proj.shape[1], max(g.shape))
    zeros = lambda shape: torch.zeros(shape, dtype=g.dtype, device=g.device)
    return {"proj": proj, "exp_avg": zeros(low_shape), "exp_avg_sq": zeros(low_shape),
            "proj_exp_avg": zeros(proj.shape), "proj_exp_avg_sq": zeros(proj.shape)}


def _dense_update(g, p, state, hp, step):
    d, m, v = hf_adam_direction(g, state["exp_avg"], state["exp_avg_sq"], hp, step)
    return hp["lr"] * (d + hp["weight_decay"] * p), {"exp_avg": m, "exp_avg_sq": v}


def _pca_step(proj: Tensor, g: Tensor, state: dict, hp, step) -> dict:
    """One AdamW step of the projection on the online-PCA loss of ``g`` (step ``t >= 2``)."""
    grad = pca_loss_grad(proj, g, hp["ortho_reg"])
    moments = {"exp_avg": state["proj_exp_avg"], "exp_avg_sq": state["proj_exp_avg_sq"]}
    d, new = adam_direction(grad, moments, PROJ_ADAM, step - 1)
    eta = hp["proj_lr_ratio"] * hp["lr"]
    return {"proj": proj - eta * (d + hp["proj_weight_decay"] * proj),
            "proj_exp_avg": new["exp_avg"], "proj_exp_avg_sq": new["exp_avg_sq"]}


def _update(g, p, state, hp, step):
    if p.dim() != 2:
        return _dense_update(g, p, state, hp, step)
    work = compute_dtype(p.dtype)  # bf16/fp16 matrices: projection and moments in float32
    delta, state = _matrix_update(g.to(work), p.to(work), state, hp, step)
    return delta.to(p.dtype), state


def _matrix_update(g, p, state, hp, step):
    first = not state
    state = _first_matrix_state(g, hp["rank"]) if first else dict(state)
    gs, proj = small_side_first(g), state["proj"]
    d, m, v = hf_adam_direction(proj.T @ gs, state["exp_avg"], state["exp_avg_sq"], hp, step)
    back = proj @ d
    back = back.T if projects_right(g.shape) else back
    delta = hp["lr"] * (hp["scale"] * back + hp["weight_decay"] * p)
    state.update(exp_avg=m, exp_avg_sq=v)
    if not first:
        state.update(_pca_step(proj, gs, state, hp, step))
    return delta, state


def _check(hp):
    check_min(hp, "lr")
    check_betas(hp, 2)
    for key in ("eps", "weight_decay", "scale", "proj_lr_ratio", "proj_weight_decay",
                "ortho_reg"):
        check_min(hp, key)
    check_int(hp, "rank", 1)


@register("online_subspace_descent", sample={"weight_decay": 0.05})
def online_subspace_descent() -> UpdateRule:
    return member_rule(
        _init, _update,
        hp={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.0, "rank": 128,
            "scale": 1.0, "proj_lr_ratio": 5.0, "proj_weight_decay": 0.01, "ortho_reg": 0.0},
        check=_check, caps=Capabilities(elementwise=False),
    )
