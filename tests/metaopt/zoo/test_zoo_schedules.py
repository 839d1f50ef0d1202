"""SGDR against torch.optim.lr_scheduler.CosineAnnealingWarmRestarts and the closed form."""
import math

import pytest
import torch

from metaopt import zoo
from metaopt.zoo.schedules import SGDR, sgdr_lr


@pytest.mark.parametrize("t_0, t_mult, lr_min", [(10, 1, 0.0), (5, 2, 1e-3), (3, 3, 0.01)])
def test_sgdr_matches_torch_scheduler(t_0, t_mult, lr_min):
    p = torch.zeros(2, requires_grad=True)
    ours_opt = zoo.create("adamw", [p], lr=0.1)
    ref_opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    ours = SGDR(ours_opt, t_0=t_0, t_mult=t_mult, lr_min=lr_min)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref_opt, T_0=t_0, T_mult=t_mult,
                                                               eta_min=lr_min)
    for t in range(60):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"],
                                                               rel=1e-12, abs=1e-15), t
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(sgdr_lr(t, 0.1, t_0, t_mult, lr_min))
        ours_opt.step()
        ref_opt.step()
        ours.step()
        ref.step()


def test_sgdr_closed_form_and_restarts():
    # T_0 = 4, T_mult = 2: runs [0, 4), [4, 12), [12, 28)
    assert sgdr_lr(0, 1.0, 4, 2) == 1.0
    assert sgdr_lr(2, 1.0, 4, 2) == pytest.approx(0.5)
    assert sgdr_lr(4, 1.0, 4, 2) == 1.0
    assert sgdr_lr(8, 1.0, 4, 2) == pytest.approx(0.5)
    assert sgdr_lr(10, 1.0, 4, 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 8)))
    assert sgdr_lr(12, 1.0, 4, 2) == 1.0
    assert sgdr_lr(1.5, 1.0, 4, 1, lr_min=0.2) == pytest.approx(
        0.2 + 0.4 * (1 + math.cos(math.pi * 1.5 / 4)))


@pytest.mark.parametrize("kw, match", [({"t_0": 0}, "t_0"), ({"t_0": 2.5}, "t_0"),
                                        ({"t_mult": 0}, "t_mult"), ({"lr_min": -1.0}, "lr_min")])
def test_sgdr_bad_arguments(kw, match):
    args = dict(t_0=10, t_mult=1, lr_min=0.0) | kw
    with pytest.raises(ValueError, match=match):
        sgdr_lr(1, 0.1, **args)
    with pytest.raises(ValueError, match=match):
        SGDR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), **args)
