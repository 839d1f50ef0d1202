"""learned.pretrained: the shipped μLO runs on any nn.Module in one line, and ships as package
data with its model card."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

import learned

ROOT = Path(__file__).resolve().parents[2]


class _Odd(nn.Module):
    """An architecture the LO never saw: conv, GRU, BatchNorm and a bilinear readout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm1d(8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.out = nn.Bilinear(16, 16, 1)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        h = self.gru(h.transpose(1, 2))[0][:, -1]
        return self.out(h, h)


def _fit(opt_for, steps=60):
    torch.manual_seed(0)
    model = _Odd()
    x = torch.randn(64, 3, 12)
    y = x[:, 0].mean(1, keepdim=True) - x[:, 2, -3:].sum(1, keepdim=True)
    opt = opt_for(model)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, opt


@pytest.mark.parametrize("name", ["mulo_small", "mulo_ortho"])
def test_pretrained_trains_an_arbitrary_module_in_one_line(name):
    losses, opt = _fit(lambda m: learned.pretrained(name, m))
    assert isinstance(opt, learned.LearnedOptimizer)
    assert {g["info"][1] for g in opt.param_groups} >= {"hidden", "output", "vector", "bias"}
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    tiny, _ = _fit(lambda m: learned.pretrained(name, m, lr=1e-3))
    assert tiny[-1] > losses[-1]  # the lr knob scales its steps


def test_mulo_ortho_is_mulo_small_with_orthogonalized_hidden_matrices():
    small, theta = learned.pretrained_lopt("mulo_small")
    ortho, theta_o = learned.pretrained_lopt("mulo_ortho")
    assert ortho.config() == {**small.config(), "orthogonalize": True, "ortho_gain": 3.16}
    assert all(torch.equal(theta[k], theta_o[k]) for k in theta)
    card = learned.model_card("mulo_ortho")
    assert "ortho-validate" in card and "held-out" in card


def test_pretrained_on_parameters_and_its_files():
    model = nn.Linear(4, 2)
    opt = learned.pretrained("mulo_small", model.parameters(), lr=0.5, weight_decay=1e-4)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["info"] is None
    assert "mulo_small" in learned.hub.names()
    card = learned.model_card("mulo_small")
    assert "meta-trained" in card and "held-out" in card
    lopt, theta = learned.pretrained_lopt("mulo_small")
    assert lopt.config()["readout_scale"] and sum(v.numel() for v in theta.values()) < 4096
    with pytest.raises(ValueError, match="no pretrained learned optimizer 'nope'; available: "):
        learned.pretrained("nope", model)


def test_the_shipped_files_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text()
                             )["tool"]["setuptools"]["package-data"]["learned"]
    shipped = [p.relative_to(ROOT / "learned").as_posix()
               for p in (ROOT / "learned" / "pretrained").iterdir()]
    assert shipped and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in shipped)
