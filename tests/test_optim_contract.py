"""The contract every registered optimizer keeps, checked for each config in ``gnerf.optim.OPTIMIZERS``.

Built only through its config (:func:`gnerf.optim.build_optimizer`), trained under the curvature
protocol (``backward(create_graph=...)`` as the optimizer asks, then ``step()``):

* with its default hyperparameters it clearly learns a small image;
* a ``state_dict`` saved mid-run (through ``torch.save`` / ``torch.load(weights_only=True)``) and
  loaded into an optimizer built afresh with the defaults continues the run exactly: the state
  carries the counters, the cadence and the probes' random generator; the optimizers of
  ``gnerf.optim.configs`` keep it in torch's schema (settings in the param groups, counters in the
  per-parameter state, nothing else) and take their settings as explicit keywords (PSGDKronESGD
  adds its inner PSGD-Kron's own state dict);
* where it has a ``foreach`` switch, the multi-tensor and the per-tensor updates agree;
* a bad hyperparameter, an option it does not take, or a state saved by another registered
  optimizer is refused with a ``ValueError`` that names the problem.

The exact update equations are checked per optimizer in test_esgd.py, test_adahessian.py,
test_kfac.py and test_shampoo.py.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import math
import re
from dataclasses import dataclass
from typing import ClassVar, Optional

import pytest
import torch

from gnerf.optim import OPTIMIZERS as REGISTERED
from gnerf.optim import OptimizerConfig, build_optimizer, has_train_eval_modes, register_optimizer

from helpers_tasks import gaussian_mlp, train_steps


class ToySGD(torch.optim.Optimizer):
    """Plain SGD with heavy-ball momentum: the toy an added optimizer is, to show that the contract picks it up."""

    def __init__(self, params, lr=0.1, momentum=0.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"invalid momentum={momentum}: must lie in [0, 1)")
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])


@register_optimizer
@dataclass
class ToySGDConfig(OptimizerConfig):
    name: ClassVar[str] = "toy-sgd"
    lr: Optional[float] = 0.5
    momentum: float = 0.5

    def _make(self, params, *, seed, process_group):
        return ToySGD(params, lr=self.resolved_lr(), momentum=self.momentum)


#: Options that make a short run use every part of the state: preconditioner refreshes (ESGD's curvature,
#: Shampoo's inverse roots, K-FAC's eigendecompositions or damped inverses) on a cadence of a few steps,
#: ESGDAdamStart's switch from Adam to ESGD, momentum buffers. Passed to each optimizer that takes them; the
#: round-trip and foreach checks use them, the learning check does not.
SHORT_RUN = {"precondition_warmup_steps": 2, "precondition_frequency": 3, "adam_steps": 3, "momentum": 0.5}

#: A value each hyperparameter must refuse, and how its error message may name it.
BAD_VALUES = {
    "lr": (-1.0, r"\blr\b|learning rate"),
    "eps": (-1.0, r"\beps\b|epsilon"),
    "weight_decay": (-1.0, r"weight_decay"),
    "momentum": (1.0, r"momentum"),
    "betas": ((0.9, 1.0), r"betas?"),
    "precondition_warmup_steps": (-1, r"precondition_warmup_steps"),
    "precondition_frequency": (0, r"precondition_frequency"),
    "statistics_frequency": (0, r"statistics_frequency"),
    "damping": (0.0, r"damping"),
    "stat_decay": (1.0, r"stat_decay"),
    "kl_clip": (-1.0, r"kl_clip"),
    "lr_warmup": (1.0, r"lr_warmup"),
    "hessian_power": (0.0, r"hessian_power"),
    "adam_steps": (-1, r"adam_steps"),
    "adam_lr": (-1.0, r"adam_lr"),
    "adam_eps": (0.0, r"adam_eps"),
}

OPTIMIZERS = tuple(REGISTERED)


def _takes(name, option):
    return option in {f.name for f in dataclasses.fields(REGISTERED[name])}


def _accepted(name, options):
    return {k: v for k, v in options.items() if _takes(name, k)}


def _build(name, params, probe_seed=0, **options):
    """``name`` over ``params`` with ``options`` (seeded probes where it draws any), in training mode."""
    opt = build_optimizer(name, params, seed=probe_seed if REGISTERED[name].curvature else None, **options)
    if has_train_eval_modes(opt):
        opt.train()
    return opt


def _image_problem(seed=0):
    """A Gaussian-activated field and a smooth 12 x 12 RGB image."""
    torch.manual_seed(seed)
    net = gaussian_mlp(3, hidden_dim=32, sigma=0.1)
    g = torch.linspace(-1, 1, 12)
    x = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    y = torch.stack(
        [0.5 + 0.4 * torch.sin(3 * x[:, 0]), 0.5 + 0.4 * torch.cos(2 * x[:, 1]), 0.5 + 0.3 * x[:, 0] * x[:, 1]], -1
    )
    return net, x, y


def test_short_run_and_bad_value_options_are_real_options():
    """Each option named above is taken by some registered optimizer (a renamed option fails here, not silently)."""
    for option in list(SHORT_RUN) + list(BAD_VALUES):
        assert any(_takes(n, option) for n in OPTIMIZERS), option
    for option in ("precondition_warmup_steps", "precondition_frequency", "statistics_frequency"):
        assert option in BAD_VALUES, option  # every cadence option's range is checked


def test_the_toy_optimizer_is_picked_up():
    assert "toy-sgd" in OPTIMIZERS


#: Optimizers whose registered lr (their sweep's winner on 3,200 steps of a 256-wide network) moves this small
#: network little in 150 steps, and the loss ratio they must reach: measured 0.90 (SOAP, 3.33e-5) and 0.85
#: (PSGD-Kron, 3.33e-5); a step that does not descend stays at or above 1.
SLOW = {"soap": 0.95, "psgd-kron": 0.95}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_learns_a_small_image(name, one_thread):
    net, x, y = _image_problem()
    opt = _build(name, net.parameters(), probe_seed=0)
    assert opt.param_groups[0]["lr"] == REGISTERED[name]().lr
    losses = train_steps(net, opt, x, y, 150)
    assert all(math.isfinite(v) for v in losses)
    # measured 0.0005 (Shampoo), 0.002-0.005 (AdaHessian (J), probe seeds 0-6), 0.015-0.04 (ESGD, AdaHessian (E),
    # K-FAC), 0.27 (Adam at its paper lr 1e-4, also ESGDAdamStart's first 800 steps), 0.46 (Muon at its constant lr
    # 6.67e-5, without its cosine schedule), 0.46 (Schedule-Free AdamW at 1.11e-4)
    assert losses[-1] < SLOW.get(name, 0.5) * losses[0]


def _dtypes(value):
    if isinstance(value, torch.Tensor):
        return value.dtype
    if isinstance(value, dict):
        return {k: _dtypes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dtypes(v) for v in value]
    return None


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_identically(name, one_thread):
    options = _accepted(name, SHORT_RUN)
    net, x, y = _image_problem()
    opt = _build(name, net.parameters(), **options)
    train_steps(net, opt, x, y, 5)
    buffer = io.BytesIO()
    torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, buffer)
    start = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(1)  # for anything drawn from the global generator
    train_steps(net, opt, x, y, 5)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # tensors and plain values only
    resumed, _, _ = _image_problem(seed=123)  # other weights, overwritten by the load
    resumed.load_state_dict(saved["net"])
    opt2 = _build(name, resumed.parameters())  # the defaults: the state brings the rest
    opt2.load_state_dict(saved["opt"])
    # torch casts floating state to the parameter's dtype on load; a statistic kept in float64 (PSGD-Kron's lower
    # bound) must come back as saved, or the resumed run drifts (by 1e-9 after 5 steps at lr 3e-4)
    assert _dtypes(opt2.state_dict()["state"]) == _dtypes(saved["opt"]["state"])
    torch.manual_seed(1)
    train_steps(resumed, opt2, x, y, 5)
    for p, q, p0 in zip(net.parameters(), resumed.parameters(), start):
        assert not torch.equal(p, p0)
        torch.testing.assert_close(q, p, rtol=0, atol=0)


FOREACH = [n for n in OPTIMIZERS if _takes(n, "foreach")]


@pytest.mark.parametrize("name", FOREACH)
def test_foreach_equals_per_tensor(name, one_thread):
    options = _accepted(name, SHORT_RUN)
    net, x, y = _image_problem()
    net2 = copy.deepcopy(net)
    start = [p.detach().clone() for p in net.parameters()]
    for model, foreach in ((net, False), (net2, True)):
        torch.manual_seed(1)  # for anything drawn from the global generator (PSGD-Kron's preconditioner probes)
        train_steps(model, _build(name, model.parameters(), foreach=foreach, **options), x, y, 8)
    for p, q, p0 in zip(net.parameters(), net2.parameters(), start):
        assert not torch.equal(p, p0)
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_every_gnerf_optimizer_with_a_multi_tensor_path_has_the_switch():
    assert set(FOREACH) >= {"adam", "esgd", "esgd-max", "esgd-adam-start", "adahessian-e", "adahessian-j", "shampoo"}


def _params():
    return [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("name,option", [(n, o) for n in OPTIMIZERS for o in BAD_VALUES if _takes(n, o)])
def test_a_bad_hyperparameter_is_refused_by_name(name, option):
    value, named = BAD_VALUES[option]
    with pytest.raises(ValueError, match=named):
        build_optimizer(name, _params(), **{option: value})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_option_it_does_not_take_is_refused_by_name(name):
    with pytest.raises(ValueError, match=re.escape(f"{name!r} does not take the option(s) no_such_option")):
        build_optimizer(name, _params(), no_such_option=1)


# torch's and other packages' optimizers check only the parameter layout of a state they load; gnerf's check
# whose state it is.
GNERF_OPTIMIZERS = [
    n for n in OPTIMIZERS if type(_build(n, [torch.nn.Parameter(torch.zeros(2, 2))])).__module__.startswith("gnerf.")
]


# The paper's optimizers and gnerf's variant (the contenders wrap other packages' optimizers).
PAPER_OPTIMIZERS = [n for n in GNERF_OPTIMIZERS if REGISTERED[n].__module__ == "gnerf.optim.configs"]


@pytest.mark.parametrize("name", PAPER_OPTIMIZERS)
def test_gnerf_optimizers_keep_torchs_schema_and_take_explicit_keywords(name, one_thread):
    net, x, y = _image_problem()
    opt = _build(name, net.parameters(), **_accepted(name, SHORT_RUN))
    train_steps(net, opt, x, y, 4)
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"}
    settings = set(REGISTERED[name]().hyperparameters())  # ema_decay is the fitting loop's: not a setting of the step
    assert settings <= set(saved["param_groups"][0]) and "ema_decay" not in settings
    assert [int(s["step"]) for s in saved["state"].values()] == [4] * len(list(net.parameters()))
    signature = inspect.signature(type(opt).__init__)
    assert not [p for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@pytest.mark.parametrize("name,saved_by", [(n, m) for n in GNERF_OPTIMIZERS for m in OPTIMIZERS if m != n])
def test_a_state_saved_by_another_optimizer_is_refused(name, saved_by):
    net = torch.nn.Linear(3, 2)
    other = _build(saved_by, net.parameters())
    train_steps(net, other, torch.rand(4, 3), torch.rand(4, 2), 1)
    opt = _build(name, net.parameters())
    if type(opt) is type(other):  # one optimizer registered twice with other settings: torch's load takes the saved
        opt.load_state_dict(other.state_dict())
        assert opt.param_groups == other.param_groups
        return
    with pytest.raises(ValueError, match=rf"{type(opt).__name__}\.load_state_dict: the state dict"):
        opt.load_state_dict(other.state_dict())
