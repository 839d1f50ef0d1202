"""tasks.from_module: an nn.Module + data as a functional task. The reference is the nn.Module
itself: the same loss and gradients through autograd, vmap equal to a loop, and training through
metaopt.unroll with a zoo rule equal to training the module with the torch optimizer."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from metaopt import mup, tasks, unroll, zoo
from metaopt.params import infer_param_info


class SmallCNN(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Linear(c * 16, 3)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.out(F.avg_pool2d(h, 2).flatten(1))


class GRUNet(nn.Module):
    def __init__(self, h=6):
        super().__init__()
        self.gru = nn.GRU(3, h, batch_first=True)
        self.out = nn.Linear(h, 2)

    def forward(self, x):
        return self.out(self.gru(x)[0][:, -1])


class AttnNet(nn.Module):
    """Token ids -> embedding -> self-attention -> LayerNorm -> per-token logits."""

    def __init__(self, d=8):
        super().__init__()
        self.emb = nn.Embedding(11, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 11)

    def forward(self, x):
        h = self.emb(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.out(self.norm(h))


def seq_ce(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def data_for(kind, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "cnn":
        return torch.randn(n, 1, 8, 8, generator=g), torch.randint(3, (n,), generator=g)
    if kind == "gru":
        return torch.randn(n, 5, 3, generator=g), torch.randint(2, (n,), generator=g)
    x = torch.randint(11, (n, 6), generator=g)
    return x, torch.roll(x, 1, dims=1)


MODELS = {"cnn": (SmallCNN, F.cross_entropy), "gru": (GRUNet, F.cross_entropy),
          "attn": (AttnNet, seq_ce)}


def make(kind, dtype=torch.float64, **kw):
    model_cls, loss = MODELS[kind]
    return tasks.from_module(model_cls, data_for(kind), loss, batch_size=8,
                             val_data=data_for(kind, 24, seed=1), dtype=dtype, **kw)


def module_with(task, params):
    """A fresh nn.Module holding ``params`` (the reference)."""
    model = MODELS[task_kind(task)][0]().to(torch.float64)
    with torch.no_grad():
        for p, v in zip(model.parameters(), params):
            p.copy_(v)
    return model


def task_kind(task):
    return {SmallCNN: "cnn", GRUNet: "gru", AttnNet: "attn"}[task.model_fn]


@pytest.mark.parametrize("kind", list(MODELS))
def test_loss_and_grad_equal_the_module(kind):
    task = make(kind)
    params = task.init(task.generator(0))
    model = module_with(task, params)
    assert [n for n, _ in model.named_parameters()] == task.names
    x, y = task.sample_batch(task.generator(1))
    ref = MODELS[kind][1](model(x), y)
    ref.backward()
    loss, grads = task.loss(params, (x, y)), torch.func.grad(task.loss)(params, (x, y))
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", list(MODELS))
def test_vmap_over_a_population_equals_a_loop(kind):
    task = make(kind)
    pops = [task.init(task.generator(s)) for s in range(3)]
    stacked = [torch.stack(ts) for ts in zip(*pops)]
    batch = task.sample_batch(task.generator(5))
    losses = torch.func.vmap(task.loss, in_dims=(0, None))(stacked, batch)
    grads = torch.func.vmap(torch.func.grad(task.loss), in_dims=(0, None))(stacked, batch)
    for i, params in enumerate(pops):
        torch.testing.assert_close(losses[i], task.loss(params, batch), rtol=1e-12, atol=0)
        for g, ref in zip(grads, torch.func.grad(task.loss)(params, batch)):
            torch.testing.assert_close(g[i], ref, rtol=1e-9, atol=1e-12)
    assert len({float(l) for l in losses}) == 3  # three different initialisations


@pytest.mark.parametrize("kind,rule,torch_opt", [
    ("cnn", ("adam", {"lr": 1e-2}), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
    ("gru", ("sgd", {"lr": 0.1, "momentum": 0.9}),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)),
    ("attn", ("adamw", {"lr": 3e-3}), lambda ps: torch.optim.AdamW(ps, lr=3e-3)),
])
def test_unroll_with_a_zoo_rule_equals_training_the_module(kind, rule, torch_opt):
    task = make(kind)
    params = task.init(task.generator(0))
    gen = task.generator(7)
    batches = [task.sample_batch(gen) for _ in range(6)]
    final, _, losses = unroll(zoo.rule(rule[0], **rule[1]), task.loss, params, batches)
    model = module_with(task, params)
    opt = torch_opt(model.parameters())
    ref_losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = MODELS[kind][1](model(x), y)
        loss.backward()
        opt.step()
        ref_losses.append(float(loss.detach()))
    torch.testing.assert_close(torch.stack(losses), torch.tensor(ref_losses, dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)
    for p, ref in zip(final, model.parameters()):
        torch.testing.assert_close(p, ref.detach(), rtol=1e-9, atol=1e-11)
    assert not torch.equal(final[0], params[0])  # it trained


def test_evaluate_is_the_mean_loss_and_accuracy_on_val_data():
    task = make("cnn", eval_batch_size=7)  # chunks of 7, 7, 7, 3
    params = task.init(task.generator(0))
    model = module_with(task, params).eval()
    x, y = data_for("cnn", 24, seed=1)
    with torch.no_grad():
        out = model(x.double())
    metrics = task.evaluate(params)
    assert math.isclose(metrics["val_loss"], float(F.cross_entropy(out, y)), rel_tol=1e-12)
    assert metrics["accuracy"] == float((out.argmax(-1) == y).double().mean())


def test_sequence_accuracy_counts_tokens():
    task = make("attn")
    params = task.init(task.generator(0))
    x, y = data_for("attn", 24, seed=1)
    with torch.no_grad():
        out = module_with(task, params).eval()(x)
    assert math.isclose(task.evaluate(params)["accuracy"],
                        float((out.argmax(-1) == y).double().mean()), rel_tol=1e-12)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x)))).squeeze(-1)


def test_batchnorm_uses_batch_statistics_and_updates_nothing():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g), torch.randn(30, generator=g)
    task = tasks.from_module(BNNet, (x, y), F.mse_loss, batch_size=10, dtype=torch.float64)
    params = task.init(task.generator(0))
    ref = BNNet().double()
    with torch.no_grad():
        for p, v in zip(ref.parameters(), params):
            p.copy_(v)
    batch = task.sample_batch(task.generator(1))
    torch.testing.assert_close(task.loss(params, batch), F.mse_loss(ref.train()(batch[0]),
                                                                    batch[1]))
    assert dict(task.module.named_buffers()) == {}
    # evaluation normalises with the evaluated batch's statistics too
    with torch.no_grad():
        want = float(F.mse_loss(ref.train()(x.double()), y.double()))
    assert math.isclose(task.evaluate(params)["val_loss"], want, rel_tol=1e-12)
    stacked = [torch.stack([p, p + 0.1]) for p in params]
    assert torch.func.vmap(task.loss, in_dims=(0, None))(stacked, batch).shape == (2,)


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_tensor_dataset_and_map_style_dataset_give_the_same_task():
    x, y = data_for("cnn")
    a = tasks.from_module(SmallCNN, (x, y), F.cross_entropy, batch_size=5)
    b = tasks.from_module(SmallCNN, TensorDataset(x, y), F.cross_entropy, batch_size=5)
    c = tasks.from_module(SmallCNN, PairDataset(x, y), F.cross_entropy, batch_size=5)
    p = a.init(a.generator(0))
    for t in (b, c):
        for u, v in zip(t.sample_batch(t.generator(3)), a.sample_batch(a.generator(3))):
            assert torch.equal(u, v)
        assert t.evaluate(p) == a.evaluate(p)


def test_single_tensor_data_is_an_autoencoder():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    task = tasks.from_module(lambda: nn.Sequential(nn.Linear(5, 2), nn.Linear(2, 5)), x,
                             F.mse_loss, batch_size=4)
    params = task.init(task.generator(0))
    (batch,) = task.sample_batch(task.generator(1))
    want = F.mse_loss((batch @ params[0].T + params[1]) @ params[2].T + params[3], batch)
    torch.testing.assert_close(task.loss(params, (batch,)), want)
    assert set(task.evaluate(params)) == {"val_loss"}


def test_init_is_the_modules_own_and_reproducible_without_touching_global_rng():
    task = make("gru", dtype=torch.float32)
    state = torch.get_rng_state()
    a, b, c = (task.init(task.generator(s)) for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    bound = 1 / math.sqrt(6)  # nn.GRU's uniform(-1/sqrt(h), 1/sqrt(h))
    assert 0.9 * bound < float(a[0].abs().max()) <= bound


def test_param_info_and_mup_base_shapes():
    task = tasks.from_module(lambda: AttnNet(16), data_for("attn"), seq_ce, batch_size=4,
                             base_fn=lambda: AttnNet(8))
    assert task.param_info == infer_param_info(AttnNet(16), base=AttnNet(8))
    mults = mup.lr_multipliers(task.param_info, "adam", task.base_param_info)
    by_name = dict(zip(task.names, mults))
    assert by_name["attn.in_proj_weight"] == 0.5 and by_name["emb.weight"] == 1.0
    assert tasks.from_module(AttnNet, data_for("attn"), seq_ce,
                             batch_size=4).base_param_info is None


@pytest.mark.parametrize("args,kw,needle", [
    ((SmallCNN, "nope", F.cross_entropy), {"batch_size": 4}, "data must be tensors"),
    ((SmallCNN, (torch.zeros(3, 1, 8, 8), torch.zeros(4)), F.cross_entropy), {"batch_size": 4},
     "share a non-empty first dimension"),
    ((lambda: 3, data_for("cnn"), F.cross_entropy), {"batch_size": 4}, "not an nn.Module"),
    ((SmallCNN, data_for("cnn"), F.cross_entropy), {"batch_size": 0}, "batch_size"),
    ((SmallCNN, PairDataset([], []), F.cross_entropy), {"batch_size": 2}, "empty"),
])
def test_bad_input_is_a_one_line_value_error(args, kw, needle):
    with pytest.raises(ValueError) as e:
        tasks.from_module(*args, **kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("cls,kw", [
    (nn.GRU, dict(num_layers=2, batch_first=True)),
    (nn.GRU, dict(bidirectional=True, bias=False)),
    (nn.LSTM, dict(num_layers=2, proj_size=3)),
    (nn.LSTM, dict(bidirectional=True, batch_first=True)),
    (nn.RNN, dict(nonlinearity="relu", num_layers=2)),
    (nn.RNN, dict()),
])
@pytest.mark.parametrize("unbatched", [False, True])
def test_functional_recurrent_layers_equal_torch(cls, kw, unbatched):
    from metaopt.tasks.rnn_functional import make_vmappable

    torch.manual_seed(0)
    ref = cls(4, 5, **kw).double()
    ours = make_vmappable(cls(4, 5, **kw).double())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(*(() if unbatched else (2,)), 3, 4, dtype=torch.float64)
    if not unbatched and not kw.get("batch_first"):
        x = x.transpose(0, 1)
    for a, b in zip(torch.utils._pytree.tree_leaves(ref(x)),
                    torch.utils._pytree.tree_leaves(ours(x))):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
