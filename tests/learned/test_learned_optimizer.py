"""LearnedOptimizer as a torch optimizer, and theta files: safe, checked, round-tripping."""
from __future__ import annotations

import copy
import io
import json
import pickle

import pytest
import torch
from torch import nn

import learned
from learned import LearnedOptimizer, MLPLOpt, adam_like_theta, load_theta, save_theta
from learned.unroll import lopt_step
from metaopt import tasks
from metaopt.params import infer_param_info


def _task():
    return tasks.get("mlp_digits", width=16, depth=2, param="mup", base_width=16, batch_size=32)


def _params(task):
    return [p.clone().requires_grad_(True) for p in task.init(task.generator(0))]


def _steps(task, params, opt, gen, n):
    for _ in range(n):
        opt.zero_grad()
        task.loss(params, task.sample_batch(gen)).backward()
        opt.step()


def test_optimizer_equals_the_functional_lo_steps():
    task, lopt = _task(), MLPLOpt(step_mult=0.01, base_fan_in=4)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    params = _params(task)
    opt = LearnedOptimizer(params, lopt, theta, infos=task.param_info)
    _steps(task, params, opt, task.generator(1), 3)

    ref = [p.detach().clone() for p in task.init(task.generator(0))]
    states = [lopt.init(p, i) for p, i in zip(ref, task.param_info)]
    gen = task.generator(1)
    for t in range(1, 4):
        grads = torch.func.grad(task.loss)(ref, task.sample_batch(gen))
        ref, states = lopt_step(lopt, theta, ref, grads, states, t, task.param_info)
    for a, b in zip(params, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-7)


def test_state_dict_resume_is_exact_and_loads_weights_only():
    task, lopt = _task(), MLPLOpt(step_mult=0.01)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    params = _params(task)
    opt = LearnedOptimizer(params, lopt, theta, infos=task.param_info)
    gen = task.generator(1)
    _steps(task, params, opt, gen, 2)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict(),
                "gen": gen.get_state()}, buf)
    _steps(task, params, opt, gen, 2)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    params2 = [p.clone().requires_grad_(True) for p in saved["params"]]
    opt2 = LearnedOptimizer(params2, lopt, theta, infos=task.param_info)
    opt2.load_state_dict(saved["opt"])
    gen2 = torch.Generator().manual_seed(0)
    gen2.set_state(saved["gen"])
    _steps(task, params2, opt2, gen2, 2)
    assert all(torch.equal(a, b) for a, b in zip(params, params2))


def test_wrong_shaped_theta_is_a_clear_error():
    task = _task()
    theta = MLPLOpt(hidden=32).init_theta()
    with pytest.raises(ValueError, match=r"theta\['w0'\] has shape \(17, 32\), expected \(17, 16\)"):
        LearnedOptimizer(_params(task), MLPLOpt(hidden=16), theta)
    with pytest.raises(ValueError, match="missing"):
        LearnedOptimizer(_params(task), MLPLOpt(layers=3), theta)
    with pytest.raises(ValueError, match="infos"):
        LearnedOptimizer(_params(task), MLPLOpt(), theta, infos=task.param_info[:2])


def test_theta_file_round_trip_and_checks(tmp_path):
    lopt = MLPLOpt(hidden=8)
    theta = lopt.init_theta(torch.Generator().manual_seed(3))
    path = tmp_path / "theta.safetensors"
    save_theta(path, theta, lopt)
    back = load_theta(path, MLPLOpt(hidden=8))
    assert all(torch.equal(theta[k], back[k]) for k in theta)
    with pytest.raises(ValueError, match="hidden=8"):
        load_theta(path, MLPLOpt(hidden=16))
    with pytest.raises(ValueError, match="mlp_lopt"):
        load_theta(path, MLPLOpt(hidden=8, mup=False))
    with pytest.raises(ValueError, match="step_mult"):
        load_theta(path, MLPLOpt(hidden=8, step_mult=0.01))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors theta file"):
        load_theta(junk, lopt)
    with pytest.raises(ValueError, match="no theta file"):
        load_theta(tmp_path / "missing.safetensors", lopt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.safetensors", "theta.safetensors"]


# ---------------------------------------------------------------- nn.Modules, lr, precision
class _SeqModel(nn.Module):
    """Embedding, attention, LayerNorm, Conv1d and a Linear readout over byte sequences."""

    def __init__(self, d=16, vocab=40):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        # no attention biases: the key bias's true gradient is 0 (softmax is shift-invariant),
        # so Adam would step along rounding noise there, differently in any two runs
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True, bias=False)
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.emb(x)
        h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
        h = torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        return self.head(h)


