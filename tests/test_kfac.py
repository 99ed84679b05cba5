import copy

import pytest
import torch
from torch import nn

from gnerf.optim.base import damped_inverse
from gnerf.optim.kfac import KFAC, kfac_precondition
from gnerf.optim.kfac_adam import KFACAdam

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (tests/conftest.py)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3))


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, 2, generator=g) * 2 - 1, torch.rand(8, 3, generator=g)


LOSSES = {
    "mse": lambda out, y: ((out - y) ** 2).mean(),
    "bce": lambda out, y: nn.functional.binary_cross_entropy_with_logits(out, y),
}


def _explicit_factors(net, x, y, loss):
    """A = E[[a;1][a;1]^T], G = E[g g^T] with g the per-sample loss gradient wrt the layer output."""
    s1 = net[0](x)
    h = torch.tanh(s1)
    s2 = net[2](h)
    per_sample = torch.stack([loss(s2[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])])
    g1, g2 = torch.autograd.grad(per_sample.sum(), [s1, s2])  # row i is d loss_i / d s_i
    ones = torch.ones(x.shape[0], 1)
    out = []
    for a, g in ((x, g1), (h.detach(), g2)):
        at = torch.cat([a, ones], 1)
        A = sum(torch.outer(r, r) for r in at) / len(at)
        G = sum(torch.outer(r, r) for r in g) / len(g)
        out.append((A, G))
    return out


@pytest.mark.parametrize("loss_name", ["mse", "bce"])
@pytest.mark.parametrize("build", ["module", "params", "linears"])
def test_factors_equal_explicit_expectations(loss_name, build):
    net = _mlp()
    x, y = _batch()
    loss = LOSSES[loss_name]
    expected = _explicit_factors(net, x, y, loss)
    arg = {"module": net, "params": net.parameters(), "linears": [net[0], net[2]]}[build]
    opt = KFAC(arg, lr=0.0)
    loss(net(x), y).backward()
    opt.step()
    assert len(opt.tracked_layers()) == 2
    for layer, (A, G) in zip((net[0], net[2]), expected):
        st = opt.state[layer.weight]
        assert torch.allclose(st["kfac_A"], A, atol=1e-6)
        assert torch.allclose(st["kfac_G"], G, atol=1e-7)
    # a second batch: running average with rho = min(1 - 1/2, 0.95) = 1/2
    x2, y2 = _batch(2)
    expected2 = _explicit_factors(copy.deepcopy(net), x2, y2, loss)  # a copy: net's hooks would record it
    opt.zero_grad()
    loss(net(x2), y2).backward()
    opt.step()
    for layer, (A1, G1), (A2, G2) in zip((net[0], net[2]), expected, expected2):
        st = opt.state[layer.weight]
        assert torch.allclose(st["kfac_A"], 0.5 * (A1 + A2), atol=1e-6)
        assert torch.allclose(st["kfac_G"], 0.5 * (G1 + G2), atol=1e-7)


def test_eval_forward_without_grad_records_nothing():
    net = _mlp()
    x, y = _batch()
    opt = KFAC(net)
    with torch.no_grad():
        net(torch.rand(100, 2))
    LOSSES["mse"](net(x), y).backward()
    opt.step()
    A, _ = _explicit_factors(net, x, y, LOSSES["mse"])[0]
    # step() already moved the weights but the first layer's A depends only on x
    assert torch.allclose(opt.state[net[0].weight]["kfac_A"], A, atol=1e-6)


def _factors_and_grad():
    """Two random Kronecker factors A (4 x 4) and G (3 x 3), a 3 x 4 gradient, and the factors' eigendecompositions."""
    torch.manual_seed(0)
    a, g = torch.randn(20, 4, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    A, G = a.T @ a / 20, g.T @ g / 20
    grad = torch.randn(3, 4, dtype=torch.float64)
    da, qa = torch.linalg.eigh(A)
    dg, qg = torch.linalg.eigh(G)
    return A, G, grad, qa, da, qg, dg


def test_preconditioner_is_the_damped_kronecker_inverse():
    A, G, grad, qa, da, qg, dg = _factors_and_grad()
    lam = 0.01
    u = kfac_precondition(grad, qa, da, qg, dg, lam)
    # vec() stacks columns; (A kron G) vec(X) = vec(G X A^T)
    F = torch.kron(A, G) + lam * torch.eye(12, dtype=torch.float64)
    expected = torch.linalg.solve(F, grad.T.reshape(-1)).reshape(4, 3).T
    assert torch.allclose(u, expected, atol=1e-10)


def test_factored_damping_damps_each_factor():
    A, G, grad, *_ = _factors_and_grad()
    lam = 0.1
    c = lam**0.5  # the published code's K-FAC: (A + sqrt(eps) I)^-1 and (G + sqrt(eps) I)^-1, pi off
    u = damped_inverse(G, c) @ grad @ damped_inverse(A, c)
    expected = torch.linalg.inv(G + c * torch.eye(3, dtype=torch.float64)) @ grad
    expected = expected @ torch.linalg.inv(A + c * torch.eye(4, dtype=torch.float64))
    assert torch.allclose(u, expected, atol=1e-10)


def test_damped_inverse_of_a_rounded_rank_deficient_factor_clamps_its_negative_eigenvalues():
    """A float32 factor of rank 20 whose rounding leaves eigenvalues below -shift: Cholesky fails there, and the
    inverse comes from the eigendecomposition with the eigenvalues clamped at 0, as it would without rounding."""
    torch.manual_seed(0)
    a = torch.randn(512, 20) @ torch.randn(20, 64)
    A = (a.T @ a / 512) * 1e6
    d, q = torch.linalg.eigh(0.5 * (A + A.T).double())
    shift = 1e-6
    assert d.min() < -shift  # the case that needs the clamp
    expected = (q / (d.clamp_min(0.0) + shift)) @ q.T
    got = damped_inverse(A, shift)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=0)


