import copy
import math

import pytest
import torch
from torch import nn

from gnerf.optim import (
    ESGD,
    ESGDAdamStart,
    ESGDMax,
    MissingGraphError,
    hessian_vector_product,
    rademacher_like,
    should_create_graph,
)

from helpers_tasks import gaussian_mlp, train_steps

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (tests/conftest.py)


def _tiny_problem(seed=0):
    torch.manual_seed(seed)
    net = gaussian_mlp(1, hidden_dim=6)
    x = torch.rand(32, 2) * 2 - 1
    return net, x, torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:])


def _reference_start(net, seed, buffers):
    """The reference optimizers' parameters, probe generator and ``buffers`` zero state lists."""
    params = list(net.parameters())
    return params, torch.Generator().manual_seed(seed), [[torch.zeros_like(p) for p in params] for _ in range(buffers)]


def _reference_grads(net, x, y, params):
    """Gradients of the squared error, with a graph for Hessian-vector products."""
    return torch.autograd.grad(((net(x) - y) ** 2).mean(), params, create_graph=True)


def _reference_hvps(grads, params, gen):
    """``H v`` for Rademacher ``v`` drawn from ``gen``, one tensor at a time."""
    vs = [torch.randint(0, 2, p.shape, generator=gen).float() * 2 - 1 for p in params]
    return torch.autograd.grad(grads, params, vs)


def test_rademacher_has_both_signs_and_zero_mean():
    t = torch.empty(100_000)
    (v,) = rademacher_like([t], torch.Generator().manual_seed(1))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(v.mean().item()) < 0.02
    (w,) = rademacher_like([t], torch.Generator().manual_seed(1))
    assert torch.equal(v, w)


def test_hvp_matches_explicit_hessian_and_hutchinson_is_unbiased():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    A = torch.randn(5, 5)

    def f(w):
        return (torch.tanh(A @ w) ** 2).sum() + (w**4).sum()

    H = torch.autograd.functional.hessian(f, w.detach())
    gen = torch.Generator().manual_seed(0)
    acc = torch.zeros(5)
    n = 4000
    for _ in range(n):
        (g,) = torch.autograd.grad(f(w), w, create_graph=True)
        (v,) = rademacher_like([w], gen)
        (hv,) = hessian_vector_product([w], [g], [v])
        torch.testing.assert_close(hv, H @ v, rtol=1e-4, atol=1e-5)
        acc += hv**2
    expected = (H**2).sum(dim=1)  # diag(H^2): squared row norms
    torch.testing.assert_close(acc / n, expected, rtol=0.1, atol=1e-3)


def test_missing_graph_raises_clear_error():
    net, x, y = _tiny_problem()
    opt = ESGDMax(net.parameters())
    assert opt.should_create_graph()
    ((net(x) - y) ** 2).mean().backward()  # no create_graph
    with pytest.raises(MissingGraphError, match=r"backward\(create_graph=optimizer.should_create_graph\(\)\)"):
        opt.step()


def test_cadence():
    net, x, y = _tiny_problem()
    opt = ESGDMax(net.parameters(), precondition_warmup_steps=3, precondition_frequency=5)
    flags = []
    for _ in range(12):
        flags.append(opt.should_create_graph())
        train_steps(net, opt, x, y, 1)
    # the warm-up, then every 5th step counted from its last (as published: 5 steps since the last update)
    assert [i for i, f in enumerate(flags) if f] == [0, 1, 2, 7]
    assert _counters(opt, net.parameters()) == {(12, 4)}  # (steps, curvature updates) of every parameter


def _counters(opt, params):
    """The set of ``(step, curvature_updates)`` of ``params`` in ``opt``'s per-parameter state."""
    return {(int(opt.state[p]["step"]), int(opt.state[p]["curvature_updates"])) for p in params}


