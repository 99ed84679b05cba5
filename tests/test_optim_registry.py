"""The optimizer configs: one description per optimizer, found by name, with the paper's defaults."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

import pytest
import torch

from gnerf.optim import ESGD, OPTIMIZERS, ESGDMax, MuonAdam, OptimizerConfig, build_optimizer, register_optimizer
from gnerf.optim.configs import ESGDAdamStartConfig, ESGDConfig, optimizer_config
from gnerf.optim.schedules import ConstantSchedule, CosineSchedule, LinearSchedule
from gnerf.tasks.config import PAPER_LR_BY_ACTIVATION, task_lr


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_every_optimizer_is_registered_with_its_default_lr_and_schedule():
    assert [n for n in OPTIMIZERS if not n.startswith("toy-")] == [  # a test may register a toy
        "adam",
        "esgd",
        "esgd-max",
        "esgd-adam-start",
        "adahessian-e",
        "adahessian-j",
        "kfac",
        "kfac-adam",
        "shampoo",
        "muon",
        "adam-cosine",
        "adam-linear",
        "soap",
        "psgd-kron",
        "schedulefree-adamw",
        "muon-esgd",
        "muon-esgd-eq",
        "psgd-kron-esgd",
    ]
    lrs = {name: cls().lr for name, cls in OPTIMIZERS.items()}
    assert lrs["adam"] == 1e-4 and lrs["esgd"] == lrs["esgd-max"] == lrs["adahessian-e"] == 0.15
    assert (
        lrs["esgd-adam-start"] == 0.1 and lrs["kfac"] == lrs["shampoo"] == 0.1
    )  # gnerf's choice: docs/reproduction.md
    paper = ("adam", "esgd", "esgd-max", "esgd-adam-start", "adahessian-e", "adahessian-j", "kfac", "kfac-adam")
    for name in paper + ("shampoo",):
        assert OPTIMIZERS[name].schedule == ConstantSchedule()  # the paper trains at a constant lr
    kfac_adam = OPTIMIZERS["kfac-adam"]()  # the published code's K-FAC: KFAC(net, 0.1, 100), then Adam(lr=1e-4)
    assert (kfac_adam.lr, kfac_adam.damping, kfac_adam.factored_damping) == (1e-4, 0.1, True)
    assert (kfac_adam.stat_decay, kfac_adam.precondition_frequency) == (0.0, 1)
    for name in ("muon", "adam-cosine", "soap", "psgd-kron"):  # each contender's sweep ran with this schedule
        assert OPTIMIZERS[name].schedule == CosineSchedule(lr_final=0.0), name
    assert OPTIMIZERS["schedulefree-adamw"].schedule == ConstantSchedule()  # its averaging replaces a schedule
    assert OPTIMIZERS["adam-linear"].schedule == LinearSchedule(lr_final=0.0)  # Adam's schedule sweep chose it
    assert lrs["adam-linear"] == lrs["adam-cosine"]  # at adam-cosine's swept lr
    assert (lrs["muon"], lrs["adam-cosine"], lrs["soap"], lrs["psgd-kron"], lrs["schedulefree-adamw"]) == (
        6.67e-5,
        1e-4,
        3.33e-5,
        3.33e-5,
        1.11e-4,
    )  # the winners of their sweeps (docs/sweep.md)
    assert OPTIMIZERS["muon-esgd"].schedule == CosineSchedule(lr_final=0.0, warmup_steps=100)
    assert lrs["muon-esgd"] == 6.67e-5 and OPTIMIZERS["muon-esgd"]().esgd_lr == 0.1
    eq = OPTIMIZERS["muon-esgd-eq"]()
    assert (lrs["muon-esgd-eq"], eq.esgd_lr, eq.hidden_curvature, eq.curvature_damping) == (6.67e-5, 0.1, "after", 0.1)
    assert OPTIMIZERS["muon-esgd-eq"].schedule == OPTIMIZERS["muon-esgd"].schedule
    assert (lrs["psgd-kron-esgd"], OPTIMIZERS["psgd-kron-esgd"]().esgd_lr) == (lrs["psgd-kron"], 0.1)
    assert OPTIMIZERS["psgd-kron-esgd"].schedule == OPTIMIZERS["muon-esgd"].schedule
    assert type(build_optimizer("ESGD-Max", _params())) is ESGDMax
    assert type(build_optimizer("esgd", _params())) is ESGD


def test_the_fitting_task_picks_the_papers_lr_for_the_activation():
    assert PAPER_LR_BY_ACTIVATION == {
        ("adam", "relu"): 1e-3,
        ("kfac-adam", "relu"): 1e-3,
        ("esgd", "relu"): 0.1,
        ("shampoo", "sine"): 0.01,
    }
    assert task_lr(optimizer_config("adam", lr=None), "relu") == 1e-3
    assert task_lr(optimizer_config("adam", lr=None), "sine") == 1e-4
    assert task_lr(optimizer_config("esgd", lr=None), "relu") == 0.1
    assert task_lr(optimizer_config("esgd", lr=None), "gaussian") == 0.15
    assert task_lr(optimizer_config("esgd", lr=0.3), "relu") == 0.3  # an explicit lr always wins


def test_options_are_the_configs_fields():
    assert build_optimizer("esgd-adam-start", _params(), adam_steps=5).param_groups[0] is not None
    with pytest.raises(ValueError, match=r"'esgd-max' does not take the option\(s\) adam_steps"):
        build_optimizer("esgd-max", _params(), adam_steps=5)
    with pytest.raises(ValueError, match=r"'esgd' does not take the option\(s\) lr_warmup"):
        build_optimizer("esgd", _params(), lr_warmup=0.5)  # ESGD-Max's ramp; the published ESGD has none
    assert "lr_warmup" not in {f.name for f in dataclasses.fields(ESGDAdamStartConfig)}


def test_lr_and_options_override_the_defaults():
    opt = build_optimizer("esgd", _params(), lr=0.3, precondition_warmup_steps=7, precondition_frequency=11)
    assert opt.param_groups[0]["lr"] == 0.3
    assert ESGDConfig(lr=0.3, precondition_warmup_steps=7).hyperparameters()["precondition_warmup_steps"] == 7


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'.*adam, esgd, esgd-max"):
        build_optimizer("lbfgs", _params())


@pytest.mark.parametrize(
    "option,value",
    [
        ("lr", float("inf")),
        ("lr", 1e300 * 1e10),
        ("lr", -1.0),
        ("eps", 0.0),
        ("betas", (0.9, 1.0)),
        ("weight_decay", float("nan")),
    ],
)
def test_a_bad_value_is_refused_by_name_before_anything_is_built(option, value):
    with pytest.raises(ValueError, match=option):
        build_optimizer("esgd", _params(), **{option: value})


def test_registering_is_one_decorator_and_duplicates_are_refused(monkeypatch):
    from gnerf.optim import configs

    monkeypatch.setattr(configs, "OPTIMIZERS", dict(configs.OPTIMIZERS))

    @dataclass
    class SGDConfig(OptimizerConfig):
        name: ClassVar[str] = "sgd"
        lr: Optional[float] = 0.1

        def _make(self, params, *, seed, process_group):
            return torch.optim.SGD(params, lr=self.lr)

    configs.register_optimizer(SGDConfig)
    assert type(configs.build_optimizer("sgd", _params())) is torch.optim.SGD

    @dataclass
    class Other(SGDConfig):
        pass

    with pytest.raises(ValueError, match="already registered"):
        configs.register_optimizer(Other)
    assert register_optimizer  # the public name


def test_muon_takes_the_hidden_matrices_and_adam_the_rest():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    )
    opt = build_optimizer("muon", net.parameters())
    assert isinstance(opt, MuonAdam)
    muon, adam = opt.param_groups
    assert muon["algorithm"] == "muon" and [p.shape for p in muon["params"]] == [(8, 8), (8, 8)]
    assert adam["algorithm"] == "adam" and len(adam["params"]) == 6  # first and last weights, four biases
    assert muon["lr"] == 6.67e-5 and adam["lr"] == 1e-4
    assert muon["params"][0] is net[1].weight and muon["params"][1] is net[2].weight


def test_every_schedule_is_named_alike_by_the_fitting_commands_and_nerfstudio():
    import typing

    from gnerf.nerf.optimizers import GnerfSchedulerConfig
    from gnerf.optim.schedules import SCHEDULES, schedule_name

    kinds = typing.get_args(typing.get_type_hints(GnerfSchedulerConfig)["kind"])
    assert set(kinds) == set(SCHEDULES)
    for name, cls in SCHEDULES.items():
        built = GnerfSchedulerConfig(kind=name, lr_final=1e-3).schedule()
        assert type(built) is cls and schedule_name(built) == name


@pytest.mark.parametrize("kind", ["cosine", "exponential", "linear"])
def test_each_decaying_schedule_runs_from_the_lr_to_lr_final_after_a_warm_up(kind):
    from gnerf.optim.schedules import SCHEDULES

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = SCHEDULES[kind](lr_final=0.02, warmup_steps=3, max_steps=10).build(opt, 2.0, run_steps=100)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # the ramp, then the lr
    assert all(a > b for a, b in zip(lrs[3:13], lrs[4:14])) and lrs[13:] == pytest.approx([0.02] * 3)
    middle = {"cosine": 1.01, "exponential": 0.2, "linear": 1.01}[kind]  # halfway through the decay
    assert lrs[8] == pytest.approx(middle)
    with pytest.raises(ValueError, match="lr_final"):
        SCHEDULES[kind](lr_final=-1.0).build(opt, 2.0, run_steps=10)


def test_linear_decay_is_a_straight_line_to_zero_by_default():
    from gnerf.optim.schedules import LinearSchedule

    assert [LinearSchedule().factor(s, 1e-3, 4) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
