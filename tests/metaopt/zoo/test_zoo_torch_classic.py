"""adagrad, rmsprop, adadelta, adamax, nadam, radam, adam, adamw and sgd against torch.optim
in float64 (amsgrad against torch: test_zoo_adam.py): 25 steps, 1-D/2-D/4-D tensors, two param
groups with different hyperparameters (weight decay on), parameters and state to 1e-6
relative; amsgrad's and adamw's fused paths against their loops."""
import pytest
import torch

from metaopt.zoo.equivalence import compare_with_reference

O = torch.optim

CASES = {
    "adagrad": (O.Adagrad, [
        {"lr": 0.05, "weight_decay": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
        {"lr": 0.02, "weight_decay": 0.0, "eps": 1e-6, "initial_accumulator_value": 0.1}],
        {"sum": "sum"}),
    "rmsprop": (O.RMSprop, [
        {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "centered": True},
        {"lr": 0.003, "alpha": 0.9, "weight_decay": 0.05}], {"square_avg": "square_avg"}),
    "adadelta": (O.Adadelta, [
        {"lr": 1.0, "weight_decay": 0.1},
        {"lr": 0.5, "rho": 0.8, "eps": 1e-4}], {"square_avg": "square_avg",
                                                "acc_delta": "acc_delta"}),
    "adamax": (O.Adamax, [
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.03, "betas": (0.8, 0.99)}], {"exp_avg": "exp_avg", "exp_inf": "exp_inf"}),
    "nadam": (O.NAdam, [
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.02, "betas": (0.8, 0.99), "weight_decay": 0.05, "decoupled_weight_decay": True,
         "momentum_decay": 0.01}],
        {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "mu_product": "mu_product"}),
    "radam": (O.RAdam, [
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.02, "betas": (0.8, 0.95), "weight_decay": 0.05, "decoupled_weight_decay": True}],
        {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    "adam": (O.Adam, [
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.02, "betas": (0.8, 0.99)}], {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    "adamw": (O.AdamW, [
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.02, "betas": (0.8, 0.99), "weight_decay": 0.3}],
        {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}),
    "sgd": (O.SGD, [
        {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True},
        {"lr": 0.02, "momentum": 0.5, "dampening": 0.1}], {"momentum_buffer": "momentum_buffer"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_optim(name, float64_default):
    cls, groups, state_map = CASES[name]
    # torch.optim.Adagrad reads initial_accumulator_value from its constructor only (a
    # per-group value is ignored); ours honours it per group, so both groups use 0.1 here.
    kw = {"initial_accumulator_value": 0.1} if name == "adagrad" else {}
    compare_with_reference(name, lambda g: cls(g, foreach=False, **kw), groups,
                           state_map=state_map)


def test_rmsprop_centered_state_matches_torch(float64_default):
    groups = [{"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}]
    compare_with_reference("rmsprop", lambda g: O.RMSprop(g, foreach=False), groups,
                           state_map={"square_avg": "square_avg", "grad_avg": "grad_avg",
                                      "momentum_buffer": "momentum_buffer"})


@pytest.mark.parametrize("name", ["amsgrad", "adamw"])
def test_fused_path_equals_loop(name):
    """torch's fused kernel (our fast path) equals the per-tensor rule (float64, CPU)."""
    groups = [{"lr": 0.01, "weight_decay": 0.1}, {"lr": 0.03, "betas": (0.8, 0.99)}]
    from metaopt import zoo
    compare_with_reference(name, lambda g: zoo.create(name, g, impl="loop"), groups,
                           impl="fused", rtol=1e-10)
