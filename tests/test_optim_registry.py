import pytest
import torch

from gnerf.optim import ESGD, ESGDMax
from gnerf.optim.registry import (
    OPTIMIZERS,
    build_optimizer,
    default_lr,
    get_optimizer_spec,
    register_optimizer,
    registered_optimizers,
)


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_every_gnerf_optimizer_is_registered_with_the_paper_learning_rates():
    assert OPTIMIZERS == ("adam", "esgd", "esgd-max", "esgd-adam-start", "adahessian-e", "adahessian-j", "kfac", "shampoo")
    assert default_lr("adam", "gaussian") == 1e-4
    assert default_lr("adam", "sine") == 1e-4
    assert default_lr("adam", "relu") == 1e-3
    assert default_lr("esgd", "relu") == 0.1  # the published ReLU + PE configuration
    assert default_lr("esgd", "gaussian") == 0.15
    assert default_lr("esgd-adam-start", "gaussian") == 0.1  # gnerf's choice (docs/reproduction.md)
    assert default_lr("shampoo", "gaussian") == 0.1 and default_lr("shampoo", "sine") == 0.01
    assert default_lr("kfac", "gaussian") == 0.1 and default_lr("adahessian-e", "gaussian") == 0.15
    opt = build_optimizer("ESGD-Max", _params(), activation="gaussian")
    assert type(opt) is ESGDMax and opt.param_groups[0]["lr"] == 0.15
    assert type(build_optimizer("esgd", _params())) is ESGD
    adam = build_optimizer("adam", _params(), activation="relu")
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3


def test_options_are_checked_through_subclasses():
    from gnerf.optim import ESGDAdamStart

    assert build_optimizer("esgd-adam-start", _params(), adam_steps=5).adam_steps == 5
    assert type(build_optimizer("esgd-adam-start", _params(), lr_warmup=0.0)) is ESGDAdamStart  # ESGD's keyword
    with pytest.raises(ValueError, match="does not take the option"):
        build_optimizer("esgd-max", _params(), adam_steps=5)  # ESGDMax(**kwargs) -> ESGD has no adam_steps
    with pytest.raises(ValueError, match="does not take the option"):
        build_optimizer("esgd", _params(), adam_steps=5)


def test_lr_and_options_override_the_defaults():
    opt = build_optimizer("esgd", _params(), lr=0.3, precondition_warmup_steps=7, precondition_frequency=11)
    assert opt.param_groups[0]["lr"] == 0.3 and opt.precondition_warmup_steps == 7 and opt.precondition_frequency == 11


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'.*adam, esgd, esgd-max"):
        build_optimizer("lbfgs", _params())


def test_registering_is_one_call_and_duplicates_are_refused(monkeypatch):
    from gnerf.optim import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_optimizer("sgd", torch.optim.SGD, lr=0.1, lr_by_activation={"sine": 0.01})
    assert "sgd" in registered_optimizers()
    assert build_optimizer("sgd", _params(), activation="sine").param_groups[0]["lr"] == 0.01
    assert get_optimizer_spec("SGD").factory is torch.optim.SGD
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("sgd", torch.optim.SGD, lr=0.1)
