"""Fixtures shared by the zoo's test files."""
import pytest
import torch


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for the test: torch.optim keeps scalar state (step,
    NAdam's mu_product) in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