#: the roles and fan-ins of _SeqModel's parameters, by hand (embedding rows are inputs; the
#: attention projections and the conv are hidden: fan_in = in_features x kernel; the readout
#: is the output; 1-d tensors are biases and gains)
_SEQ_ROLES = {"emb.weight": ("input", 40), "attn.in_proj_weight": ("hidden", 16),
              "attn.out_proj.weight": ("hidden", 16), "norm.weight": ("vector", 1),
              "norm.bias": ("bias", 1), "conv.weight": ("hidden", 48), "conv.bias": ("bias", 1),
              "head.weight": ("output", 16), "head.bias": ("bias", 1)}


def _mlp_module():
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 3))


def _seq_loss(model, gen):
    x = torch.randint(0, 40, (4, 12), generator=gen)
    return nn.functional.cross_entropy(model(x).reshape(-1, 40), x.roll(1, 1).reshape(-1))


def _mlp_loss(model, gen):
    x = torch.randn(16, 8, generator=gen)
    return nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def _adam_lo(base_fan_in=8, lr0=0.01, readout_scale=False):
    """An LO that is exactly Adam(lr0) with μLO's per-layer scale (adam_like_theta, noise 0)."""
    lopt = MLPLOpt(hidden=4, step_mult=0.01, adam_feature=True, base_fan_in=base_fan_in,
                   readout_scale=readout_scale)
    return lopt, adam_like_theta(lopt, lr0, noise=0.0)


def _train_module(model, opt, loss_fn, steps, scheduler=None):
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model, gen).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("readout_scale", [False, True])
def test_from_module_gives_each_parameter_its_mulo_scale_from_inferred_roles(readout_scale):
    """Embedding, attention, LayerNorm, Conv1d and Linear tensors get μLO's step scale
    (base_fan_in / fan_in for hidden weights, 1 otherwise) from their inferred roles: with an
    Adam-exact theta the LO equals torch's Adam with those per-tensor learning rates (taken
    from the hand-written table above); ``readout_scale`` scales the readout like them."""
    torch.manual_seed(0)
    model = _SeqModel()
    ref = copy.deepcopy(model)
    lopt, theta = _adam_lo(base_fan_in=8, lr0=0.01, readout_scale=readout_scale)
    scaled = ("hidden", "output") if readout_scale else ("hidden",)
    opt = LearnedOptimizer.from_module(model, lopt, theta)
    infos = {g["info"][0]: g["info"] for g in opt.param_groups}
    assert {k: (v[1], v[2]) for k, v in infos.items()} == _SEQ_ROLES
    groups = [{"params": [p], "lr": 0.01 * (8 / _SEQ_ROLES[n][1] if _SEQ_ROLES[n][0] in scaled
                                            else 1.0)} for n, p in ref.named_parameters()]
    ours = _train_module(model, opt, _seq_loss, 4)
    theirs = _train_module(ref, torch.optim.Adam(groups), _seq_loss, 4)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert learned.infer_param_info is infer_param_info


def test_from_module_with_a_base_model_finds_the_width_dimensions():
    wide = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 3))
    lopt, theta = _adam_lo()
    opt = LearnedOptimizer.from_module(wide, lopt, theta, base=_mlp_module())
    assert [g["info"][1] for g in opt.param_groups] == \
        ["input", "bias", "hidden", "bias", "output", "bias"]


def test_named_parameters_step_like_plain_parameters_and_keep_their_names():
    torch.manual_seed(0)
    a, b = _mlp_module(), _mlp_module()
    b.load_state_dict(a.state_dict())
    lopt = MLPLOpt(hidden=8, step_mult=0.01)
    theta = lopt.init_theta(torch.Generator().manual_seed(1))
    named = LearnedOptimizer(a.named_parameters(), lopt, theta)
    plain = LearnedOptimizer(b.parameters(), lopt, theta)
    for x, y in zip(_train_module(a, named, _mlp_loss, 3), _train_module(b, plain, _mlp_loss, 3)):
        assert torch.equal(x, y)
    assert named.state_dict()["param_groups"][0]["param_names"] == [n for n, _ in
                                                                    a.named_parameters()]


def test_a_tensor_or_module_as_params_is_a_type_error_as_in_torch():
    lopt, theta = _adam_lo()
    with pytest.raises(TypeError, match="iterable of Tensors"):
        LearnedOptimizer(torch.zeros(3, requires_grad=True), lopt, theta)
    with pytest.raises(TypeError, match="from_module"):
        LearnedOptimizer(_mlp_module(), lopt, theta)
    with pytest.raises(ValueError, match="empty parameter list"):
        LearnedOptimizer([], lopt, theta)


