"""Data-parallel curvature optimizers: two gloo ranks on half batches equal one process on the whole batch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gnerf.fields import CoordinateMLP
from gnerf.optim import build_optimizer, should_create_graph
from gnerf.optim.distributed import all_reduce_mean_, curvature_process_group
from gnerf.optim.step import no_sync_if_curvature

from dist_helpers import run_on_ranks

STEPS = 9
# curvature on steps 0, 1, 2 (warm-up), then 4 and 8; plain steps in between
CADENCE = dict(precondition_warmup_steps=3, precondition_frequency=4)
CASES = {
    "esgd-max": dict(lr=0.05, seed=11, **CADENCE),
    "adahessian-e": dict(lr=0.05, seed=11),  # curvature on every step
    "shampoo": dict(lr=0.05),  # first-order: DDP averages every gradient
    "muon-esgd": dict(lr=0.01, esgd_lr=0.05, seed=11, **CADENCE),  # Muon on the 16 x 16 matrix, ESGD on the rest
    "psgd-kron-esgd": dict(
        lr=0.01, esgd_lr=0.05, seed=11, **CADENCE
    ),  # PSGD-Kron on the 16 x 16 matrix, ESGD on the rest
}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 2, generator=g) * 2 - 1
    y = torch.stack([torch.sin(3 * x[:, 0]) * x[:, 1], x.square().sum(1)], dim=1)
    return x, y


def _net() -> torch.nn.Module:
    torch.manual_seed(5)
    return CoordinateMLP(2, 2, hidden_dim=16, num_layers=3, activation="gaussian", activation_kwargs={"sigma": 0.5})


def _train(name: str, options: dict, model: torch.nn.Module, x, y, process_group="auto"):
    """gnerf's protocol (see gnerf.optim.distributed); ``model`` may be DDP-wrapped."""
    net = model.module if isinstance(model, DDP) else model
    name = name.split("/")[0]
    if name in ("esgd-max", "adahessian-e", "muon-esgd", "psgd-kron-esgd"):  # the Hutchinson optimizers take a group
        options = dict(options, process_group=process_group)
    opt = build_optimizer(name, net.parameters(), **options)
    for _ in range(STEPS):
        with no_sync_if_curvature(model, opt):
            loss = (model(x) - y).square().mean()
            loss.backward(create_graph=should_create_graph(opt))
        opt.step()
        opt.zero_grad()
    return net, opt


def _snapshot(net, opt) -> dict:
    state = {f"param/{i}": p.detach().clone() for i, p in enumerate(net.parameters())}
    for i, p in enumerate(net.parameters()):
        for k, v in opt.state[p].items():
            if torch.is_tensor(v):
                state[f"state/{i}/{k}"] = v.clone()
    return state


