"""The reference harness itself: it must notice a wrong parameter or a wrong state."""
import pytest
import torch

from metaopt.zoo.equivalence import compare_with_reference, make_problem


def test_harness_detects_a_parameter_difference():
    ref = lambda g: torch.optim.Adam(g, foreach=False)  # noqa: E731
    with pytest.raises(AssertionError, match=r"adam step 1 param 0"):
        compare_with_reference("adam", ref, [{"lr": 0.01}], ref_groups=[{"lr": 0.0101}])


def test_harness_detects_a_state_difference():
    ref = lambda g: torch.optim.Adam(g, foreach=False)  # noqa: E731
    # our exp_avg against torch's exp_avg_sq: parameters agree, the state does not
    with pytest.raises(AssertionError, match=r"state exp_avg"):
        compare_with_reference("adam", ref, [{"lr": 0.01}], state_map={"exp_avg": "exp_avg_sq"})


def test_problem_gradients_feed_back():
    """The loss couples every coordinate to its own value (not constant gradients), so a
    wrong step changes later gradients."""
    inits, loss = make_problem(n_groups=1)
    p = [t.clone().requires_grad_() for t in inits[0]]
    g1 = torch.autograd.grad(loss(p), p)
    q = [t.detach() + 0.1 for t in p]
    q = [t.requires_grad_() for t in q]
    g2 = torch.autograd.grad(loss(q), q)
    assert all(not torch.allclose(a, b) for a, b in zip(g1, g2))
