"""nerfstudio's VanillaPipeline, with DDP wrapping that also works for CPU (gloo) processes.

nerfstudio wraps the model as ``DDP(model, device_ids=[local_rank])``, which torch refuses for a
model on the CPU; this pipeline passes ``device_ids`` only for CUDA models and is otherwise the
same (``find_unused_parameters=True``, because nerfstudio models hold an unused device-indicator
parameter). It is what lets the curvature trainer be tested with two CPU processes.

It also keeps, when asked (``record_train_batch``), the last training batch and the random state
its forward pass started from, so that the trainer can evaluate the same loss again as a function
of the weights (forward-over-reverse Hessian-vector products).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple, Type

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig


@dataclass
class GNerfPipelineConfig(VanillaPipelineConfig):
    """VanillaPipelineConfig whose pipeline also runs data-parallel on CPU processes."""

    _target: Type = field(default_factory=lambda: GNerfPipeline)


class GNerfPipeline(VanillaPipeline):
    """VanillaPipeline with device-aware DDP wrapping and an optional record of the last training batch."""

    record_train_batch: bool = False
    """Set by the trainer before a step that needs :attr:`last_train_batch`."""
    last_train_batch: Optional[Tuple[RayBundle, Dict[str, Any], Tuple[torch.Tensor, Optional[torch.Tensor]]]] = None
    """``(ray_bundle, batch, (cpu_rng_state, cuda_rng_state))`` of the last recorded training step."""

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
        super().__init__(config, device, test_mode=test_mode, world_size=1, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        self.world_size = world_size
        if world_size > 1:
            on_gpu = next(self._model.parameters()).is_cuda
            self._model = typing.cast(Model, DistributedDataParallel(
                self._model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True))
            dist.barrier(device_ids=[local_rank] if on_gpu else None)  # NCCL: this rank's GPU, not GPU 0

    def get_train_loss_dict(self, step: int):
        if not self.record_train_batch:
            return super().get_train_loss_dict(step)
        ray_bundle, batch = self.datamanager.next_train(step)
        device = self.model.device
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.last_train_batch = (ray_bundle, batch, (torch.get_rng_state(), cuda))
        model_outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        return model_outputs, loss_dict, metrics_dict
