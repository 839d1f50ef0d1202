"""A toy ``nn.Module`` regression problem shared by the tests of the zoo members that need
per-layer statistics (``adafisher``, ``mkor``): a Linear-Tanh-Scale-Linear net whose ``Scale``
parameter no captured layer owns, a tanh teacher, mean squared error and two param groups."""
import torch
from torch import nn

class Scale(nn.Module):
    """An elementwise learnable scale: a parameter that no captured layer owns."""

    def __init__(self, n):
        super().__init__()
        self.s = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return x * self.s


def toy_model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), Scale(10),
                         nn.Linear(10, 3, bias=False)).to(dtype)


def toy_batches(steps, n=16, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    for _ in range(steps):
        x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
        yield x.to(dtype), torch.tanh(x @ teacher).to(dtype)


def toy_loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def toy_groups(model, first, second):
    return [{"params": [model[0].weight, model[0].bias, model[2].s], **first},
            {"params": [model[3].weight], **second}]