def test_factored_damping_follows_a_changed_damping_between_refreshes():
    """The damped inverses keep the shift they were made with: a group's new damping applies from the next step,
    as it does without factored damping, even when no refresh is due."""
    net = _mlp()
    opt = KFAC(net, lr=0.1, damping=0.1, factored_damping=True, precondition_frequency=100)
    x, y = _batch()
    for damping in (0.1, 0.4):
        opt.param_groups[0]["damping"] = damping
        opt.zero_grad()
        (net(x) - y).square().mean().backward()
        opt.step()
    state = opt.state[net[0].weight]
    assert state["kfac_inverse_updates"] == 2 and state["kfac_inv_shift"] == 0.4**0.5
    expected = torch.linalg.inv(state["kfac_A"].double() + 0.4**0.5 * torch.eye(state["kfac_A"].shape[0]))
    assert torch.allclose(state["kfac_invA"].double(), expected, atol=1e-6)


def test_kfac_adam_is_adam_on_each_batch_preconditioned_gradient():
    """Two steps on two batches: each step preconditions with that batch's factors alone (the published code's
    running-average parameter 1), damped by sqrt(0.1) per factor, and torch.optim.Adam steps on the result."""
    net = _mlp()
    ref = copy.deepcopy(net)
    ref_adam = torch.optim.Adam(ref.parameters(), lr=1e-3)
    opt = KFACAdam(net, lr=1e-3)
    c = 0.1**0.5
    for seed in (1, 2):
        x, y = _batch(seed)
        factors = _explicit_factors(copy.deepcopy(ref), x, y, LOSSES["mse"])
        ref_adam.zero_grad()
        LOSSES["mse"](ref(x), y).backward()
        for (A, G), i in zip(factors, (0, 2)):
            w, b = ref[i].weight, ref[i].bias
            full = torch.cat([w.grad, b.grad[:, None]], 1).double()
            iA = torch.linalg.inv(A.double() + c * torch.eye(A.shape[0], dtype=torch.float64))
            iG = torch.linalg.inv(G.double() + c * torch.eye(G.shape[0], dtype=torch.float64))
            u = (iG @ full @ iA).float()
            w.grad, b.grad = u[:, :-1].contiguous(), u[:, -1].contiguous()
        ref_adam.step()
        opt.zero_grad()
        LOSSES["mse"](net(x), y).backward()
        opt.step()
        for p, q in zip(net.parameters(), ref.parameters()):
            assert torch.allclose(p, q, atol=1e-6), seed
    assert [opt.state[net[i].weight]["kfac_inverse_updates"] for i in (0, 2)] == [2, 2]


def test_one_step_update_and_inverse_cadence():
    net = _mlp()
    x, y = _batch()
    ref = copy.deepcopy(net)
    lr, lam = 0.1, 0.01
    opt = KFAC(net, lr=lr, damping=lam, kl_clip=0.0, momentum=0.9, precondition_frequency=2)
    LOSSES["mse"](net(x), y).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    opt.step()
    for (A, G), i in zip(_explicit_factors(ref, x, y, LOSSES["mse"]), (0, 2)):
        w, b = grads[i], grads[i + 1]
        full = torch.cat([w, b[:, None]], 1).double()
        F = torch.kron(A.double(), G.double()) + lam * torch.eye(full.numel(), dtype=torch.float64)
        u = torch.linalg.solve(F, full.T.reshape(-1)).reshape(full.shape[1], full.shape[0]).T.float()
        assert torch.allclose(net[i].weight, ref[i].weight - lr * u[:, :-1], atol=1e-5)
        assert torch.allclose(net[i].bias, ref[i].bias - lr * u[:, -1], atol=1e-5)
    for _ in range(4):
        opt.zero_grad()
        LOSSES["mse"](net(x), y).backward()
        opt.step()
    assert all(opt.state[p]["step"] == 5 for p in net.parameters())
    assert [opt.state[net[i].weight]["kfac_inverse_updates"] for i in (0, 2)] == [3, 3]  # steps 1, 3, 5


def test_a_list_of_modules_must_be_linear_layers():
    """(Out-of-range hyperparameters and foreign states: tests/test_optim_contract.py.)"""
    net = _mlp()
    with pytest.raises(ValueError, match="only nn.Linear"):
        KFAC([net[0], net[1]])
