"""mkor against a transcription of the official package, its Sherman-Morrison factors
against explicit inverses, its gradient rescaling and fallback, hyperparameter checks
(state_dict, bf16 and convergence: test_zoo_layer_members_common.py)."""

import pytest
import torch
from torch import nn

from metaopt import apply, zoo

from layer_toy import (toy_batches as _batches, toy_groups as _groups,  # noqa: I001
                       toy_loss as _loss, toy_model as _model)

RTOL = 1e-6
# the transcription's hooks are the official code's: full backward hooks on the first layer
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")




class OfficialMKOR:
    """A literal transcription of the official package's ``MKOR`` (Mohammad-Mozaffari/mkor,
    ``mkor/mkor.py`` and ``mkor/utils/factors.py``) on one worker for ``nn.Linear`` layers:
    ``grad_accum_steps=1``, ``grad_scale=1``, ``warmup_steps=0``, ``optimizer='sgd'``, the
    model's dtype where the package uses fp16/float32 storage, and the constants it hard-codes
    (0.95 in ``_invert_factor``, 2 in ``_set_reset_factor_flags``) as arguments. Its reset sets
    a factor to the identity (the package's ``module not in factor_dict`` always holds)."""

    def __init__(self, model, groups, inv_freq, clipping_value, decay=0.95, threshold=2.0):
        self.optimizer = torch.optim.SGD(groups)
        self.inv_freq, self.clipping_value = inv_freq, clipping_value
        self.decay, self.threshold, self.steps = decay, threshold, 0
        self.modules = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.a_reset_factor = {m: True for m in self.modules}
        self.g_reset_factor = {m: True for m in self.modules}
        self.inputs, self.grads, self.AA_inv, self.GG_inv = {}, {}, {}, {}
        for m in self.modules:
            m.register_forward_pre_hook(self._save_input)
            m.register_full_backward_hook(self._save_grad_output)

    def _save_input(self, m, inputs):
        if torch.is_grad_enabled() and self.steps % self.inv_freq == 0:
            a = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            if m.bias is not None:
                a = torch.cat([a, a.new(a.size(0), 1).fill_(1)], 1)
            self.inputs[m] = torch.clamp(a, -self.clipping_value, self.clipping_value)

    def _save_grad_output(self, m, grad_input, grad_output):
        if self.steps % self.inv_freq == 0:
            g = grad_output[0].detach().reshape(-1, grad_output[0].shape[-1])
            g = g.shape[0] * g
            self.grads[m] = torch.clamp(g, -self.clipping_value, self.clipping_value)

    @staticmethod
    def _sm_inverse(prev_inv, rank_1):
        tmp1 = prev_inv @ rank_1
        tmp2 = rank_1.t() @ prev_inv
        return prev_inv - 1 / (1 + tmp2 @ rank_1) * tmp1 @ tmp2

    def _update_inv_factors(self, rank_1_dict, factor_dict, reset_factor_dict):
        for m in self.modules:
            a = torch.mean(rank_1_dict[m], dim=0, keepdim=True)
            eye = torch.eye(a.size(1), dtype=a.dtype)
            if reset_factor_dict[m]:
                factor_dict[m] = eye
                reset_factor_dict[m] = False
            else:
                factor_dict[m] = self._sm_inverse(
                    self.decay * factor_dict[m] + (1 - self.decay) * eye, a.t())
                if torch.max(torch.abs(factor_dict[m].flatten())) > self.threshold:
                    self.a_reset_factor[m] = True
                    self.g_reset_factor[m] = True

    def _natural_grads(self, m):
        grad_mat = m.weight.grad
        if m.bias is not None:
            grad_mat = torch.cat([grad_mat, m.bias.grad.view(-1, 1)], 1)
        v = self.GG_inv[m] @ grad_mat @ self.AA_inv[m]
        if m.bias is None:
            return [v.view(m.weight.shape)]
        return [v[:, :-1].view(m.weight.shape), v[:, -1:].view(m.bias.shape)]

    def _update_grad(self, updates):
        for m in self.modules:
            grad_norm = m.weight.grad.norm(2)
            update_norm = updates[m][0].norm(2)
            if m.bias is not None:
                grad_norm += m.bias.grad.norm(2)
                update_norm += updates[m][1].norm(2)
            norm_fixer = grad_norm / update_norm
            if torch.isnan(norm_fixer):
                continue
            m.weight.grad.copy_(updates[m][0]).mul_(norm_fixer)
            if m.bias is not None:
                m.bias.grad.copy_(updates[m][1]).mul_(norm_fixer)

    @torch.no_grad()
    def step(self):
        if self.steps % self.inv_freq == 0:
            self._update_inv_factors(self.inputs, self.AA_inv, self.a_reset_factor)
            self._update_inv_factors(self.grads, self.GG_inv, self.g_reset_factor)
        self._update_grad({m: self._natural_grads(m) for m in self.modules})
        self.optimizer.step()
        self.steps += 1


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * max(1.0, float(b.abs().max())))


