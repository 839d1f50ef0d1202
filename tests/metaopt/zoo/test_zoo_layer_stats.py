"""LayerStatistics: the recorded layer inputs and output gradients equal what autograd gives,
the per-tensor extras follow ownership, members that need them fail in one line without them,
and ``metaopt bench`` leaves them out of ``--optimizer all``."""
import pytest
import torch
from torch import nn

from metaopt import cli, zoo

LAYERED = ["adafisher", "mkor"]


def _extras(stats, params):
    return stats.extras(params, {"layer", "layer_grad"})


def _with_output_grad(layer, x):
    """``layer(x)`` with ``retain_grad`` on its output, backpropagated from a fixed loss."""
    out = layer(x)
    out.retain_grad()
    (out.sin() * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).mean().backward()
    return out


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5)])
def test_linear_rows_equal_input_and_output_gradient(shape):
    torch.manual_seed(0)
    layer = nn.Linear(5, 4).double()
    stats = zoo.LayerStatistics(layer)
    x = torch.randn(shape, dtype=torch.float64)
    out = _with_output_grad(layer, x)
    ext = _extras(stats, [layer.weight, layer.bias])
    rows = x.reshape(-1, 5)
    for i in range(2):  # the weight and the bias see the same layer
        torch.testing.assert_close(ext["layer_in"][i],
                                   torch.cat([rows, torch.ones(len(rows), 1, dtype=x.dtype)], 1))
        torch.testing.assert_close(ext["layer_grad_out"][i], out.grad.reshape(-1, 4))
        torch.testing.assert_close(ext["layer_grad"][i],
                                   torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1))


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, bias=False)])
def test_conv2d_rows_reproduce_the_output_and_the_weight_gradient(kw):
    """Unfolded input rows times ``[W, b]`` give the convolution's output; ``g^T a_bar`` is
    autograd's ``[dW, db]``; ``g`` is the output's gradient, pixel by pixel."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, **kw).double()
    stats = zoo.LayerStatistics(conv)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    out = _with_output_grad(conv, x)
    (a,), (g,), (dw,) = (_extras(stats, [conv.weight])[k]
                         for k in ("layer_in", "layer_grad_out", "layer_grad"))
    w_bar = conv.weight.detach().reshape(4, -1)
    if conv.bias is not None:
        w_bar = torch.cat([w_bar, conv.bias.detach()[:, None]], 1)
    torch.testing.assert_close(a @ w_bar.T, out.detach().movedim(1, -1).reshape(-1, 4))
    torch.testing.assert_close(g, out.grad.movedim(1, -1).reshape(-1, 4))
    torch.testing.assert_close(g.T @ a, dw)


def test_conv_patches_equal_unfold():
    from metaopt.zoo.layer_stats import conv_patches
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    for kw in (dict(stride=(2, 1), padding=(1, 2)), dict(dilation=(2, 3), padding=1)):
        conv = nn.Conv2d(3, 4, (3, 2), **kw)
        unfolded = nn.functional.unfold(x, conv.kernel_size, conv.dilation, conv.padding,
                                        conv.stride)
        assert torch.equal(conv_patches(conv, x), unfolded.transpose(1, 2).reshape(-1, 18))


def test_parameters_without_a_captured_layer_get_none():
    shared = nn.Linear(3, 3)
    tied = nn.Linear(3, 3)
    tied.weight = shared.weight
    model = nn.Sequential(shared, nn.LayerNorm(3), tied, nn.Conv2d(3, 3, 1, groups=3))
    stats = zoo.LayerStatistics(model)
    model[:3](torch.randn(4, 3)).sum().backward()
    ext = _extras(stats, [shared.weight, shared.bias, model[1].weight, model[3].weight])
    assert ext["layer_in"][0] is None and ext["layer_grad"][0] is None  # shared by two layers
    assert ext["layer_in"][1].shape == (4, 4)
    assert all(v[2] is None and v[3] is None for v in ext.values())


def test_a_new_forward_after_backward_starts_a_new_record_and_calls_pair_up():
    layer = nn.Linear(2, 3).double()
    stats = zoo.LayerStatistics(layer)
    x1, x2 = torch.randn(4, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        layer(x2)  # not recorded
    layer(x1).sum().backward()
    assert stats.rows(layer)[0].shape == (4, 3)
    layer.zero_grad()
    (layer(x1).pow(2).sum() + layer(x2).sin().sum()).backward()  # two calls in one pass
    a, g = stats.rows(layer)
    assert a.shape == (9, 3)
    torch.testing.assert_close(g.T @ a, torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1))
    stats.remove()
    layer(x2).sum().backward()
    assert stats.rows(layer)[0].shape == (9, 3)  # hooks removed: nothing new recorded


@pytest.mark.parametrize("name", LAYERED)
def test_missing_layer_statistics_is_a_one_line_error(name):
    model = nn.Linear(2, 1)
    opt = zoo.create(name, model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    with pytest.raises(RuntimeError, match=rf"^{name} needs per-layer statistics: create stats = "
                                           r"metaopt.zoo.LayerStatistics\(model\) before the "
                                           r"forward pass and call step\(layer_stats=stats\)$"):
        opt.step()
    assert zoo.needs_layer_statistics(zoo.rule(name))
    assert not zoo.needs_layer_statistics(zoo.rule("adam"))


def test_bench_leaves_layered_members_out_of_all_and_rejects_them_by_name(capsys):
    names = cli.bench_optimizers("all", zoo)
    assert "adamw" in names and not set(LAYERED) & set(names)
    assert "skipping adafisher, mkor: per-layer statistics of an nn.Module" in capsys.readouterr().err
    assert cli.main(["bench", "--task", "quadratic", "--optimizer", "sgd,mkor"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mkor cannot be benchmarked" in err


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, stride=2),
                         nn.Flatten(), nn.Linear(2 * 3 * 3, 1)).double()


def _train_conv_net(name, hp, steps):
    model = _conv_net()
    stats = zoo.LayerStatistics(model)
    opt = zoo.create(name, model.parameters(), **hp)
    x = torch.randn(32, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x[:, :, 2:6, 2:6].mean((1, 2, 3))[:, None]
    losses = []
    for _ in range(steps):
        model.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step(layer_stats=stats)
        losses.append(loss.item())
    return model, opt, losses


CONV_HP = [("adafisher", {"lr": 1e-3, "stat_period": 5}), ("mkor", {"lr": 0.05, "inv_freq": 5})]


@pytest.mark.parametrize("name, hp", CONV_HP)
def test_members_precondition_convolutions(name, hp):
    model, opt, losses = _train_conv_net(name, hp, 6)
    keys = ("h_diag", "s_diag") if name == "adafisher" else ("a_inv", "g_inv")
    for layer, width in ((model[0], 1 * 9 + 1), (model[2], 4 * 9 + 1)):
        for p in (layer.weight, layer.bias):
            assert opt.state[p][keys[0]].shape[0] == width
    assert all(torch.isfinite(p).all() for p in model.parameters()) and losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, hp", CONV_HP)
def test_members_train_a_small_convolutional_net(name, hp):
    _, _, losses = _train_conv_net(name, hp, 100)
    assert losses[-1] < 0.3 * losses[0]
