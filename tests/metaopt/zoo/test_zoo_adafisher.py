"""adafisher (AdaFisher / AdaFisherW) against a transcription of the official code, its
diagonal Fisher against an explicitly built Kronecker product, its fallback and hyperparameter
checks (state_dict, bf16 and convergence: test_zoo_layer_members_common.py)."""
import math

import pytest
import torch
from torch import nn

from metaopt import apply, zoo

from layer_toy import (toy_batches as _batches, toy_groups as _groups,  # noqa: I001
                       toy_loss as _loss, toy_model as _model)

RTOL = 1e-6
# the transcription's hooks are the official code's: full backward hooks on the first layer
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")




class OfficialAdaFisher:
    """A literal transcription of AtlasAnalyticsLab/AdaFisher ``optimizers/AdaFisher.py``
    (classes AdaFisher and AdaFisherW) for ``nn.Linear`` layers: hooks on every layer refresh the
    diagonals ``H_D``, ``S_D`` every ``TCov`` steps (``MinMaxNormalization`` then
    ``update_running_avg``), ``F = kron(H_D, S_D)^T + Lambda`` split into weight and bias, other
    parameters ``F = 1``; the per-parameter step is ``_step``. The official step pairs
    parameters with layers by position in one param group; this one by ownership, per group."""

    def __init__(self, model, groups, gamma, Lambda, TCov, decoupled):
        self.groups, self.gamma, self.Lambda, self.TCov = groups, gamma, Lambda, TCov
        self.decoupled, self.steps = decoupled, 0
        self.H_D, self.S_D, self.state = {}, {}, {}
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for m in self.layers:
            m.register_forward_hook(self._save_input)
            m.register_full_backward_hook(self._save_grad_output)

    @staticmethod
    def _minmax(t):
        t = t.clone()
        t[t == math.inf] = 1.0
        t[t == -math.inf] = 0.0
        return (t - t.min()) / (t.max() - t.min() + 1e-6)

    def _running_avg(self, new, current):
        current *= self.gamma * 1e-1
        current += (self.gamma * 1e-2) * new

    def _save_input(self, m, inputs, output):
        if torch.is_grad_enabled() and self.steps % self.TCov == 0:
            h = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            if m.bias is not None:
                h = torch.cat([h, h.new_ones(h.shape[0], 1)], 1)
            h_d = torch.einsum("ij,ij->j", h, h) / h.shape[0]
            if self.steps == 0:
                self.H_D[m] = torch.ones_like(h_d)
            self._running_avg(self._minmax(h_d), self.H_D[m])

    def _save_grad_output(self, m, grad_input, grad_output):
        if self.steps % self.TCov == 0:
            s = grad_output[0].detach().reshape(-1, grad_output[0].shape[-1])
            s_d = torch.einsum("ij,ij->j", s, s) / s.shape[0]
            if self.steps == 0:
                self.S_D[m] = torch.ones_like(s_d)
            self._running_avg(self._minmax(s_d), self.S_D[m])

    def _fisher(self, m):
        f = torch.kron(self.H_D[m].unsqueeze(1), self.S_D[m].unsqueeze(0)).t() + self.Lambda
        if m.bias is None:
            return {m.weight: f.reshape(m.weight.shape)}
        return {m.weight: f[:, :-1].reshape(m.weight.shape), m.bias: f[:, -1:].reshape(-1)}

    @torch.no_grad()
    def _step(self, group, p, f):
        if p not in self.state:
            self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p)}
        state = self.state[p]
        beta, lr, wd = group["beta"], group["lr"], group["weight_decay"]
        state["step"] += 1
        bias_correction = 1 - beta ** state["step"]
        grad = p.grad
        if not self.decoupled and wd != 0:
            grad = grad.add(p, alpha=wd)
        state["exp_avg"].mul_(beta).add_(grad, alpha=1 - beta)
        if self.decoupled:
            p.data -= lr * (state["exp_avg"] / bias_correction / f + wd * p.data)
        else:
            p.addcdiv_(state["exp_avg"], f, value=-lr / bias_correction)

    def step(self):
        fishers = {}
        for m in self.layers:
            fishers.update(self._fisher(m))
        for group in self.groups:
            for p in group["params"]:
                self._step(group, p, fishers.get(p, torch.ones_like(p)))
        self.steps += 1


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("decoupled", [False, True])
def test_matches_official_adafisher_transcription(decoupled):
    first = {"lr": 3e-4, "weight_decay": 0.02}
    second = {"lr": 1e-4, "weight_decay": 0.1, "beta": 0.8}
    shared = {"gamma": 0.8, "damping": 1e-3, "stat_period": 4}
    ours, ref = _model(), _model()
    stats = zoo.LayerStatistics(ours)
    opt = zoo.create("adafisher", _groups(ours, first, second), decoupled_weight_decay=decoupled,
                     **shared)
    ref_groups = [{"beta": 0.9, **g} for g in _groups(ref, first, second)]
    official = OfficialAdaFisher(ref, ref_groups, 0.8, 1e-3, 4, decoupled)
    for batch in _batches(25):
        for model in (ours, ref):
            model.zero_grad()
            _loss(model, batch).backward()
        opt.step(layer_stats=stats)
        official.step()
        for p, q in zip(ours.parameters(), ref.parameters()):
            _close(p.detach(), q.detach())
            _close(opt.state[p]["exp_avg"], official.state[q]["exp_avg"])
        for m, n in ((ours[0], ref[0]), (ours[3], ref[3])):
            for p in (m.weight, m.bias) if m.bias is not None else (m.weight,):
                _close(opt.state[p]["h_diag"], official.H_D[n])
                _close(opt.state[p]["s_diag"], official.S_D[n])
        assert "h_diag" not in opt.state[ours[2].s]
    assert not torch.equal(ours[0].weight, _model()[0].weight)
    assert _loss(ours, next(_batches(1))).isfinite()


