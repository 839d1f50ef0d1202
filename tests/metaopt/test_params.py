"""infer_param_info: roles and fans of any nn.Module, checked against the hand-written
param_info of the built-in tasks (same architectures built as nn.Modules) and against the
shapes of torch's layers."""
import pytest
import torch
from torch import nn

from metaopt import mup, tasks
from metaopt.params import ParamInfo, infer_param_info


def roles_fans(infos):
    return [(p.role, p.fan_in, p.fan_out) for p in infos]


def mlp(width, depth=2):
    layers = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn(channels):
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)),
                         nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16 * channels, 10))


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.w1, self.w2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class CharLMModule(nn.Module):
    """charlm's parameters in the same order (forward not needed for the shapes)."""

    def __init__(self, d, depth=2, context=64):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(256, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d)
        self.out = nn.Linear(d, 256)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mlp_matches_mlp_digits(depth):
    task = tasks.get("mlp_digits", width=96, depth=depth, base_width=32, param="mup")
    assert roles_fans(infer_param_info(mlp(96, depth))) == roles_fans(task.param_info)
    assert roles_fans(infer_param_info(mlp(96, depth), base=mlp(32, depth))) == \
        roles_fans(task.param_info)
    # the μP multipliers follow: base fans come from the base model
    base = infer_param_info(mlp(32, depth), base=mlp(96, depth))
    ours = infer_param_info(mlp(96, depth), base=mlp(32, depth))
    assert mup.lr_multipliers(ours, "sgd", base) == \
        mup.lr_multipliers(task.param_info, "sgd", task.base_param_info)


def test_cnn_matches_cnn_digits():
    task = tasks.get("cnn_digits", channels=12)
    assert roles_fans(infer_param_info(cnn(12))) == roles_fans(task.param_info)
    assert roles_fans(infer_param_info(cnn(12), base=cnn(4))) == roles_fans(task.param_info)
    x = torch.randn(2, 64)
    assert cnn(12)(x).shape == (2, 10)  # the module really is that architecture


def test_transformer_matches_charlm():
    task = tasks.get("charlm", width=64, depth=2, heads=4, base_width=32, corpus_bytes=10_000)
    assert roles_fans(infer_param_info(CharLMModule(64), base=CharLMModule(32))) == \
        roles_fans(task.param_info)
    assert roles_fans(infer_param_info(CharLMModule(64))) == roles_fans(task.param_info)


def test_names_follow_named_parameters():
    model = mlp(16)
    assert [p.name for p in infer_param_info(model)] == [n for n, _ in model.named_parameters()]
    assert all(isinstance(p, ParamInfo) for p in infer_param_info(model))
    assert tasks.ParamInfo is ParamInfo  # re-exported where it used to live


class Attn(nn.Module):
    def __init__(self, d, kv=None, bias_kv=False):
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.attn = nn.MultiheadAttention(d, 2, kdim=kv, vdim=kv, add_bias_kv=bias_kv,
                                          batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 5)


def test_attention_with_base():
    info = {p.name: p for p in infer_param_info(Attn(32), base=Attn(8))}
    assert (info["emb.weight"].role, info["emb.weight"].fan_in, info["emb.weight"].fan_out) == \
        ("input", 50, 32)
    assert (info["attn.in_proj_weight"].role, info["attn.in_proj_weight"].fan_in,
            info["attn.in_proj_weight"].fan_out) == ("hidden", 32, 96)
    assert info["attn.in_proj_bias"] == ParamInfo("attn.in_proj_bias", "bias", 1, 96)
    assert (info["attn.out_proj.weight"].role, info["attn.out_proj.weight"].fan_in) == ("hidden", 32)
    assert info["norm.weight"] == ParamInfo("norm.weight", "vector", 1, 32)
    assert info["norm.bias"].role == "bias"
    assert (info["head.weight"].role, info["head.weight"].fan_in,
            info["head.weight"].fan_out) == ("output", 32, 5)


