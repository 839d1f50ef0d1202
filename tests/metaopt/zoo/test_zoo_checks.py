"""The zoo's shared hyperparameter checks: the boundaries of each allowed range, the one-line
message that names the parameter, its value and the range, and who names the member (the
rule's ``validate`` for a :class:`HyperparameterError`, ``name=`` outside a rule)."""
import math

import pytest
import torch

from metaopt.rule import HyperparameterError
from metaopt.zoo.checks import check_betas, check_choice, check_int, check_min, check_unit


@pytest.mark.parametrize("value,strict,ok", [(0.0, False, True), (-1e-12, False, False),
                                             (0.0, True, False), (1e-12, True, True),
                                             (math.nan, False, False)])
def test_check_min_boundary(value, strict, ok):
    if ok:
        check_min({"lr": value}, "lr", strict=strict)
        return
    op = ">" if strict else ">="
    with pytest.raises(HyperparameterError, match=rf"^invalid lr={value}: must be {op} 0.0$"):
        check_min({"lr": value}, "lr", strict=strict)


def test_name_prefixes_a_plain_value_error():
    with pytest.raises(ValueError, match=r"^sgdr: invalid lr_min=-1.0: must be >= 0.0$") as e:
        check_min({"lr_min": -1.0}, "lr_min", name="sgdr")
    assert not isinstance(e.value, HyperparameterError)


def test_tensors_that_require_grad_are_not_checked():
    check_min({"lr": torch.tensor(-1.0, requires_grad=True)}, "lr")
    with pytest.raises(HyperparameterError, match="invalid lr=-1.0"):
        check_min({"lr": torch.tensor(-1.0)}, "lr")


@pytest.mark.parametrize("value,closed,ok", [(0.0, False, True), (0.999, False, True),
                                             (1.0, False, False), (1.0, True, True),
                                             (-0.1, True, False)])
def test_check_unit_boundary(value, closed, ok):
    if ok:
        check_unit({"beta": value}, "beta", closed=closed)
        return
    rng = r"\[0, 1\]" if closed else r"\[0, 1\)"
    with pytest.raises(HyperparameterError, match=rf"^invalid beta={value}: must be in {rng}$"):
        check_unit({"beta": value}, "beta", closed=closed)


def test_check_betas_names_the_bad_entry_and_the_arity():
    check_betas({"betas": (0.9, 0.999)})
    with pytest.raises(HyperparameterError, match=r"^invalid betas\[1\]=1.0: must be in"):
        check_betas({"betas": (0.9, 1.0)})
    with pytest.raises(HyperparameterError, match=r"must be a tuple of 3 numbers"):
        check_betas({"betas": (0.9, 0.99)}, n=3)


@pytest.mark.parametrize("value,ok", [(1, True), (0, False), (True, False), (2.0, False)])
def test_check_int_wants_an_integer_not_a_bool(value, ok):
    if ok:
        check_int({"k": value}, "k", low=1)
        return
    with pytest.raises(HyperparameterError, match=rf"^invalid k={value!r}: must be an integer"):
        check_int({"k": value}, "k", low=1)


def test_check_choice_lists_the_choices():
    check_choice({"kind": "svd"}, "kind", ("svd", "random"))
    with pytest.raises(HyperparameterError,
                       match=r"^invalid kind='qr': must be one of \('svd', 'random'\)$"):
        check_choice({"kind": "qr"}, "kind", ("svd", "random"))