def _is_identity(m):
    return torch.equal(m, torch.eye(m.shape[0], dtype=m.dtype))


@pytest.mark.parametrize("threshold, clip", [(2.0, 100.0), (0.9, 0.5)])
def test_matches_official_mkor_transcription(threshold, clip):
    """Defaults (no reset, no clipping happens), and a low reset threshold with a low clip
    (resets of one factor marking both, clipped rank-1 vectors)."""
    first = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}
    second = {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1}
    ours, ref = _model(), _model()
    stats = zoo.LayerStatistics(ours)
    opt = zoo.create("mkor", _groups(ours, first, second), inv_freq=3, clipping_value=clip,
                     reset_threshold=threshold)
    official = OfficialMKOR(ref, _groups(ref, first, second), 3, clip, threshold=threshold)
    resets = 0
    for t, batch in enumerate(_batches(25), start=1):
        for model in (ours, ref):
            model.zero_grad()
            _loss(model, batch).backward()
        opt.step(layer_stats=stats)
        official.step()
        for p, q in zip(ours.parameters(), ref.parameters()):
            _close(p.detach(), q.detach())
            _close(opt.state[p]["momentum_buffer"], official.optimizer.state[q]["momentum_buffer"])
        for m, n in ((ours[0], ref[0]), (ours[3], ref[3])):
            for p in (m.weight, m.bias) if m.bias is not None else (m.weight,):
                _close(opt.state[p]["a_inv"], official.AA_inv[n])
                _close(opt.state[p]["g_inv"], official.GG_inv[n])
            refreshed = t > 1 and (t - 1) % 3 == 0
            resets += refreshed and _is_identity(opt.state[m.weight]["a_inv"])
        assert "a_inv" not in opt.state[ours[2].s]
    assert (resets > 0) == (threshold < 1)
    assert _loss(ours, next(_batches(1))).isfinite()


def test_inverse_factors_are_the_explicit_inverses():
    """Without resets, ``J_t = inv(inv(gamma J_{t-1} + (1 - gamma) I) + u u^T)`` with ``u`` the
    batch mean of ``a_bar`` (and of ``N g`` for ``J_G``), from ``J_1 = I``."""
    gamma = 0.9
    rule = zoo.rule("mkor", stat_decay=gamma, inv_freq=1)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    states = [rule.init(p)]
    prev = None
    for t in range(1, 7):
        a = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        g = torch.randn(8, 3, generator=gen, dtype=torch.float64) / 8
        _, states = apply(rule, [p], [g.T @ a], states, t, layer_in=[a], layer_grad_out=[g],
                          layer_grad=[g.T @ a])
        now = states[0]
        for key, u in (("a_inv", a.mean(0)), ("g_inv", (8 * g).mean(0))):
            eye = torch.eye(u.numel(), dtype=u.dtype)
            if prev is None:
                assert torch.equal(now[key], eye)
                continue
            factor = torch.linalg.inv(gamma * prev[key] + (1 - gamma) * eye) + torch.outer(u, u)
            _close(now[key], torch.linalg.inv(factor))
        prev = now


