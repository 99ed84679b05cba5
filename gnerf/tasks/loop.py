"""The one fitting loop shared by the image, occupancy and video tasks.

A task turns its input into a :class:`~gnerf.tasks.config.Problem` (coordinates and targets held
on the device, a loss and an evaluation), takes its run from :func:`gnerf.tasks.run.prepare_run`
and calls :func:`fit`, which owns everything else: the field and optimizer (:mod:`gnerf.tasks.build`),
shuffled minibatches, the curvature protocol (:func:`gnerf.optim.step.take_step`),
the NaN check, the per-epoch metrics files and tensorboard scalars (:mod:`gnerf.tasks.metrics_log`),
the progress bar and the checkpoint that ``--resume`` continues from
(:mod:`gnerf.tasks.checkpoint`).

Launched by ``torchrun`` (see :mod:`gnerf.tasks.dist`), the loop trains a
``DistributedDataParallel`` model: every rank takes its share of each minibatch, weighted so that
the averaged gradient is the whole minibatch's; curvature steps skip DDP's all-reduce and let the
optimizer average gradients and Hessian-vector products in one (:mod:`gnerf.optim.distributed`).
Rank 0 alone evaluates and writes the run folder.

Output folder layout (``FitConfig.output_dir``)::

    config.json        the resolved configuration, and the gnerf run marker: the task and its input files' SHA-256
    metrics.csv        one row per epoch: epoch, iteration, wall_time, loss, <task metrics>
    metrics.jsonl      the same rows as JSON lines
    checkpoint.pt      model, optimizer, RNG states, counters (and --optim.ema-decay's EMA) after the last epoch
    checkpoint.prev.pt the checkpoint of the epoch before, which --resume falls back to
    .lock              held (``flock``) by the run that uses the folder; holds its process id
    tensorboard/       the same scalars as event files (x axis: iteration)
    <reconstructions>  written by the task after training
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from gnerf.errors import InputError, Interrupted, NonFiniteLossError, Retry
from gnerf.files import atomic_write_json
from gnerf.optim.averaging import weight_average
from gnerf.optim.contenders import has_train_eval_modes
from gnerf.optim.step import take_step
from gnerf.tasks import dist as gdist
from gnerf.tasks.build import build_field, build_run_optimizer, schedule_for, stream_seeds
from gnerf.tasks.checkpoint import Progress, holds_checkpoint, restore, save_checkpoint
from gnerf.tasks.config import FitConfig, FitResult, Problem, config_to_dict, task_lr
from gnerf.tasks.metrics_log import MetricsLog
from gnerf.tasks.run import RUN_MARKER, Run, RunFolderError, clear_unfinished_run

__all__ = ["fit"]


def fit(problem: Problem, run: Run) -> FitResult:
    """Train a field on ``problem`` as ``run.cfg`` says, writing metrics and checkpoints to ``run.output_dir``.

    The configuration (written to ``config.json``) must, on resume, match the saved one except
    for :data:`~gnerf.tasks.checkpoint.RESUMABLE_CHANGES`.

    Raises:
        RunFolderError: the run folder already holds a run and ``cfg.resume`` is False, or it cannot be
            written after an epoch.
        InputError: ``cfg.resume`` without a checkpoint in the run folder, resuming with a different
            configuration or fewer epochs than were trained, an unreadable checkpoint (when
            ``checkpoint.prev.pt`` is unreadable too), or an empty training set.
        NonFiniteLossError: the training loss became NaN or infinite.
        Interrupted: Ctrl-C; the message says which checkpoint is kept.

    A fresh run that stops before its first checkpoint removes the files it wrote (nothing to continue from).
    """
    cfg, out, device = run.cfg, run.output_dir, run.device
    config = config_to_dict(cfg)
    if problem.inputs.shape[0] == 0:
        raise InputError("the training set is empty")

    torch.manual_seed(cfg.seed)
    model = build_field(cfg.field, problem.inputs.shape[1], problem.targets.shape[1], problem.sigma).to(device)
    optimizer = build_run_optimizer(cfg, model, _steps_per_epoch(problem, cfg))
    modes = has_train_eval_modes(optimizer)  # Schedule-Free: train() to step, eval() for its averaged weights
    average = weight_average(model, cfg.optim.ema_decay)  # --optim.ema-decay: the weights evaluated (None: the model's)
    shuffle = torch.Generator().manual_seed(stream_seeds(cfg.seed)[0])
    if cfg.resume:
        progress = restore(
            out, cfg.epochs, config, model, optimizer, shuffle, device, run.inputs, cfg.allow_changed_optim, average
        )
    elif holds_checkpoint(out):
        raise RunFolderError(
            f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --output-dir"
        )
    else:
        progress = Progress()
    scheduler = schedule_for(cfg, optimizer, _steps_per_epoch(problem, cfg), progress.iteration)

    # torchrun: every rank has checked the folder before the DDP constructor's collective, so rank 0
    # cannot have written to it yet.
    train_model = _data_parallel(model, cfg.batch_size, device)
    main = gdist.rank() == 0
    training = _Training(
        problem, run, config, model, train_model, optimizer, scheduler, modes, shuffle, progress, average
    )
    training.train()
    model = training.evaluated
    model.eval()
    if modes:
        optimizer.eval()  # the reconstruction and the returned model use the averaged weights
    if main and progress.history:
        last = progress.history[-1]
        shown = "  ".join(
            f"{k} {v:.4g}" for k, v in last.items() if k not in ("epoch", "iteration", "wall_time", "loss")
        )
        print(f"final (epoch {int(last['epoch'])}): {shown}", flush=True)
    return FitResult(model=model, history=progress.history, output_dir=out, device=device, is_main=main)


def _forget_unsaved(run: Run, progress: Progress) -> None:
    """A fresh run that stops before its first checkpoint removes what it wrote: there is nothing to continue."""
    if progress.epoch == 0 and not run.cfg.resume and gdist.rank() == 0:
        clear_unfinished_run(run.output_dir)


def _interrupted(run: Run, progress: Progress, epoch: int) -> Interrupted:
    """The :class:`Interrupted` of Ctrl-C in ``epoch``: what was kept and how to continue."""
    if epoch > progress.epoch:
        where = f"in epoch {epoch}"
    else:  # between epochs, or after the last
        where = f"after epoch {progress.epoch}" if progress.epoch < run.cfg.epochs else "after training"
    if progress.epoch == 0:
        what = f"interrupted (Ctrl-C) {where}, before the first checkpoint: nothing was kept"
        return Interrupted(f"{what}; run the same command again to start over", Retry(str(run.output_dir), 0), what)
    retry = Retry(str(run.output_dir), progress.epoch)
    what = (
        f"interrupted (Ctrl-C) {where}; the run folder {str(run.output_dir)!r} keeps the checkpoint of epoch "
        f"{progress.epoch}"
    )
    return Interrupted(f"{what}: to continue, {retry.options()}", retry, what)


def _steps_per_epoch(problem: Problem, cfg: FitConfig) -> int:
    return math.ceil(problem.inputs.shape[0] / cfg.batch_size)


def _data_parallel(model: nn.Module, batch_size: int, device: torch.device) -> nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` under torchrun, else ``model`` itself."""
    world = gdist.world_size()
    if world == 1:
        return model
    if batch_size < world:
        raise InputError(
            f"--batch-size {batch_size} is smaller than the {world} processes torchrun started; "
            "every process needs at least one coordinate per step"
        )
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _step(
    problem: Problem, train_model: nn.Module, optimizer: torch.optim.Optimizer, local: Tensor, weight: float
) -> Tensor:
    """One training step on this rank's rows ``local`` of a minibatch, its loss scaled by ``weight``; the loss."""

    def local_loss(create_graph: bool) -> Tensor:
        pred = train_model(problem.inputs[local])
        return problem.loss_fn(pred, problem.targets[local]) if local.numel() else pred.sum()

    loss, _ = take_step(
        optimizer,
        local_loss,
        model=train_model,
        backward=lambda v, graph: (v * weight if weight != 1.0 else v).backward(create_graph=graph),
    )
    optimizer.zero_grad(set_to_none=True)
    return loss


