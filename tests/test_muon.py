"""MuonAdam: torch.optim.Muon's update on the hidden matrices, torch.optim.Adam's on the rest."""

from __future__ import annotations

import pytest
import torch

from gnerf.fields import CoordinateMLP
from gnerf.optim import MuonAdam, build_optimizer
from gnerf.optim.muon import hidden_matrices, newton_schulz


def _net(hidden_dim=24):
    return CoordinateMLP(
        2, 3, hidden_dim=hidden_dim, num_layers=4, activation="gaussian", activation_kwargs={"sigma": 0.3}
    )


def _problem(seed=0):
    torch.manual_seed(seed)
    net = _net()
    x = torch.rand(64, 2) * 2 - 1
    y = torch.rand(64, 3)
    return net, x, y


def _train(net, opts, x, y, steps):
    for _ in range(steps):
        for o in opts:
            o.zero_grad()
        (net(x) - y).square().mean().backward()
        for o in opts:
            o.step()


def test_bfloat16_steps_are_torch_muon_and_adam_bit_for_bit():
    net, x, y = _problem()
    ref = _problem()[0]
    hidden, rest = hidden_matrices(list(ref.parameters()))
    torch_opts = [
        torch.optim.Muon(
            hidden, lr=2e-3, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw", weight_decay=0.01
        ),
        torch.optim.Adam(rest, lr=1e-3, betas=(0.9, 0.99), eps=1e-7),
    ]
    ours = MuonAdam(
        net.parameters(),
        lr=2e-3,
        adam_lr=1e-3,
        weight_decay=0.01,
        ns_dtype="bfloat16",
        adam_betas=(0.9, 0.99),
        adam_eps=1e-7,
    )
    _train(ref, torch_opts, x, y, 12)
    _train(net, [ours], x, y, 12)
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_float32_iteration_is_close_to_bfloat16_and_orthogonalises():
    g = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    o32 = newton_schulz(g, dtype=torch.float32)
    o16 = newton_schulz(g, dtype=torch.bfloat16).float()
    assert o32.shape == g.shape and o32.dtype == torch.float32
    assert (o32 - o16).norm() / o32.norm() < 0.03  # bfloat16 keeps 8 bits of mantissa
    s = torch.linalg.svdvals(o32)
    assert 0.5 < s.min() and s.max() < 1.3  # torch.optim.Muon's iteration ends near, not at, 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(o32.flatten(), (u @ vh).flatten(), dim=0) > 0.95


def test_auto_runs_float32_on_the_cpu_and_learns():
    net, x, y = _problem()
    opt = build_optimizer("muon", net.parameters(), lr=2e-3, adam_lr=1e-3)
    assert [g["algorithm"] for g in opt.param_groups] == ["muon", "adam"]
    assert opt.param_groups[0]["ns_dtype"] == "auto"
    loss0 = (net(x) - y).square().mean().item()
    _train(net, [opt], x, y, 100)
    assert (net(x) - y).square().mean().item() < 0.3 * loss0


def test_the_split_takes_the_hidden_matrices():
    net = _net()
    params = list(net.parameters())
    hidden, rest = hidden_matrices(params)
    assert [tuple(p.shape) for p in hidden] == [(24, 24), (24, 24)]
    assert len(hidden) + len(rest) == len(params) and all(
        p.ndim == 1 or p.shape[1] == 2 or p.shape[0] == 3 for p in rest
    )


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("ns_dtype", "float16", "ns_dtype"),
        ("adjust_lr_fn", "sqrt", "adjust_lr_fn"),
        ("ns_steps", 0, "ns_steps"),
        ("momentum", 1.0, "momentum"),
    ],
)
def test_bad_settings_are_refused_by_name(option, value, match):
    with pytest.raises(ValueError, match=match):
        MuonAdam(_net(8).parameters(), **{option: value})


def test_a_muon_group_holds_matrices_only():
    net = _net(8)
    with pytest.raises(ValueError, match="2-D"):
        MuonAdam([{"params": list(net.parameters()), "algorithm": "muon"}])