def test_diagonal_fisher_is_the_diagonal_of_the_kronecker_product():
    """Step 1 from zero state moves by ``lr g / F``: ``F - damping`` is the diagonal of
    ``S' (x) H'`` with ``H' = 0.1 gamma + 0.01 gamma minmax(diag A)`` (likewise ``S'``) and
    ``A = a_bar^T a_bar / N``, ``G = g^T g / N`` built in full from autograd's ``a``, ``g``."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    stats = zoo.LayerStatistics(layer)
    opt = zoo.create("adafisher", layer.parameters(), lr=1e-2, gamma=0.5, damping=1e-3)
    out = layer(x)
    out.retain_grad()
    out.pow(3).mean().backward()
    before = [p.detach().clone() for p in layer.parameters()]
    opt.step(layer_stats=stats)
    a_bar = torch.cat([x, torch.ones(5, 1, dtype=x.dtype)], 1)
    big_a, big_g = a_bar.T @ a_bar / 5, out.grad.T @ out.grad / 5

    def factor(m):
        d = torch.diagonal(m)
        return 0.05 + 0.005 * (d - d.min()) / (d.max() - d.min() + 1e-6)

    kron = torch.kron(torch.diag(factor(big_g)), torch.diag(factor(big_a)))  # vec(W) row-major
    fisher = torch.diagonal(kron).reshape(2, 4) + 1e-3
    for p, p0, f in zip(layer.parameters(), before, (fisher[:, :3], fisher[:, 3])):
        _close(p0 - p.detach(), 1e-2 * p.grad / f)


def test_without_statistics_it_is_bias_corrected_momentum():
    """A tensor no captured layer owns (``layer_in`` None) steps ``lr m_t / (1 - beta^t)``,
    with coupled or decoupled weight decay."""
    for decoupled in (False, True):
        rule = zoo.rule("adafisher", lr=0.1, weight_decay=0.3, decoupled_weight_decay=decoupled)
        p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        states, m = [rule.init(p)], torch.zeros_like(p)
        for t in range(1, 6):
            g = torch.sin(3 * p + t)
            (q,), states = apply(rule, [p], [g], states, t, layer_in=[None],
                                 layer_grad_out=[None])
            m = 0.9 * m + 0.1 * (g if decoupled else g + 0.3 * p)
            expected = p - 0.1 * m / (1 - 0.9 ** t) - (0.1 * 0.3 * p if decoupled else 0)
            _close(q, expected)
            p = q
        assert set(states[0]) == {"exp_avg"}


def test_minmax_reads_infinities_as_the_official_code_does():
    from metaopt.zoo.adafisher import minmax
    x = torch.tensor([math.inf, 0.0, 0.5, -math.inf], dtype=torch.float64)
    _close(minmax(x), torch.tensor([1.0, 0.0, 0.5, 0.0], dtype=torch.float64) / (1 + 1e-6))


@pytest.mark.parametrize("hp, message", [
    ({"lr": -0.1}, r"^adafisher: invalid lr=-0.1: must be >= 0"),
    ({"beta": 1.5}, r"^adafisher: invalid beta=1.5: must be in \[0, 1\)"),
    ({"gamma": 1.0}, r"^adafisher: invalid gamma=1.0: must be in \[0, 1\)"),
    ({"damping": 0.0}, r"^adafisher: invalid damping=0.0: must be > 0"),
    ({"weight_decay": -1.0}, r"^adafisher: invalid weight_decay=-1.0: must be >= 0"),
    ({"stat_period": 0}, r"^adafisher: invalid stat_period=0: must be an integer >= 1"),
    ({"decoupled_weight_decay": "yes"}, r"^adafisher: invalid decoupled_weight_decay='yes'"),
])
def test_bad_hyperparameters_are_one_line_errors(hp, message):
    with pytest.raises(ValueError, match=message):
        zoo.rule("adafisher", **hp)
    with pytest.raises(ValueError, match=message):
        zoo.create("adafisher", [{"params": [torch.zeros(2, requires_grad=True)], **hp}])
