import pytest
import torch
from torch import nn

from gnerf.optim.adahessian import AdaHessian, AdaHessianE, AdaHessianJ
from gnerf.optim.curvature import MissingGraphError, rademacher_like

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (tests/conftest.py)


def _f(w1, w2, A, B):
    z = A @ w1 + B @ w2.reshape(-1)
    return (torch.tanh(z) ** 2).sum() + (w1**4).sum() + (w1[0] * w2[1, 1]) ** 2


def _quartic_problem():
    torch.manual_seed(0)
    A, B = torch.randn(4, 3), torch.randn(4, 4)
    w1 = nn.Parameter(torch.randn(3))
    w2 = nn.Parameter(torch.randn(2, 2))

    def flat(w):
        return _f(w[:3], w[3:].reshape(2, 2), A, B)

    H = torch.autograd.functional.hessian(flat, torch.cat([w1.detach(), w2.detach().reshape(-1)]))
    return w1, w2, A, B, H


@pytest.mark.parametrize("statistic", ["equilibration", "jacobi"])
def test_hutchinson_statistic_is_unbiased(statistic):
    # lr = 0 keeps the parameters (and so H) fixed; the bias-corrected EMA is a weighted average of
    # independent one-probe statistics whose weights sum to one, hence an unbiased estimate of their mean.
    w1, w2, A, B, H = _quartic_problem()
    beta2, n = 0.998, 3000
    opt = AdaHessian(
        [w1, w2], lr=0.0, betas=(0.9, beta2), statistic=statistic, generator=torch.Generator().manual_seed(3)
    )
    for _ in range(n):
        opt.zero_grad()
        _f(w1, w2, A, B).backward(create_graph=True)
        opt.step()
    est = torch.cat([opt.state[w1]["curvature"], opt.state[w2]["curvature"].reshape(-1)]) / (1 - beta2**n)
    if statistic == "jacobi":
        # E|v * Hv| = E|Hv|, exactly: the mean over all 2^7 sign vectors
        signs = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * H.shape[0])
        expected = (signs @ H).abs().mean(0)
        assert torch.allclose(est, expected, rtol=0.05, atol=0.02 * expected.max())
        # an all -1 (or constant) "Rademacher" vector would give the row sums' magnitudes instead
        assert not torch.allclose(est, H.sum(1).abs(), rtol=0.05, atol=0.02 * expected.max())
    else:
        expected = (H * H).sum(1)  # E[(Hv)^2] = diag(H^2), the squared row norms
        assert torch.allclose(est, expected, rtol=0.08, atol=0.02 * expected.max())
        assert not torch.allclose(est, H.sum(1) ** 2, rtol=0.08, atol=0.02 * expected.max())


def test_probe_has_both_signs():
    (v,) = rademacher_like([torch.empty(10_000)], torch.Generator().manual_seed(0))
    assert (v == 1).any() and (v == -1).any() and abs(v.mean().item()) < 0.05


@pytest.mark.parametrize("statistic", ["equilibration", "jacobi"])
def test_two_steps_follow_the_update_rule(statistic):
    w1, w2, A, B, _ = _quartic_problem()
    lr, b1, b2, eps = 0.05, 0.9, 0.99, 1e-4
    gen = torch.Generator().manual_seed(7)
    probe_gen = torch.Generator().manual_seed(7)
    opt = AdaHessian([w1, w2], lr=lr, betas=(b1, b2), eps=eps, statistic=statistic, generator=gen)
    ps = [w1.detach().clone(), w2.detach().clone()]
    m = [torch.zeros_like(p) for p in ps]
    s = [torch.zeros_like(p) for p in ps]
    for t in (1, 2):
        q = [p.clone().requires_grad_(True) for p in ps]
        grads = torch.autograd.grad(_f(q[0], q[1], A, B), q, create_graph=True)
        vs = rademacher_like(ps, probe_gen)
        hv = torch.autograd.grad(grads, q, grad_outputs=vs)
        for i in range(2):
            g = grads[i].detach()
            m[i] = b1 * m[i] + (1 - b1) * g
            if statistic == "jacobi":
                s[i] = b2 * s[i] + (1 - b2) * (vs[i] * hv[i]).abs()
            else:
                s[i] = b2 * s[i] + (1 - b2) * hv[i] ** 2
            d = (s[i] / (1 - b2**t)).sqrt()
            ps[i] = ps[i] - lr * (m[i] / (1 - b1**t)) / (d + eps)
        opt.zero_grad()
        _f(w1, w2, A, B).backward(create_graph=True)
        opt.step()
        assert torch.allclose(w1, ps[0], atol=1e-6) and torch.allclose(w2, ps[1], atol=1e-6)
    assert w1.grad.grad_fn is None  # the graph was released


def test_clear_errors():
    """What the registered variants cannot show (the rest: tests/test_optim_contract.py)."""
    p = [nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match="invalid statistic='newton'"):
        AdaHessian(p, statistic="newton")
    with pytest.raises(ValueError, match="AdaHessianE always uses statistic='equilibration'"):
        AdaHessianE([{"params": p, "statistic": "jacobi"}])
    assert AdaHessianJ([{"params": p, "statistic": "jacobi"}]).param_groups[0]["statistic"] == "jacobi"
    mixed = AdaHessian([{"params": p}, {"params": [nn.Parameter(torch.zeros(2))], "statistic": "jacobi"}])
    assert [g["statistic"] for g in mixed.param_groups] == ["equilibration", "jacobi"]  # a group's own statistic
    opt = AdaHessian(p)
    (p[0] ** 2).sum().backward()
    with pytest.raises(MissingGraphError):
        opt.step()
    with pytest.raises(ValueError, match="statistic='equilibration'"):
        AdaHessianJ(p).load_state_dict(AdaHessianE(p).state_dict())