def test_step_is_the_preconditioned_gradient_rescaled_to_its_norm():
    """With momentum 0 and lr 1 the step is ``c J_G [dW, db] J_A``, split into weight and bias,
    with ``c`` making ``|step_W| + |step_b| = |dW| + |db|``."""
    rule = zoo.rule("mkor", lr=1.0, momentum=0.0, inv_freq=1)
    gen = torch.Generator().manual_seed(0)
    w, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((3, 4), (3,)))
    states = [rule.init(w), rule.init(b)]
    for t in range(1, 4):
        a_bar = torch.cat([torch.randn(8, 4, generator=gen, dtype=torch.float64),
                           torch.ones(8, 1, dtype=torch.float64)], 1)
        g = torch.randn(8, 3, generator=gen, dtype=torch.float64) / 8
        d = g.T @ a_bar
        ext = {"layer_in": [a_bar] * 2, "layer_grad_out": [g] * 2, "layer_grad": [d] * 2}
        (w2, b2), states = apply(rule, [w, b], [d[:, :4], d[:, 4]], states, t, **ext)
    v = states[0]["g_inv"] @ d @ states[0]["a_inv"]
    step_w, step_b = w - w2, b - b2
    c = (d[:, :4].norm() + d[:, 4].norm()) / (v[:, :4].norm() + v[:, 4].norm())
    torch.testing.assert_close(step_w, c * v[:, :4])
    torch.testing.assert_close(step_b, c * v[:, 4])
    torch.testing.assert_close(step_w.norm() + step_b.norm(), d[:, :4].norm() + d[:, 4].norm())
    assert not _is_identity(states[0]["a_inv"])


def test_without_statistics_it_is_sgd():
    """A tensor no captured layer owns takes the backend step: zoo's ``sgd`` with the same
    lr, momentum, dampening, weight decay and nesterov."""
    hp = {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.2, "nesterov": True}
    rule, sgd = zoo.rule("mkor", **hp), zoo.rule("sgd", **hp)
    p = q = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    s1, s2 = [rule.init(p)], [sgd.init(q)]
    for t in range(1, 6):
        (p,), s1 = apply(rule, [p], [torch.sin(3 * p + t)], s1, t, layer_in=[None],
                         layer_grad_out=[None], layer_grad=[None])
        (q,), s2 = apply(sgd, [q], [torch.sin(3 * q + t)], s2, t)
        assert torch.equal(p, q)
    assert set(s1[0]) == {"momentum_buffer"}


@pytest.mark.parametrize("hp, message", [
    ({"lr": -0.1}, r"^mkor: invalid lr=-0.1: must be >= 0"),
    ({"momentum": 1.5}, r"^mkor: invalid momentum=1.5: must be in \[0, 1\]"),
    ({"stat_decay": -0.5}, r"^mkor: invalid stat_decay=-0.5: must be in \[0, 1\]"),
    ({"clipping_value": 0.0}, r"^mkor: invalid clipping_value=0.0: must be > 0"),
    ({"reset_threshold": 0.0}, r"^mkor: invalid reset_threshold=0.0: must be > 0"),
    ({"inv_freq": 0}, r"^mkor: invalid inv_freq=0: must be an integer >= 1"),
    ({"warmup_steps": -1}, r"^mkor: invalid warmup_steps=-1: must be an integer >= 0"),
    ({"nesterov": True, "momentum": 0.0}, r"^mkor: nesterov=True requires momentum > 0"),
])
def test_bad_hyperparameters_are_one_line_errors(hp, message):
    with pytest.raises(ValueError, match=message):
        zoo.rule("mkor", **hp)
    with pytest.raises(ValueError, match=message):
        zoo.create("mkor", [{"params": [torch.zeros(2, requires_grad=True)], **hp}])


def test_warmup_refreshes_the_factors_every_step():
    rule = zoo.rule("mkor", inv_freq=10, warmup_steps=3)
    assert [sorted(rule.caps.needs(rule.hp, t)) for t in (1, 3, 4, 11)] == [
        ["layer", "layer_grad"], ["layer", "layer_grad"], ["layer_grad"], ["layer", "layer_grad"]]