def _worker(rank: int, out: str) -> None:
    x, y = _data()
    shard = slice(rank * 16, (rank + 1) * 16)
    results = {}
    for name, options in CASES.items():
        net, opt = _train(name, options, DDP(_net()), x[shard], y[shard])
        results[name] = _snapshot(net, opt)
        results[name + "/probe"] = opt.state_dict()["state"][0].get("probe_rng_state")
    # No seed given: ranks seeded differently (as nerfstudio does) must still draw the same probes.
    torch.manual_seed(100 + rank)
    net, opt = _train("esgd-max", dict(lr=0.05, **CADENCE), DDP(_net()), x[shard], y[shard])
    results["unseeded"] = _snapshot(net, opt)
    # K-FAC refuses instead of silently letting the ranks drift apart.
    try:
        _train("kfac", dict(lr=0.01), DDP(_net()), x[shard], y[shard])
        results["kfac"] = "trained"
    except RuntimeError as err:
        results["kfac"] = str(err)
    # the optimizer's communication: one all-reduce on a curvature step, none on a plain step
    calls = []
    real = dist.all_reduce

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    net = _net()
    ddp = DDP(net)
    opt = build_optimizer("esgd-max", net.parameters(), seed=3, **CADENCE)
    per_step = []
    for _ in range(7):
        with no_sync_if_curvature(ddp, opt):
            (ddp(x[shard]) - y[shard]).square().mean().backward(create_graph=should_create_graph(opt))
        dist.all_reduce = counting
        try:
            opt.step()
        finally:
            dist.all_reduce = real
        per_step.append(len(calls))
        calls.clear()
        opt.zero_grad()
    results["all_reduce_calls"] = per_step
    # all_reduce_mean_ averages in place
    t = torch.full((3,), float(rank))
    all_reduce_mean_([t], curvature_process_group("auto"))
    results["mean"] = t
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run_on_ranks(_worker, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_on_half_batches_equal_one_process_on_the_whole_batch(ranks, name):
    x, y = _data()
    net, opt = _train(name, CASES[name], _net(), x, y, process_group=None)
    single = _snapshot(net, opt)
    initial = {f"param/{i}": p for i, p in enumerate(_net().parameters())}
    for key, value in single.items():
        # every rank holds the same parameters and optimizer state (its counters included), bit for bit
        assert torch.equal(ranks[0][name][key], ranks[1][name][key]), key
        if key.endswith("inv_root"):  # Shampoo's inverse roots of near-singular statistics amplify rounding
            continue
        torch.testing.assert_close(ranks[0][name][key], value, rtol=1e-4, atol=1e-6, msg=key)
        if key in initial:
            assert not torch.allclose(value, initial[key]), f"{key} did not move"
    probes = [r[name + "/probe"] for r in ranks]
    if name == "shampoo":
        assert probes == [None, None]
    else:  # the probes' generator is the same on both ranks
        assert torch.equal(probes[0], probes[1])
    steps = [ranks[0][name][k] for k in ranks[0][name] if k.endswith("/step")]
    assert len(steps) == len(list(net.parameters())) and all(s == STEPS for s in steps)
    if name.startswith("esgd-max"):  # curvature on steps 0, 1, 2 and 6
        assert all(ranks[0][name][k] == 4 for k in ranks[0][name] if k.endswith("/curvature_updates"))


def test_unseeded_ranks_share_one_probe_seed(ranks):
    for key, value in ranks[0]["unseeded"].items():
        assert torch.equal(value, ranks[1]["unseeded"][key]), key


def test_one_all_reduce_per_curvature_step_and_none_on_plain_steps(ranks):
    # steps 0, 1, 2 (warm-up) and 6 are curvature steps; steps 3-5 are plain (DDP averaged them)
    assert ranks[0]["all_reduce_calls"] == ranks[1]["all_reduce_calls"] == [1, 1, 1, 0, 0, 0, 1]


def test_kfac_refuses_data_parallel_training(ranks):
    assert "does not support data-parallel training" in ranks[0]["kfac"]


def test_all_reduce_mean(ranks):
    assert torch.equal(ranks[0]["mean"], torch.full((3,), 0.5))
    assert torch.equal(ranks[1]["mean"], torch.full((3,), 0.5))


def test_probe_generator_state_round_trips():
    """A seeded optimizer saves its probe generator, so a resumed run draws the same probes."""
    x, y = _data()
    net, opt = _train("esgd-max", CASES["esgd-max"], _net(), x, y, process_group=None)
    sd = copy.deepcopy(opt.state_dict())  # as a checkpoint holds it
    assert sd["state"][0]["probe_rng_state"] is not None
    net2 = _net()
    net2.load_state_dict(net.state_dict())
    opt2 = build_optimizer("esgd-max", net2.parameters(), process_group=None, **CASES["esgd-max"])
    opt2.load_state_dict(sd)
    for model, o in ((net, opt), (net2, opt2)):
        for _ in range(STEPS):  # crosses the curvature steps 10 and 14
            loss = (model(x) - y).square().mean()
            loss.backward(create_graph=should_create_graph(o))
            o.step()
            o.zero_grad()
    for p, q in zip(net.parameters(), net2.parameters()):
        assert torch.equal(p, q)


def test_bad_process_group_setting_is_refused():
    with pytest.raises(ValueError, match="process_group"):
        build_optimizer("esgd-max", _net().parameters(), process_group="world")
