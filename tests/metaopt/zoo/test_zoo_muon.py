"""Muon (Jordan et al. 2024, Newton-Schulz orthogonalised momentum) against torch.optim.Muon
in float64, and its refusal of non-matrix parameters."""
import pytest
import torch
from zoo_support import assert_close_rel, smooth_loss

from metaopt import zoo


def test_muon_matches_torch_muon_and_flattens_4d_kernels():
    """torch.optim.Muon (KellerJordan's NS5 in bfloat16, lr scaled by max(1, rows/cols)^1/2,
    decoupled decay) on a wide, a tall and a 4-D parameter; torch takes matrices only, so it
    gets the 4-D kernel as its (out, in*kh*kw) reshape under the same loss."""
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 6), (6, 3), (3, 2, 2, 2)]
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    targets = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    ours = [p.clone().requires_grad_() for p in init]
    ref = [p.clone().reshape(p.shape[0], -1).requires_grad_() for p in init]
    hp = dict(lr=0.02, momentum=0.9, weight_decay=0.1)
    opt = zoo.create("muon", [{"params": ours[:2]}, {"params": ours[2:], "lr": 0.01}], **hp)
    ref_opt = torch.optim.Muon([{"params": ref[:2]}, {"params": ref[2:], "lr": 0.01}], **hp)
    for t in range(1, 22):
        for ps, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            smooth_loss([p.reshape(s) for p, s in zip(ps, shapes)], targets, t).backward()
            o.step()
    for a, b in zip(ours, ref):
        assert_close_rel(a.detach().reshape(b.shape), b.detach())
        buf = opt.state[a]["momentum_buffer"]
        assert_close_rel(buf.reshape(b.shape), ref_opt.state[b]["momentum_buffer"])
    assert not torch.equal(ours[0].detach(), init[0])


def test_muon_rejects_vectors():
    x = torch.nn.Parameter(torch.ones(3))
    opt = zoo.create("muon", [x])
    x.sum().backward()
    with pytest.raises(ValueError, match=r"^muon: a parameter of shape \(3,\) is not a matrix; "):
        opt.step()
