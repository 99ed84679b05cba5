"""The nerfstudio plugin's curvature trainer with two CPU processes (gloo): ranks stay identical.

``ns-train --machine.num-devices N`` itself needs CUDA (nerfstudio's launcher asserts it), so this
drives the same Trainer / Pipeline / DDP code in two processes spawned here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gnerf.scenes.procedural import make_blender_scene

from dist_helpers import run_on_ranks
from helpers_tasks import esgd_counters
from nerf_helpers import tiny_config

STEPS = 10  # curvature on steps 0, 1, 2 (warm-up) and 6


def _worker(rank: int, scene: str, out: str) -> None:
    from nerfstudio.scripts.train import _set_random_seed

    cfg = tiny_config("gaussian-nerf-esgd", Path(scene), Path(out) / "run", iterations=STEPS)
    _set_random_seed(cfg.machine.seed + rank)  # as ns-train seeds each rank
    trainer = cfg.setup(local_rank=rank, world_size=2)
    trainer.setup()
    losses = [float(trainer.train_iteration(step)[0]) for step in range(STEPS)]
    opt = trainer.optimizers.optimizers["fields"]
    torch.save(
        {
            "params": {k: v.detach().clone() for k, v in trainer.pipeline.model.named_parameters()},
            "curvature": [opt.state[p]["curvature"].clone() for p in trainer.optimizers.parameters["fields"]],
            "counters": esgd_counters(opt),
            "losses": losses,
            "wrapped": type(trainer.pipeline._model).__name__,
        },
        Path(out) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    scene = make_blender_scene(
        tmp_path_factory.mktemp("scenes") / "procedural", image_size=24, num_train=8, num_val=2, num_test=3
    )
    out = tmp_path_factory.mktemp("ddp")
    run_on_ranks(_worker, str(scene), str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_curvature_trainer_keeps_ddp_ranks_identical(ranks):
    a, b = ranks
    assert a["wrapped"] == "DistributedDataParallel"
    assert a["counters"] == b["counters"] == {(STEPS, 4)}
    # each rank trained on its own rays ...
    assert a["losses"] != b["losses"]
    # ... yet every step left the same parameters and curvature state on both
    for k, v in a["params"].items():
        assert torch.equal(v, b["params"][k]), k
    for u, v in zip(a["curvature"], b["curvature"]):
        assert torch.equal(u, v)
        assert u.abs().sum() > 0