def test_attention_separate_projections_and_bias_kv():
    info = {p.name: p for p in infer_param_info(Attn(32, kv=12, bias_kv=True))}
    assert (info["attn.q_proj_weight"].role, info["attn.q_proj_weight"].fan_in) == ("hidden", 32)
    assert (info["attn.k_proj_weight"].fan_in, info["attn.k_proj_weight"].fan_out) == (12, 32)
    assert info["attn.bias_k"] == ParamInfo("attn.bias_k", "bias", 1, 32)
    assert info["emb.weight"].role == "input"  # an embedding is the input, not the first matrix
    assert info["head.weight"].role == "output"


class Recurrent(nn.Module):
    def __init__(self, h, cell=nn.GRU, **kw):
        super().__init__()
        self.rnn = cell(8, h, num_layers=2, batch_first=True, **kw)
        self.out = nn.Linear(kw.get("proj_size") or h, 3)


def test_gru_roles_and_fans():
    info = {p.name: p for p in infer_param_info(Recurrent(20), base=Recurrent(10))}
    assert info["rnn.weight_ih_l0"] == ParamInfo("rnn.weight_ih_l0", "input", 8, 60)
    assert info["rnn.weight_hh_l0"] == ParamInfo("rnn.weight_hh_l0", "hidden", 20, 60)
    assert info["rnn.weight_ih_l1"] == ParamInfo("rnn.weight_ih_l1", "hidden", 20, 60)
    assert info["rnn.bias_hh_l1"] == ParamInfo("rnn.bias_hh_l1", "bias", 1, 60)
    assert info["out.weight"] == ParamInfo("out.weight", "output", 20, 3)
    assert roles_fans(infer_param_info(Recurrent(20))) == \
        roles_fans(infer_param_info(Recurrent(20), base=Recurrent(10)))


def test_lstm_projection():
    info = {p.name: p for p in infer_param_info(Recurrent(20, nn.LSTM, proj_size=6))}
    assert info["rnn.weight_hr_l0"] == ParamInfo("rnn.weight_hr_l0", "hidden", 20, 6)
    assert info["rnn.weight_hh_l0"] == ParamInfo("rnn.weight_hh_l0", "hidden", 6, 80)


def test_conv1d_batchnorm_transpose_and_scalar_readout():
    model = nn.Sequential(nn.Conv1d(3, 16, 5, groups=1), nn.BatchNorm1d(16),
                          nn.ConvTranspose1d(16, 8, 4, groups=2), nn.Flatten(),
                          nn.Linear(8, 1))
    info = infer_param_info(model)
    assert roles_fans(info) == [("input", 15, 16), ("bias", 1, 16), ("vector", 1, 16),
                                ("bias", 1, 16), ("hidden", 64, 4), ("bias", 1, 8),
                                ("output", 8, 1), ("bias", 1, 1)]


def test_grouped_conv_fan_in():
    info = infer_param_info(nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 1)))
    assert (info[0].fan_in, info[0].fan_out) == (2 * 9, 8)


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="torch without nn.RMSNorm")
def test_rmsnorm_gain_is_vector():
    info = infer_param_info(nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Linear(6, 2)))
    assert info[2] == ParamInfo("1.weight", "vector", 1, 6)


def test_fixed_size_matrix_keeps_heuristic_role():
    def model(w):
        return nn.Sequential(nn.Linear(5, 5), nn.Linear(5, w), nn.Linear(w, w), nn.Linear(w, 2))

    roles = [p.role for p in infer_param_info(model(16), base=model(4)) if p.role != "bias"]
    assert roles == ["input", "input", "hidden", "output"]


def test_base_must_match():
    with pytest.raises(ValueError, match="base model's parameters differ"):
        infer_param_info(mlp(16, 2), base=mlp(8, 3))
    with pytest.raises(ValueError, match="dimensions"):
        a, b = nn.Module(), nn.Module()
        a.w, b.w = nn.Parameter(torch.zeros(3, 3)), nn.Parameter(torch.zeros(3))
        infer_param_info(a, base=b)
