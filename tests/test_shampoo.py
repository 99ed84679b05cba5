import copy

import pytest
import torch
from torch import nn

from gnerf.fields import CoordinateMLP
from gnerf.optim.registry import build_optimizer, default_lr
from gnerf.optim.shampoo import Shampoo, matrix_inverse_root

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (tests/conftest.py)


def test_inverse_root_matches_eigendecomposition():
    torch.manual_seed(0)
    x = torch.randn(6, 6, dtype=torch.float64)
    m = x @ x.T + 1e-3 * torch.eye(6, dtype=torch.float64)
    d, q = torch.linalg.eigh(m)
    expected = q @ torch.diag(d ** -0.25) @ q.T
    r = matrix_inverse_root(m, 4.0)
    assert torch.allclose(r, expected, atol=1e-9)
    assert torch.allclose(torch.linalg.matrix_power(r, 4) @ m, torch.eye(6, dtype=torch.float64), atol=1e-8)
    # float32, rank deficient plus eps, slightly asymmetric input: still finite and symmetric
    v = torch.randn(50, 3)
    m32 = v @ v.T + 1e-4 * torch.eye(50)
    m32[0, 1] += 1e-6
    r32 = matrix_inverse_root(m32, 4.0)
    assert torch.isfinite(r32).all() and torch.allclose(r32, r32.T, atol=1e-5)
    d64, q64 = torch.linalg.eigh(0.5 * (m32.double() + m32.double().T))
    assert torch.allclose(r32.double(), q64 @ torch.diag(d64 ** -0.25) @ q64.T, rtol=1e-5, atol=1e-5)


def test_two_steps_follow_the_update_rule():
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(3))
    lr, eps = 0.1, 1e-4
    opt = Shampoo([W, b], lr=lr, eps=eps)
    x = torch.randn(5, 4)
    L, R, h = eps * torch.eye(3, dtype=torch.float64), eps * torch.eye(4, dtype=torch.float64), torch.full((3,), eps)
    w_ref, b_ref = W.detach().clone(), b.detach().clone()
    for _ in range(2):
        wq, bq = w_ref.clone().requires_grad_(True), b_ref.clone().requires_grad_(True)
        gw, gb = torch.autograd.grad(torch.sin(x @ wq.T + bq).pow(2).sum(), [wq, bq])
        L += gw.double() @ gw.double().T
        R += gw.double().T @ gw.double()
        h += gb * gb

        def inv4(m):
            d, q = torch.linalg.eigh(m)
            return q @ torch.diag(d ** -0.25) @ q.T

        w_ref = w_ref - lr * (inv4(L) @ gw.double() @ inv4(R)).float()
        b_ref = b_ref - lr * gb / h.sqrt()
        opt.zero_grad()
        torch.sin(x @ W.T + b).pow(2).sum().backward()
        opt.step()
        assert torch.allclose(W, w_ref, atol=1e-5) and torch.allclose(b, b_ref, atol=1e-6)


def _image_problem():
    torch.manual_seed(0)
    net = CoordinateMLP(2, 3, hidden_dim=32, num_layers=3, activation="gaussian", activation_kwargs={"sigma": 0.1})
    g = torch.linspace(-1, 1, 12)
    x = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    y = torch.stack([0.5 + 0.4 * torch.sin(3 * x[:, 0]), 0.5 + 0.4 * torch.cos(2 * x[:, 1]),
                     0.5 + 0.3 * x[:, 0] * x[:, 1]], -1)
    return net, x, y


def _train(net, opt, x, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_foreach_matches_single_tensor_path_and_state_round_trips():
    net, x, y = _image_problem()
    net2 = copy.deepcopy(net)
    o1 = Shampoo(net.parameters(), foreach=False, momentum=0.5, update_freq=2)
    o2 = Shampoo(net2.parameters(), foreach=True, momentum=0.5, update_freq=2)
    _train(net, o1, x, y, 3)
    _train(net2, o2, x, y, 3)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    net3 = copy.deepcopy(net)
    o3 = Shampoo(net3.parameters(), foreach=False, momentum=0.5, update_freq=2)
    o3.load_state_dict(copy.deepcopy(o1.state_dict()))
    assert o3.num_steps == 3
    _train(net, o1, x, y, 3)
    _train(net3, o3, x, y, 3)
    for a, b in zip(net.parameters(), net3.parameters()):
        assert torch.equal(a, b)


def test_learns_a_small_image_and_is_registered():
    net, x, y = _image_problem()
    opt = build_optimizer("shampoo", net.parameters(), activation="gaussian")
    assert isinstance(opt, Shampoo) and opt.param_groups[0]["lr"] == 0.1 and not opt.should_create_graph()
    assert default_lr("shampoo", "sine") == 0.01
    losses = _train(net, opt, x, y, 150)
    assert losses[-1] < 0.1 * losses[0]


def test_clear_errors():
    p = [nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="eps"):
        Shampoo(p, eps=0.0)
    with pytest.raises(ValueError, match="update_freq"):
        Shampoo(p, update_freq=0)
    with pytest.raises(ValueError, match="square matrix"):
        matrix_inverse_root(torch.ones(2, 3), 4.0)
    with pytest.raises(ValueError, match="no 'shampoo' counters"):
        Shampoo(p).load_state_dict(torch.optim.SGD(p, lr=0.1).state_dict())
