"""MuonESGD: torch.optim.Muon's update on the square hidden matrices, ESGD (curvature mean over its updates) on the rest."""

from __future__ import annotations

import copy

import pytest
import torch

from gnerf.fields import CoordinateMLP
from gnerf.optim import ESGDAdamStart, MuonESGD, build_optimizer, take_step
from gnerf.optim.muon import NS_COEFFICIENTS, adjusted_lr, newton_schulz


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
    assert isinstance(opt, MuonESGD) and [g["lr"] for g in opt.param_groups] == [6.67e-5, 0.1]
    with pytest.raises(ValueError, match="ns_dtype"):
        build_optimizer("muon-esgd", _net().parameters(), ns_dtype="float16")
    with pytest.raises(ValueError, match="esgd_lr"):
        build_optimizer("muon-esgd", _net().parameters(), esgd_lr=-1.0)
    with pytest.raises(ValueError, match="2-D"):
        MuonESGD([{"params": list(_net().parameters()), "algorithm": "muon"}])


def _hidden_only(net):
    """Freeze every parameter but the square hidden matrices; return those."""
    for p in net.parameters():
        p.requires_grad_(p.ndim == 2 and p.shape[0] == p.shape[1])
    return [p for p in net.parameters() if p.requires_grad]


@pytest.mark.parametrize("damping", [0.0, 0.5])
@pytest.mark.parametrize("divide", ["before", "after", "rows"])
def test_hidden_curvature_divides_muons_step_by_the_matrices_own_curvature(divide, damping):
    """One step, checked against the update written out from the gradient and the curvature the optimizer kept."""
    net, plain = _net(), _net()
    hidden, hidden_plain = _hidden_only(net), _hidden_only(plain)
    settings = dict(lr=3e-3, ns_dtype="float64", seed=0)
    opt = MuonESGD(net.parameters(), hidden_curvature=divide, curvature_damping=damping, **settings)
    opt_plain = MuonESGD(plain.parameters(), **settings)
    start = [p.detach().clone() for p in hidden]
    _train(net, opt, 1)
    _train(plain, opt_plain, 1)
    beta2, eps, momentum = opt.defaults["betas"][1], opt.defaults["eps"], opt.defaults["momentum"]
    for p, p0, q in zip(hidden, start, hidden_plain):
        state = opt.state[p]
        assert int(state["curvature_updates"]) == 1 and bool((state["curvature"] > 0).any())
        corrected = state["curvature"] / (1 - beta2)  # corrected by its one update
        root = (corrected.mean(dim=1, keepdim=True) if divide == "rows" else corrected).sqrt()
        denom = root + damping * root.mean() + eps
        g = p.grad
        nesterov = g.lerp(g * (1 - momentum), momentum)
        if divide == "before":
            direction = newton_schulz(nesterov / denom, 5, NS_COEFFICIENTS, 1e-7, torch.float64)
        else:
            orthogonal = newton_schulz(nesterov, 5, NS_COEFFICIENTS, 1e-7, torch.float64)
            direction = orthogonal / denom
            direction = direction * orthogonal.norm() / direction.norm()
        expected = p0 - adjusted_lr(3e-3, "match_rms_adamw", p.shape) * direction
        torch.testing.assert_close(p.detach(), expected.to(p.dtype), rtol=1e-5, atol=1e-7)
        assert not torch.allclose(p, q, rtol=0, atol=1e-6)  # it is not Muon's step


def test_hidden_curvature_follows_the_cadence_and_resumes_exactly():
    net = _net()
    opt = MuonESGD(
        net.parameters(), hidden_curvature="after", precondition_warmup_steps=2, precondition_frequency=3, seed=0
    )
    _train(net, opt, 9)  # curvature at steps 0, 1, 4, 7
    hidden = opt.param_groups[0]["params"][0]
    assert int(opt.state[hidden]["curvature_updates"]) == 4 and int(opt.state[hidden]["step"]) == 9
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    _train(net, opt, 5)
    again = _net()
    again.load_state_dict(saved_net)
    opt_again = MuonESGD(
        again.parameters(), hidden_curvature="after", precondition_warmup_steps=2, precondition_frequency=3, seed=0
    )
    opt_again.load_state_dict(saved_opt)
    _train(again, opt_again, 5)
    for p, q in zip(net.parameters(), again.parameters()):
        assert torch.equal(p, q)
    net_off = _net()
    off = MuonESGD(net_off.parameters(), precondition_warmup_steps=2, precondition_frequency=3, seed=0)
    _train(net_off, off, 3)
    assert "curvature" not in off.state[off.param_groups[0]["params"][0]]  # off: Muon keeps no curvature
    with pytest.raises(ValueError, match="hidden_curvature"):
        build_optimizer("muon-esgd", _net().parameters(), hidden_curvature="sideways")
    with pytest.raises(ValueError, match="curvature_damping"):
        build_optimizer("muon-esgd", _net().parameters(), hidden_curvature="after", curvature_damping=-1.0)
