"""Checks shared by the zoo members that need per-layer statistics (``adafisher``, ``mkor``) on
the toy module of ``tests/support/layer_toy.py``: an exact state_dict round trip, bf16
parameters with float32 statistics, and training a small MLP to a tenth of its start loss."""
import copy

import pytest
import torch

from metaopt import zoo

from layer_toy import toy_batches, toy_loss, toy_model  # noqa: I001

# name: (hyperparameters for the round trip: the contract sample of its registry entry, for
# training, the momentum key, statistics keys)
MEMBERS = {
    "adafisher": (zoo.entry("adafisher").sample, {}, "exp_avg", ("h_diag", "s_diag")),
    "mkor": (zoo.entry("mkor").sample, {"lr": 0.05}, "momentum_buffer", ("a_inv", "g_inv")),
}
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def _train(model, opt, stats, batches):
    for batch in batches:
        model.zero_grad()
        toy_loss(model, batch).backward()
        opt.step(layer_stats=stats)


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_state_dict_round_trip_is_exact(name):
    hp = MEMBERS[name][0]
    a = toy_model()
    opt_a = zoo.create(name, a.parameters(), **hp)
    stats_a = zoo.LayerStatistics(a)
    batches = list(toy_batches(8))
    _train(a, opt_a, stats_a, batches[:4])
    b = copy.deepcopy(a)
    opt_b = zoo.create(name, b.parameters(), **hp)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    stats_b = zoo.LayerStatistics(b)
    _train(a, opt_a, stats_a, batches[4:])
    _train(b, opt_b, stats_b, batches[4:])
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_bf16_parameters_stay_bf16_with_float32_statistics(name):
    hp = {k: v for k, v in MEMBERS[name][0].items() if k in ("weight_decay",)}
    period = {"adafisher": {"stat_period": 2}, "mkor": {"inv_freq": 2}}[name]
    model = toy_model(torch.bfloat16)
    stats = zoo.LayerStatistics(model)
    opt = zoo.create(name, model.parameters(), **hp, **period)
    _train(model, opt, stats, toy_batches(3, dtype=torch.bfloat16))
    _, _, momentum, stat_keys = MEMBERS[name]
    for p in model.parameters():
        assert p.dtype == torch.bfloat16 and torch.isfinite(p).all()
        assert opt.state[p][momentum].dtype == torch.bfloat16
        for k in stat_keys:
            assert k not in opt.state[p] or opt.state[p][k].dtype == torch.float32
    assert any(k in opt.state[p] for p in model.parameters() for k in stat_keys)


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_trains_a_small_mlp(name):
    model = toy_model()
    stats = zoo.LayerStatistics(model)
    opt = zoo.create(name, model.parameters(), **MEMBERS[name][1])
    batches = list(toy_batches(300, n=32))
    start = toy_loss(model, batches[0]).item()
    _train(model, opt, stats, batches)
    assert toy_loss(model, batches[0]).item() < 0.1 * start
