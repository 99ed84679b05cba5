import pytest
import torch
from torch import nn

from gnerf.optim.shampoo import Shampoo, matrix_inverse_root

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (tests/conftest.py)


def test_inverse_root_matches_eigendecomposition():
    torch.manual_seed(0)
    x = torch.randn(6, 6, dtype=torch.float64)
    m = x @ x.T + 1e-3 * torch.eye(6, dtype=torch.float64)
    d, q = torch.linalg.eigh(m)
    expected = q @ torch.diag(d**-0.25) @ q.T
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
    assert torch.allclose(r32.double(), q64 @ torch.diag(d64**-0.25) @ q64.T, rtol=1e-5, atol=1e-5)


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
            return q @ torch.diag(d**-0.25) @ q.T

        w_ref = w_ref - lr * (inv4(L) @ gw.double() @ inv4(R)).float()
        b_ref = b_ref - lr * gb / h.sqrt()
        opt.zero_grad()
        torch.sin(x @ W.T + b).pow(2).sum().backward()
        opt.step()
        assert torch.allclose(W, w_ref, atol=1e-5) and torch.allclose(b, b_ref, atol=1e-6)


def test_inverse_root_refuses_a_non_square_matrix():
    """(Out-of-range hyperparameters and foreign states: tests/test_optim_contract.py.)"""
    with pytest.raises(ValueError, match="square matrix"):
        matrix_inverse_root(torch.ones(2, 3), 4.0)