def test_lr_multiplier_with_a_scheduler_and_weight_decay_match_torch_adamw():
    """An Adam-exact LO at lr multiplier c with StepLR and decoupled weight decay wd takes the
    steps of torch's AdamW(lr = c lr0, weight_decay = wd / lr0) under the same schedule:
    p <- p - c (lr0 adam + wd p)."""
    torch.manual_seed(0)
    model = _mlp_module()
    ref = copy.deepcopy(model)
    lopt, theta = _adam_lo(lr0=0.01)
    c, wd = 0.5, 1e-3
    opt = LearnedOptimizer(model.parameters(), lopt, theta, lr=c, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    torch_opt = torch.optim.AdamW(ref.parameters(), lr=c * 0.01, weight_decay=wd / 0.01)
    torch_sched = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=2, gamma=0.1)
    ours = _train_module(model, opt, _mlp_loss, 5, sched)
    theirs = _train_module(ref, torch_opt, _mlp_loss, 5, torch_sched)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert opt.param_groups[0]["lr"] == pytest.approx(c * 0.01)


@pytest.mark.parametrize("kw,match", [({"lr": -1.0}, "lr"), ({"weight_decay": float("nan")},
                                                              "weight_decay")])
def test_bad_lr_or_weight_decay_is_a_one_line_error(kw, match):
    lopt, theta = _adam_lo()
    with pytest.raises(ValueError, match=match):
        LearnedOptimizer(_mlp_module().parameters(), lopt, theta, **kw)


def _lo_steps(params, lopt, theta, grads):
    opt = LearnedOptimizer(params, lopt, theta)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.to(p.dtype)
        opt.step()
    return opt


def test_bf16_takes_the_fp32_steps_within_bf16_rounding():
    """Same start and gradients (bf16-representable): bf16 parameters end within a few bf16
    rounding units of the fp32 run, which moved them by far more (the old bf16 LO took zero
    steps); the state is float32."""
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    start = [(0.1 * torch.randn(6, 5, generator=gen)).bfloat16(),
             (0.1 * torch.randn(5, generator=gen)).bfloat16()]
    grads = [[torch.randn(p.shape, generator=gen).bfloat16().float() for p in start]
             for _ in range(5)]
    p16 = [p.clone().requires_grad_(True) for p in start]
    p32 = [p.float().requires_grad_(True) for p in start]
    opt16 = _lo_steps(p16, lopt, theta, grads)
    _lo_steps(p32, lopt, theta, grads)
    for a, b, s in zip(p16, p32, start):
        moved = (b - s.float()).abs().max()
        ulp = b.abs().max() * 2.0 ** -8
        assert moved > 20 * ulp
        assert (a.float() - b).abs().max() <= 5 * ulp
    assert all(v.dtype == torch.float32 for v in opt16.state[p16[0]].values())


def test_fp16_step_one_is_finite_with_small_gradients():
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    start = torch.linspace(-0.01, 0.01, 12).reshape(4, 3).half()
    p = start.clone().requires_grad_(True)
    _lo_steps([p], lopt, theta, [[torch.full((4, 3), 1e-4)]])
    assert torch.isfinite(p).all() and not torch.equal(p.detach(), start)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_lopt_and_theta_and_step_alike(how):
    torch.manual_seed(0)
    model = _mlp_module()
    lopt = MLPLOpt(hidden=8, step_mult=0.01)
    opt = LearnedOptimizer(model.parameters(), lopt, lopt.init_theta(), lr=0.7)
    _train_module(model, opt, _mlp_loss, 2)
    both = copy.deepcopy({"model": model, "opt": opt}) if how == "deepcopy" else \
        pickle.loads(pickle.dumps({"model": model, "opt": opt}))
    twin, twin_opt = both["model"], both["opt"]
    assert twin_opt.lopt.config() == lopt.config()
    assert all(torch.equal(twin_opt.theta[k], opt.theta[k]) for k in opt.theta)
    for a, b in zip(_train_module(model, opt, _mlp_loss, 2),
                    _train_module(twin, twin_opt, _mlp_loss, 2)):
        assert torch.equal(a, b)


