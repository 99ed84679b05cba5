"""MuonESGD: torch.optim.Muon's update on the square hidden matrices, ESGD (curvature mean over its updates) on the rest."""

from __future__ import annotations

import pytest
import torch

from gnerf.fields import CoordinateMLP
from gnerf.optim import ESGDAdamStart, MuonESGD, build_optimizer, take_step


def _net(num_layers=4, hidden_dim=12, seed=0):
    torch.manual_seed(seed)
    return CoordinateMLP(
        2, 3, hidden_dim=hidden_dim, num_layers=num_layers, activation="gaussian", activation_kwargs={"sigma": 0.3}
    )


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(48, 2, generator=g) * 2 - 1, torch.rand(48, 3, generator=g)


def _train(net, opt, steps):
    x, y = _data()
    for _ in range(steps):
        opt.zero_grad()
        take_step(opt, lambda create_graph: (net(x) - y).square().mean())


def test_the_split_and_the_groups():
    net = _net()
    opt = MuonESGD(net.parameters(), lr=3e-3, esgd_lr=0.05)
    muon, esgd = opt.param_groups
    assert (muon["algorithm"], muon["lr"], esgd["algorithm"], esgd["lr"]) == ("muon", 3e-3, "esgd", 0.05)
    assert [tuple(p.shape) for p in muon["params"]] == [(12, 12), (12, 12)]
    assert all(p.ndim == 1 or p.shape[0] != p.shape[1] for p in esgd["params"])


def test_without_hidden_matrices_it_is_esgd_averaged_over_its_updates():
    """No square matrix: every parameter takes ESGD's update, as ESGDAdamStart's after a switch at step 0."""
    a, b = _net(num_layers=2), _net(num_layers=2)
    opt_a = MuonESGD(a.parameters(), esgd_lr=0.05, precondition_warmup_steps=3, precondition_frequency=4, seed=5)
    opt_b = ESGDAdamStart(
        b.parameters(), lr=0.05, adam_steps=0, precondition_warmup_steps=3, precondition_frequency=4, seed=5
    )
    assert [g["algorithm"] for g in opt_a.param_groups] == ["esgd"]
    _train(a, opt_a, 12)
    _train(b, opt_b, 12)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_hidden_matrices_take_torch_muons_steps_bit_for_bit():
    """With the other parameters frozen, the hidden matrices follow torch.optim.Muon (bfloat16 Newton-Schulz)."""
    a, b = _net(), _net()
    for net in (a, b):
        for p in net.parameters():
            p.requires_grad_(p.ndim == 2 and p.shape[0] == p.shape[1])
    opt_a = MuonESGD(a.parameters(), lr=3e-3, ns_dtype="bfloat16", weight_decay=0.01)
    assert not opt_a.should_create_graph()  # the ESGD group does not train: no curvature
    hidden = [p for p in b.parameters() if p.requires_grad]
    opt_b = torch.optim.Muon(hidden, lr=3e-3, adjust_lr_fn="match_rms_adamw", weight_decay=0.01)
    _train(a, opt_a, 8)
    _train(b, opt_b, 8)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_curvature_steps_follow_the_esgd_groups_cadence():
    net = _net()
    opt = MuonESGD(net.parameters(), precondition_warmup_steps=2, precondition_frequency=3, seed=0)
    graphs = []
    x, y = _data()
    for _ in range(9):
        opt.zero_grad()
        graphs.append(take_step(opt, lambda create_graph: (net(x) - y).square().mean())[1])
    assert graphs == [True, True, False, False, True, False, False, True, False]  # 0, 1, then 4, 7
    esgd = opt.param_groups[1]["params"][0]
    assert int(opt.state[esgd]["curvature_updates"]) == 4 and int(opt.state[esgd]["step"]) == 9


def test_registered_settings_and_bad_values():
    opt = build_optimizer("muon-esgd", _net().parameters(), seed=0)
    assert isinstance(opt, MuonESGD) and [g["lr"] for g in opt.param_groups] == [2e-4, 0.1]
    with pytest.raises(ValueError, match="ns_dtype"):
        build_optimizer("muon-esgd", _net().parameters(), ns_dtype="float16")
    with pytest.raises(ValueError, match="esgd_lr"):
        build_optimizer("muon-esgd", _net().parameters(), esgd_lr=-1.0)
    with pytest.raises(ValueError, match="2-D"):
        MuonESGD([{"params": list(_net().parameters()), "algorithm": "muon"}])