def test_a_param_group_added_later_keeps_its_settings_and_its_own_cadence():
    """A group added after three steps counts its own steps with its own settings and is due at its own first
    steps (one probe serves every group); the first group uses the products on its own curvature steps only."""
    net, x, y = _tiny_problem()
    first, *rest = list(net.parameters())
    opt = ESGDMax(
        [first],
        lr=0.05,
        precondition_warmup_steps=2,
        precondition_frequency=4,
        generator=torch.Generator().manual_seed(0),
    )
    flags = []
    for _ in range(3):
        flags.append(opt.is_curvature_step())
        train_steps(net, opt, x, y, 1)
    with pytest.raises(ValueError, match=r"invalid lr_warmup=1.0"):
        opt.add_param_group({"params": rest, "lr_warmup": 1.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": rest, "lr": 0.02, "precondition_warmup_steps": 3})
    assert opt.param_groups[1]["lr"] == 0.02 and opt.param_groups[1]["precondition_frequency"] == 4
    for _ in range(6):
        flags.append(opt.is_curvature_step())
        train_steps(net, opt, x, y, 1)
    # the first group at its steps 0, 1 and 5; the new one at its steps 0-2 (overall 3-5)
    assert [i for i, f in enumerate(flags) if f] == [0, 1, 3, 4, 5]
    assert _counters(opt, [first]) == {(9, 3)} and _counters(opt, rest) == {(6, 3)}
    assert all(torch.isfinite(p).all() for p in net.parameters())
    saved = opt.state_dict()
    assert [g["precondition_warmup_steps"] for g in saved["param_groups"]] == [2, 3]
    resumed = ESGDMax([{"params": [first]}, {"params": rest}])  # the settings come with the state
    resumed.load_state_dict(saved)
    assert [g["lr"] for g in resumed.param_groups] == [0.05, 0.02]
    assert _counters(resumed, [first]) == {(9, 3)} and _counters(resumed, rest) == {(6, 3)}
    assert all(s["step"].device.type == "cpu" and s["step"].dtype == torch.float32 for s in resumed.state.values())
    assert resumed.is_curvature_step()  # the first group's step 9 (1 + 2 x 4)
    resumed.load_state_dict(copy.deepcopy(resumed.state_dict()))  # torch's load adds to the defaults: again
    assert _counters(resumed, [first]) == {(9, 3)}


def _reference_esgd(
    net, x, y, steps, lr, use_max, warmup, every, seed, beta1=0.9, beta2=0.999, eps=1e-4, lr_warmup=0.99, wd=0.0
):
    """ESGD and ESGD-Max written out from their published equations, one tensor at a time.

    ESGD: plain momentum corrected by 1 - beta1^t, D a running mean corrected by 1 - beta2^t
    (the step count t, not the number of updates), no lr warm-up. ESGD-Max: Nesterov look-ahead
    corrected by 1 - beta1^(t+1), D an exponentially weighted max, lr ramped by 1 - rho^k.
    """
    params, gen, (m, D) = _reference_start(net, seed, 2)
    k = 0
    for t in range(1, steps + 1):
        grads = _reference_grads(net, x, y, params)
        curv = (t - 1) < warmup or (t - 1 - max(warmup - 1, 0)) % every == 0
        if curv:
            hvs = _reference_hvps(grads, params, gen)
            k += 1
        with torch.no_grad():
            lr_t = lr * (1 - lr_warmup**k) if use_max else lr
            for i, p in enumerate(params):
                g = grads[i].detach()
                m[i] = beta1 * m[i] + (1 - beta1) * g
                if curv:
                    h2 = hvs[i] ** 2
                    D[i] = torch.maximum(beta2 * D[i], h2) if use_max else beta2 * D[i] + (1 - beta2) * h2
                if use_max:
                    direction = (beta1 * m[i] + (1 - beta1) * g) / (1 - beta1 ** (t + 1))
                    denom = D[i].sqrt() + eps
                else:
                    direction = m[i] / (1 - beta1**t)
                    denom = (D[i] / (1 - beta2**t)).sqrt() + eps
                p.mul_(1 - lr_t * wd)
                p.sub_(lr_t * direction / denom)
    return params


@pytest.mark.parametrize("cls", [ESGDMax, ESGD])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_reference_equations(cls, foreach):
    net, x, y = _tiny_problem()
    ref = copy.deepcopy(net)
    opt = cls(
        net.parameters(),
        lr=0.05,
        precondition_warmup_steps=3,
        precondition_frequency=4,
        weight_decay=0.01,
        foreach=foreach,
        generator=torch.Generator().manual_seed(7),
    )
    train_steps(net, opt, x, y, 11)
    expected = _reference_esgd(ref, x, y, 11, 0.05, cls.use_max, 3, 4, seed=7, wd=0.01)
    for p, q in zip(net.parameters(), expected):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert all((opt.state[p]["curvature"] >= 0).all() for p in net.parameters())


def test_esgd_bias_corrects_curvature_with_the_step_count():
    """After the warm-up the published ESGD's step grows although D is not updated: sqrt(1 - beta2^t) grows."""
    p = nn.Parameter(torch.zeros(1))
    opt = ESGD(
        [p],
        lr=0.1,
        betas=(0.0, 0.999),
        eps=1e-12,
        precondition_warmup_steps=1,
        precondition_frequency=10**6,
        generator=torch.Generator().manual_seed(0),
    )
    moves = []
    for _ in range(4):
        p.grad = None
        loss = (p - 1.0).square().sum()  # gradient 2 (p - 1), Hessian 2, so (Hv)^2 = 4
        loss.backward(create_graph=opt.should_create_graph())
        before = p.item()
        g = 2 * (before - 1.0)
        opt.step()
        moves.append((before - p.item()) / g)  # lr / sqrt(D / (1 - 0.999^t)) with D = 0.001 * 4 from step 1 on
    expected = [0.1 / math.sqrt(0.001 * 4 / (1 - 0.999**t)) for t in range(1, 5)]
    assert moves == pytest.approx(expected, rel=1e-5)
    assert moves[3] > moves[0] * 1.9  # sqrt(4): the effective step grows with t


def test_lr_scheduler_and_param_groups():
    net, x, y = _tiny_problem()
    first, *rest = list(net.parameters())
    opt = ESGDMax([{"params": [first], "lr": 0.0}, {"params": rest}], lr=0.1, lr_warmup=0.0)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    frozen = first.detach().clone()
    train_steps(net, opt, x, y, 3, sched)
    assert torch.equal(first.detach(), frozen)  # lr 0 group did not move
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_graph_is_released_after_step():
    net, x, y = _tiny_problem()
    opt = ESGDMax(net.parameters())
    loss = ((net(x) - y) ** 2).mean()
    loss.backward(create_graph=True)
    assert any(p.grad.grad_fn is not None for p in net.parameters())
    opt.step()
    assert all(p.grad.grad_fn is None for p in net.parameters())


def test_a_state_of_another_variant_or_of_an_older_gnerf_is_refused():
    """The variants' param groups tell their states apart (the contract checks every pair; here the message).
    A state with gnerf's former top-level counters is refused as an older gnerf's."""
    net, x, y = _tiny_problem()
    adam_start = ESGDAdamStart(net.parameters(), adam_steps=2, seed=0)
    train_steps(net, adam_start, x, y, 3)
    with pytest.raises(
        ValueError,
        match=r"^ESGD\.load_state_dict: the state dict was saved by another optimizer "
        r"\(its param group 0 holds adam_eps, adam_lr, adam_lr_ratio, adam_steps\)",
    ):
        ESGD(net.parameters()).load_state_dict(adam_start.state_dict())
    esgd = ESGD(net.parameters(), seed=0)
    train_steps(net, esgd, x, y, 2)
    with pytest.raises(ValueError, match=r"its param group 0 lacks adam_eps, adam_lr, adam_steps\)"):
        ESGDAdamStart(net.parameters()).load_state_dict(esgd.state_dict())
    older = {**esgd.state_dict(), "esgd": {"num_steps": 2, "num_curvature_updates": 2}}
    with pytest.raises(
        ValueError,
        match=r"holds 'esgd' beside torch's 'state' and 'param_groups': it was saved by an "
        r"older gnerf and cannot be resumed",
    ) as refused:
        ESGD(net.parameters()).load_state_dict(older)
    assert "\n" not in str(refused.value)
    resumed = ESGD(net.parameters())
    resumed.load_state_dict(esgd.state_dict())
    assert _counters(resumed, net.parameters()) == {(2, 2)}


def _fit_pattern(make_opt, steps=300):
    torch.manual_seed(0)
    n = 16
    lin = torch.linspace(-1, 1, n)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    coords = torch.stack([xx, yy], -1).reshape(-1, 2)
    target = (0.5 + 0.5 * torch.sin(4 * xx) * torch.cos(3 * yy)).reshape(-1, 1)
    net = gaussian_mlp(1, hidden_dim=64, sigma=0.1)
    return train_steps(net, make_opt(net.parameters()), coords, target, steps)


def test_esgd_max_fits_a_small_image_faster_than_sgd():
    """A Gaussian field learns a 16x16 pattern with ESGD-Max, well ahead of SGD with the same lr and momentum."""
    esgd_losses = _fit_pattern(lambda ps: ESGDMax(ps, lr=0.15, precondition_warmup_steps=10, precondition_frequency=20))
    sgd_losses = _fit_pattern(lambda ps: torch.optim.SGD(ps, lr=0.15, momentum=0.9))
    assert all(math.isfinite(l) for l in esgd_losses)
    assert esgd_losses[-1] < esgd_losses[0] / 100
    assert -10 * math.log10(esgd_losses[-1]) > 22  # dB; measured 24.9 on CPU
    assert esgd_losses[-1] < sgd_losses[-1] / 3  # measured 0.0033 vs 0.0226


def _reference_adam_start(
    net, x, y, steps, lr, adam_steps, adam_lr, warmup, every, seed, beta1=0.9, beta2=0.999, eps=1e-4, adam_eps=1e-8
):
    """ESGDAdamStart written out from its docstring's equations."""
    params, gen, (m, s, D) = _reference_start(net, seed, 3)
    k = 0
    for t in range(1, steps + 1):
        grads = _reference_grads(net, x, y, params)
        n = t - 1 - max(adam_steps - warmup, 0)  # the cadence starts warmup steps before the switch
        curv = n >= 0 and (n < warmup or (n - max(warmup - 1, 0)) % every == 0)
        if curv:
            hvs = _reference_hvps(grads, params, gen)
            k += 1
        with torch.no_grad():
            for i, p in enumerate(params):
                g = grads[i].detach()
                m[i] = beta1 * m[i] + (1 - beta1) * g
                if curv:
                    D[i] = beta2 * D[i] + (1 - beta2) * hvs[i] ** 2
                if t <= adam_steps:
                    s[i] = beta2 * s[i] + (1 - beta2) * g * g
                    p.sub_(adam_lr * (m[i] / (1 - beta1**t)) / ((s[i] / (1 - beta2**t)).sqrt() + adam_eps))
                else:
                    p.sub_(lr * (m[i] / (1 - beta1**t)) / ((D[i] / (1 - beta2**k)).sqrt() + eps))
    return params


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_start_matches_its_equations_and_starts_as_adam(foreach):
    net, x, y = _tiny_problem()
    ref, adam_net = copy.deepcopy(net), copy.deepcopy(net)
    opt = ESGDAdamStart(
        net.parameters(),
        lr=0.05,
        adam_steps=5,
        adam_lr=0.01,
        adam_eps=1e-7,
        precondition_warmup_steps=3,
        precondition_frequency=4,
        foreach=foreach,
        generator=torch.Generator().manual_seed(7),
    )
    flags = []
    adam = torch.optim.Adam(adam_net.parameters(), lr=0.01, eps=1e-7, foreach=foreach)
    for step in range(5):  # the first adam_steps steps are torch.optim.Adam's, to the bit
        flags.append(opt.is_curvature_step())
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward(create_graph=should_create_graph(opt))
        for p, q in zip(net.parameters(), adam_net.parameters()):
            # Adam gets the same gradients: a backward that builds the graph (the curvature steps 2-4) may
            # round them differently from a plain one
            q.grad = p.grad.detach().clone()
        opt.step()
        adam.step()
        for p, q in zip(net.parameters(), adam_net.parameters()):
            assert torch.equal(p, q), step
            assert torch.equal(opt.state[p]["exp_avg_sq"], adam.state[q]["exp_avg_sq"]), step
    for _ in range(6):
        flags.append(opt.is_curvature_step())
        train_steps(net, opt, x, y, 1)
    assert [i for i, f in enumerate(flags) if f] == [2, 3, 4, 8]  # the 3 steps before the switch at 5, then every 4th
    expected = _reference_adam_start(ref, x, y, 11, 0.05, 5, 0.01, 3, 4, seed=7, adam_eps=1e-7)
    for p, q in zip(net.parameters(), expected):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert _counters(opt, net.parameters()) == {(11, 4)}