def test_one_line_load_rebuilds_the_optimizer(tmp_path):
    torch.manual_seed(0)
    model = _SeqModel()
    twin = copy.deepcopy(model)
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True, adam_scale=True, taus=(1, 10))
    opt = LearnedOptimizer.from_module(model, lopt, lopt.init_theta(), lr=0.5)
    opt.save(tmp_path / "lo.safetensors")
    loaded = learned.load(tmp_path / "lo.safetensors", twin, lr=0.5)
    assert type(loaded.lopt) is MLPLOpt and loaded.lopt.config() == lopt.config()
    for a, b in zip(_train_module(model, opt, _seq_loss, 3),
                    _train_module(twin, loaded, _seq_loss, 3)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- hostile theta files
def _write(path, tensors, meta):
    from safetensors.torch import save_file
    save_file(tensors, str(path), metadata=meta)


@pytest.fixture
def good_theta():
    lopt = MLPLOpt(hidden=4)
    return lopt, lopt.init_theta(torch.Generator().manual_seed(0))


@pytest.mark.parametrize("config", ["null", "[1, 2]", '"hidden"', "7", "{", "[" * 5000,
                                    '{"a": ' * 3000 + "1" + "}" * 3000,
                                    '{"hidden": {"a": 1}}', '{"exp_mult": NaN}'])
def test_malformed_config_metadata_is_a_one_line_error_naming_the_file(tmp_path, good_theta,
                                                                       config):
    lopt, theta = good_theta
    path = tmp_path / "bad.safetensors"
    _write(path, theta, {"lopt": lopt.name, "class": "MLPLOpt", "config": config})
    for load in (lambda: load_theta(path, lopt), lambda: learned.load_lopt(path)):
        with pytest.raises(ValueError, match="bad.safetensors.*config") as err:
            load()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad,match", [(lambda t: t.long(), "dtype"),
                                       (lambda t: t.fill_(float("nan")), "non-finite"),
                                       (lambda t: t.fill_(float("inf")), "non-finite")])
def test_non_float_or_non_finite_theta_is_refused(tmp_path, good_theta, bad, match):
    lopt, theta = good_theta
    theta = dict(theta, b0=bad(theta["b0"].clone()))
    path = tmp_path / "bad.safetensors"
    _write(path, theta, {"lopt": lopt.name, "config": "{}"})
    with pytest.raises(ValueError, match=f"bad.safetensors.*{match}"):
        load_theta(path, lopt)


def test_unknown_lo_class_is_refused(tmp_path, good_theta):
    lopt, theta = good_theta
    path = tmp_path / "x.safetensors"
    _write(path, theta, {"lopt": lopt.name, "class": "os.system", "config": "{}"})
    with pytest.raises(ValueError, match="names LO class 'os.system'; loadable: MLPLOpt"):
        learned.load_lopt(path)


@pytest.mark.parametrize("orthogonalize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_step_with_lr_weight_decay_and_low_precision_equals_the_loop(dtype, orthogonalize):
    """with_lr's wrapper of the fused MLPLOpt step (run eagerly here) takes the loop's steps,
    also with the hidden matrix's step orthogonalized (computed on a float32 copy)."""
    from learned.base import _fused_with_lr
    from learned.fused_mlp import fused_rule_step
    lopt = MLPLOpt(hidden=8, step_mult=0.01, adam_feature=True, adam_scale=True,
                   orthogonalize=orthogonalize)
    theta = lopt.init_theta(torch.Generator().manual_seed(0))
    rule = lopt.rule(theta)
    fused = _fused_with_lr(fused_rule_step(lopt, theta, compile=False))
    gen = torch.Generator().manual_seed(1)
    p0 = (0.1 * torch.randn(6, 5, generator=gen)).to(dtype)
    hp = {"info": ("w", "hidden", 5, 6), "lr": 0.5, "weight_decay": 1e-2}
    p_loop, p_fused = p0.clone(), p0.clone()
    s_loop, s_fused = rule.init(p0), rule.init(p0)
    for t in range(1, 4):
        g = torch.randn(6, 5, generator=gen).to(dtype)
        delta, s_loop = rule.update(g, p_loop, s_loop, hp, t)
        p_loop = p_loop - delta
        fused([p_fused], [g], [s_fused], hp, [t])
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    if orthogonalize and dtype == torch.float32:  # the fused step recovers D as a difference of
        tol["atol"] = 1e-6  # parameters (their rounding), which Newton-Schulz carries on
    torch.testing.assert_close(p_fused, p_loop, **tol)
    for k in s_loop:
        torch.testing.assert_close(s_fused[k], s_loop[k], rtol=1e-5, atol=1e-7)


def test_a_theta_file_without_its_class_loads_by_the_lo_name(tmp_path, good_theta):
    lopt, theta = good_theta
    path = tmp_path / "old.safetensors"
    _write(path, theta, {"lopt": lopt.name, "config": json.dumps(lopt.config())})
    loaded, back = learned.load_lopt(path)
    assert loaded.config() == lopt.config()
    assert all(torch.equal(back[k], theta[k]) for k in theta)