@dataclass
class _Training:
    """What the epochs of one :func:`fit` share; :meth:`epoch` trains, evaluates and saves one epoch."""

    problem: Problem
    run: Run
    config: Dict[str, Any]
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    modes: bool
    shuffle: torch.Generator
    progress: Progress
    average: Optional[AveragedModel] = None
    """The EMA of the weights (:func:`~gnerf.optim.averaging.weight_average`) that is evaluated, if any."""
    log: Optional[MetricsLog] = None
    bar: Any = None

    @property
    def evaluated(self) -> nn.Module:
        """The model whose weights are evaluated and written out: the EMA's when there is one."""
        return self.average.module if self.average is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return _steps_per_epoch(self.problem, self.run.cfg)

    def train(self) -> None:
        """Write ``config.json`` (rank 0) and train the epochs left; a fresh run that stops before its first
        checkpoint removes what it wrote, and Ctrl-C becomes :class:`~gnerf.errors.Interrupted`."""
        cfg, out, progress = self.run.cfg, self.run.output_dir, self.progress
        main, epoch = gdist.rank() == 0, progress.epoch
        try:
            if main:
                try:
                    out.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(
                        out / "config.json",
                        {**self.config, RUN_MARKER: {"task": self.run.task, "inputs": self.run.inputs}},
                    )
                except OSError as err:
                    raise RunFolderError(
                        f"cannot write to the run folder {str(out)!r} ({err.strerror or err}); free "
                        "disk space or choose another --output-dir"
                    ) from None
            from tqdm.auto import tqdm

            total = cfg.epochs * self.steps_per_epoch
            self.log = (
                MetricsLog(out, progress.history, purge_step=progress.iteration + 1 if cfg.resume else None)
                if main
                else None
            )
            self.bar = tqdm(
                total=total,
                initial=min(progress.iteration, total),
                disable=not (cfg.progress and main),
                unit="step",
                dynamic_ncols=True,
            )
            try:
                for epoch in range(progress.epoch + 1, cfg.epochs + 1):
                    self.epoch(epoch)
            finally:
                self.bar.close()
                if self.log is not None:
                    self.log.close()
        except KeyboardInterrupt:
            _forget_unsaved(self.run, progress)
            raise _interrupted(self.run, progress, epoch) from None
        except BaseException:
            _forget_unsaved(self.run, progress)
            raise

    def epoch(self, epoch: int) -> None:
        """Train epoch ``epoch`` (every rank), then evaluate it and write its row and checkpoint (rank 0)."""
        cfg, device, progress = self.run.cfg, self.run.device, self.progress
        world, rank = gdist.world_size(), gdist.rank()
        self.model.train()
        if self.modes:
            self.optimizer.train()
        t0 = time.perf_counter()
        perm = torch.randperm(self.problem.inputs.shape[0], generator=self.shuffle).to(device)
        epoch_sum = torch.zeros((), device=device, dtype=torch.float64)
        window_sum = torch.zeros((), device=device, dtype=torch.float64)
        window = 0
        for i in range(self.steps_per_epoch):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            # this rank's share, weighted so that the ranks' mean gradient is the whole minibatch's
            local = idx.tensor_split(world)[rank] if world > 1 else idx
            weight = local.numel() * world / idx.numel()
            loss = _step(self.problem, self.train_model, self.optimizer, local, weight)
            if self.average is not None:
                self.average.update_parameters(self.model)
            self.scheduler.step()
            progress.iteration += 1
            window += 1
            detached = loss.detach().double()
            epoch_sum += detached * local.numel()
            window_sum += detached * weight
            if window == cfg.log_every or i == self.steps_per_epoch - 1:
                self._report_window(epoch, window_sum, window)
                window_sum.zero_()
                window = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        progress.wall_time += time.perf_counter() - t0
        if world > 1:
            torch.distributed.all_reduce(epoch_sum)
        if rank == 0:
            self._finish_epoch(epoch, epoch_sum.item() / self.problem.inputs.shape[0])
        else:  # rank 0 saved it: the other ranks' messages name the same checkpoint
            progress.epoch = epoch

    def _report_window(self, epoch: int, window_sum: Tensor, window: int) -> None:
        """Check the mean loss of the last ``window`` steps for NaN, and show and log it."""
        world, iteration = gdist.world_size(), self.progress.iteration
        if world > 1:  # every rank sees the same mean, so a NaN stops all of them together
            torch.distributed.all_reduce(window_sum)
            window_sum /= world
        mean = window_sum.item() / window
        if not math.isfinite(mean):
            cfg, lr = self.run.cfg, self.optimizer.param_groups[0]["lr"]
            retry = Retry(
                str(self.run.output_dir),
                self.progress.epoch,
                cfg.optim.name,
                task_lr(cfg.optim, cfg.field.activation) / 10,
            )
            what = (
                f"the training loss became {mean} in epoch {epoch} between iterations "
                f"{iteration - window + 1} and {iteration} (optim:{cfg.optim.name}, lr {lr:g})"
            )
            kept = f"the checkpoint of epoch {retry.saved_epoch} is kept" if retry.saved_epoch else "no epoch was saved"
            raise NonFiniteLossError(
                f"{what}; {kept}: with a 10x lower lr, {retry.options()}; or check the input data", retry, what
            )
        if self.log is not None:
            self.log.scalar("train/loss", mean, iteration)
        self.bar.set_postfix(epoch=epoch, loss=f"{mean:.3g}", refresh=False)
        self.bar.update(window)

    def _finish_epoch(self, epoch: int, loss: float) -> None:
        """Evaluate, then append the epoch's row to the metrics files and write the checkpoint (rank 0)."""
        progress, out = self.progress, self.run.output_dir
        self.evaluated.eval()
        if self.modes:
            self.optimizer.eval()
        with torch.no_grad():
            metrics = self.problem.evaluate(self.evaluated)
        if self.modes:  # the checkpoint holds the training weights, so that --resume continues exactly
            self.optimizer.train()
        row = {"epoch": epoch, "iteration": progress.iteration, "wall_time": progress.wall_time, "loss": loss}
        row.update({k: float(v) for k, v in metrics.items()})
        try:
            self.log.add(row)
            progress.history.append(row)
            progress.epoch = epoch
            try:
                save_checkpoint(
                    out,
                    progress,
                    self.config,
                    self.model,
                    self.optimizer,
                    self.shuffle,
                    self.run.device,
                    self.run.inputs,
                    self.average,
                )
            except BaseException:  # checkpoint.pt still holds the epoch before: say so if this ends the run
                progress.epoch, progress.history = epoch - 1, progress.history[:-1]
                raise
        except OSError as err:  # disk full, folder removed or made read-only during the run
            raise RunFolderError(
                f"cannot write to the run folder {str(out)!r} after epoch {epoch} "
                f"({err.strerror or err}); free disk space or fix the folder, then --resume "
                "from the last complete checkpoint"
            ) from None
        self.bar.write("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
