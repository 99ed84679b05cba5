"""PSGDKronESGD: heavyball's PSGD-Kron on the square hidden matrices, ESGD (curvature mean over its updates) on the rest."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from gnerf.fields import CoordinateMLP
from gnerf.optim import ESGDAdamStart, PSGDKronESGD, build_optimizer, take_step
from gnerf.optim.contenders import psgd_kron


def _net(num_layers=4, hidden_dim=12, seed=0):
    torch.manual_seed(seed)
    return CoordinateMLP(
        2, 3, hidden_dim=hidden_dim, num_layers=num_layers, activation="gaussian", activation_kwargs={"sigma": 0.3}
    )


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(48, 2, generator=g) * 2 - 1, torch.rand(48, 3, generator=g)


def _train(net, opt, steps, scheduler=None):
    x, y = _data()
    for _ in range(steps):
        opt.zero_grad()
        take_step(opt, lambda create_graph: (net(x) - y).square().mean())
        if scheduler is not None:
            scheduler.step()


def test_the_split_and_the_groups():
    opt = PSGDKronESGD(_net().parameters(), lr=3e-3, esgd_lr=0.05)
    kron, esgd = opt.param_groups
    assert (kron["algorithm"], kron["lr"], esgd["algorithm"], esgd["lr"]) == ("psgd-kron", 3e-3, "esgd", 0.05)
    assert [tuple(p.shape) for p in kron["params"]] == [(12, 12), (12, 12)]
    assert all(p.ndim == 1 or p.shape[0] != p.shape[1] for p in esgd["params"])


def test_without_hidden_matrices_it_is_esgd_averaged_over_its_updates():
    """No square matrix: every parameter takes ESGD's update, as ESGDAdamStart's after a switch at step 0."""
    a, b = _net(num_layers=2), _net(num_layers=2)
    opt_a = PSGDKronESGD(a.parameters(), esgd_lr=0.05, precondition_warmup_steps=3, precondition_frequency=4, seed=5)
    opt_b = ESGDAdamStart(
        b.parameters(), lr=0.05, adam_steps=0, precondition_warmup_steps=3, precondition_frequency=4, seed=5
    )
    assert [g["algorithm"] for g in opt_a.param_groups] == ["esgd"]
    _train(a, opt_a, 12)
    _train(b, opt_b, 12)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_hidden_matrices_take_heavyballs_psgd_kron_steps_at_the_scheduled_lr():
    """With the other parameters frozen, the hidden matrices follow heavyball's PSGDKron bit for bit, under the same
    learning-rate schedule (the scheduler drives the outer optimizer only)."""
    a, b = _net(), _net()
    for net in (a, b):
        for p in net.parameters():
            p.requires_grad_(p.ndim == 2 and p.shape[0] == p.shape[1])
    opt_a = PSGDKronESGD(a.parameters(), lr=3e-3, beta=0.8, precond_lr=0.2, weight_decay=0.01)
    assert not opt_a.should_create_graph()  # the ESGD group does not train: no curvature
    hidden = [p for p in b.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in hidden]
    opt_b = psgd_kron(hidden, lr=3e-3, beta=0.8, weight_decay=0.01, precond_lr=0.2)
    for net, opt in ((a, opt_a), (b, opt_b)):
        torch.manual_seed(3)  # PSGD-Kron draws its preconditioner probes from the global generator
        _train(net, opt, 8, LambdaLR(opt, lambda step: 1.0 / (1 + step)))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert all(not torch.equal(p, p0) for p, p0 in zip(hidden, start))


def test_curvature_steps_follow_the_esgd_groups_cadence_and_resume_exactly():
    net = _net()
    settings = dict(precondition_warmup_steps=2, precondition_frequency=3, seed=0)
    opt = PSGDKronESGD(net.parameters(), **settings)
    graphs = []
    x, y = _data()
    for _ in range(9):
        opt.zero_grad()
        graphs.append(take_step(opt, lambda create_graph: (net(x) - y).square().mean())[1])
    assert graphs == [True, True, False, False, True, False, False, True, False]  # 0, 1, then 4, 7
    esgd = opt.param_groups[1]["params"][0]
    assert int(opt.state[esgd]["curvature_updates"]) == 4 and int(opt.state[esgd]["step"]) == 9
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    torch.manual_seed(4)
    _train(net, opt, 5)
    again = _net()
    again.load_state_dict(saved_net)
    opt_again = PSGDKronESGD(again.parameters(), **settings)
    opt_again.load_state_dict(saved_opt)
    torch.manual_seed(4)
    _train(again, opt_again, 5)
    for p, q in zip(net.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_registered_settings_and_refusals():
    opt = build_optimizer("psgd-kron-esgd", _net().parameters(), seed=0)
    assert isinstance(opt, PSGDKronESGD) and [g["lr"] for g in opt.param_groups] == [3.33e-5, 0.1]
    for option, value in (("esgd_lr", -1.0), ("beta", 1.0), ("precond_lr", 0.0)):
        with pytest.raises(ValueError, match=option):
            build_optimizer("psgd-kron-esgd", _net().parameters(), **{option: value})
    with pytest.raises(ValueError, match="at most one 'psgd-kron' param group"):
        net = _net()
        hidden = [p for p in net.parameters() if p.ndim == 2 and p.shape[0] == p.shape[1]]
        PSGDKronESGD(
            [{"params": hidden[:1], "algorithm": "psgd-kron"}, {"params": hidden[1:], "algorithm": "psgd-kron"}]
        )
    muon_esgd = build_optimizer("muon-esgd", _net().parameters())
    with pytest.raises(ValueError, match=r"PSGDKronESGD\.load_state_dict: the state dict lacks 'psgd_kron'"):
        build_optimizer("psgd-kron-esgd", _net().parameters()).load_state_dict(muon_esgd.state_dict())


def test_the_preconditioner_update_share_reaches_psgd_kron_in_both():
    """heavyball updates the preconditioner on every step of the first 1,000 by default; a share of 1/4 updates it on
    every fourth, so the two runs part after the first step, the hybrid's hidden matrices as the contender's."""
    runs = {}
    for name in ("psgd-kron", "psgd-kron-esgd"):
        for prob in (None, 0.25):
            net = _net()
            for p in net.parameters():
                p.requires_grad_(p.ndim == 2 and p.shape[0] == p.shape[1])
            opt = build_optimizer(name, net.parameters(), lr=3e-3, precond_update_prob=prob)
            torch.manual_seed(3)
            _train(net, opt, 3)
            runs[name, prob] = [p.detach().clone() for p in net.parameters()]
    for name in ("psgd-kron", "psgd-kron-esgd"):
        assert any(not torch.equal(p, q) for p, q in zip(runs[name, None], runs[name, 0.25])), name
        with pytest.raises(ValueError, match="precond_update_prob"):
            build_optimizer(name, _net().parameters(), precond_update_prob=0.0)
    for p, q in zip(runs["psgd-kron", 0.25], runs["psgd-kron-esgd", 0.25]):
        assert torch.equal(p, q)


def test_a_state_saved_before_the_update_share_existed_resumes_as_heavyballs_schedule():
    net = _net()
    opt = PSGDKronESGD(net.parameters(), seed=0)
    torch.manual_seed(4)
    _train(net, opt, 3)
    saved_net, saved = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    for group in saved["param_groups"]:
        del group["precond_update_prob"]
    torch.manual_seed(5)
    _train(net, opt, 3)
    again = _net()
    again.load_state_dict(saved_net)
    opt_again = PSGDKronESGD(again.parameters(), seed=0)
    opt_again.load_state_dict(saved)
    torch.manual_seed(5)
    _train(again, opt_again, 3)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))
