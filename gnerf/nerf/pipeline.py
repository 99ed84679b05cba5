"""nerfstudio's VanillaPipeline, with DDP wrapping that also works for CPU (gloo) processes.

nerfstudio wraps the model as ``DDP(model, device_ids=[local_rank])``, which torch refuses for a
model on the CPU; this pipeline passes ``device_ids`` only for CUDA models and is otherwise the
same (``find_unused_parameters=True``, because nerfstudio models hold an unused device-indicator
parameter). It is what lets the curvature trainer be tested with two CPU processes.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal, Optional, Type

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig


@dataclass
class GNerfPipelineConfig(VanillaPipelineConfig):
    """VanillaPipelineConfig whose pipeline also runs data-parallel on CPU processes."""

    _target: Type = field(default_factory=lambda: GNerfPipeline)


class GNerfPipeline(VanillaPipeline):
    """VanillaPipeline with device-aware DDP wrapping."""

    def __init__(
        self,
        config: VanillaPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[torch.cuda.amp.GradScaler] = None,
    ) -> None:
        # Build everything as one process, then wrap the model ourselves. (The datamanager only
        # sizes its evaluation dataloader workers by world_size; each rank samples its own rays.)
        super().__init__(
            config, device, test_mode=test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler
        )
        self.world_size = world_size
        if world_size > 1:
            on_gpu = next(self._model.parameters()).is_cuda
            self._model = typing.cast(
                Model,
                DistributedDataParallel(
                    self._model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True
                ),
            )
            dist.barrier(device_ids=[local_rank] if on_gpu else None)  # NCCL: this rank's GPU, not GPU 0
