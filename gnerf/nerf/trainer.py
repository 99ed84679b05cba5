"""A nerfstudio Trainer that follows gnerf's curvature protocol.

nerfstudio's ``Trainer.train_iteration`` is the only place that calls ``backward()``. This
subclass takes its steps through :func:`gnerf.optim.step.take_step`, which builds the graph exactly
on the steps where one of the stepping optimizers takes a curvature step and releases it after the
step; the grad scaler and gradient accumulation of nerfstudio stay as they are. It also stops on a
non-finite loss (checked on the device each step; read back only on log steps, curvature steps and
before a checkpoint, so plain steps add no synchronisation), and writes checkpoints atomically.

With ``--machine.num-devices N`` (nerfstudio's DistributedDataParallel), a curvature step runs its
forward and backward under ``no_sync()``: DDP cannot differentiate through its gradient hooks, so
the curvature optimizer averages gradients and Hessian-vector products itself in one all-reduce
(:mod:`gnerf.optim.distributed`). Plain steps are DDP's usual steps. The NaN check averages its
flag over the ranks, so every rank stops at the same step with the same message.

Bad input (a missing or malformed scene, an option out of range, an output folder that cannot be
written or that another run holds, an unreadable ``--load-dir`` checkpoint, no CUDA device for
``--machine.device-type cuda``) raises :class:`~gnerf.errors.InputError` where it is detected (the checks are
in :mod:`gnerf.nerf.checks`), and a non-finite loss :class:`~gnerf.errors.NonFiniteLossError`; ``ns-train``
reports these as one ``error:`` line (:func:`ns_train_entry`). A start that fails removes the run
folder it made. Every other exception keeps its traceback. The run folder is locked from ``save_config``
to the end of ``train`` (:func:`gnerf.nerf.checks.hold_run_folder`), and training prints each known
deprecation warning of the libraries below it once (:func:`gnerf.quiet.upstream_warnings_once`).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Type, TypeVar

import torch

from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import TRAIN_INTERATION_OUTPUT, Trainer, TrainerConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from gnerf.errors import InputError, NonFiniteLossError, exit_with_error
from gnerf.files import LOCK, atomic_save_torch, load_error_reason, remove_if_unused
from gnerf.nerf import checks
from gnerf.nerf.optimizers import GnerfSchedulerConfig
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.distributed import is_distributed
from gnerf.optim.step import take_step
from gnerf.quiet import upstream_warnings_once

T = TypeVar("T")


#: nerfstudio's ns-train script: its ``main`` calls ``config.save_config()``, its ``train_loop`` ``trainer.setup()``
#: and ``trainer.train()``.
NS_TRAIN_SCRIPT = "nerfstudio.scripts.train"
#: nerfstudio's loading of a trained run (``eval_setup``, which ``ns-eval``, ``ns-render``, ``ns-viewer`` and
#: ``ns-export`` call): it asks the run's config for its checkpoint folder, then loads the latest checkpoint there.
NS_EVAL_SETUP = "nerfstudio.utils.eval_utils"


def ns_train_entry(method: Callable[..., T]) -> Callable[..., T]:
    """Mark ``method`` as one of the calls through which ``ns-train`` enters gnerf.

    nerfstudio's train script has no error handling, and these calls are the outermost gnerf frames of an
    ``ns-train`` process. Called from that script, ``method`` reports an :class:`InputError` as one ``error:``
    line and exit status 1 (:func:`~gnerf.errors.exit_with_error`); called from anywhere else (tests,
    benchmarks, a notebook) it raises it. Every other exception passes unchanged, with its traceback. This is
    the narrowest scope that sees both nerfstudio's script and gnerf's errors: no ``sys.excepthook`` is set.
    """

    @functools.wraps(method)
    def entry(*args, **kwargs) -> T:
        if sys._getframe(1).f_globals.get("__name__") != NS_TRAIN_SCRIPT:
            return method(*args, **kwargs)
        try:
            return method(*args, **kwargs)
        except InputError as err:
            exit_with_error(err)

    return entry


def default_device_type() -> str:
    """``cuda`` when torch sees a CUDA device, else ``cpu`` (the methods' default ``--machine.device-type``)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class CurvatureTrainerConfig(TrainerConfig):
    """TrainerConfig for methods whose optimizers may need Hessian-vector products."""

    _target: Type = field(default_factory=lambda: CurvatureTrainer)

    def set_experiment_name(self) -> None:
        """Name the run after the scene folder, also when ``--data`` was given to the dataparser."""
        if self.experiment_name is None and self.pipeline.datamanager.data is None:
            data = getattr(self.pipeline.datamanager.dataparser, "data", None)
            if data is not None:
                data = Path(data)
                self.experiment_name = (data.parent if data.is_file() else data).name or None
        super().set_experiment_name()

    def get_checkpoint_dir(self) -> Path:
        """nerfstudio's; when nerfstudio's ``eval_setup`` asks (``ns-eval``, ``ns-render``, ``ns-viewer``,
        ``ns-export`` on this run's ``config.yml``), the folder is first checked to hold a checkpoint it can load
        (:func:`gnerf.nerf.checks.check_saved_checkpoint`), else the process ends with one ``error:`` line: that
        code fails on an empty folder with an ``IndexError``. ``eval_setup`` has no gnerf frame above it, so this
        is the one place gnerf sees its call."""
        folder = super().get_checkpoint_dir()
        if sys._getframe(1).f_globals.get("__name__") == NS_EVAL_SETUP:
            try:
                checks.check_saved_checkpoint(folder, self.load_step)
            except InputError as err:
                exit_with_error(err)
        return folder

    @ns_train_entry
    def save_config(self) -> None:
        """Check the options and the device, lock the run folder and write ``config.yml`` (the first call of
        ``ns-train`` into gnerf)."""
        checks.check_options(self)
        if self.machine.device_type == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "--machine.device-type cuda, but torch sees no CUDA device: pass --machine.device-type cpu"
            )
        if self.machine.device_type == "cpu" and not torch.cuda.is_available():
            CONSOLE.print("gnerf: no CUDA device, training on the CPU (--machine.device-type cpu)")
        base_dir = self.get_base_dir()
        checks.hold_run_folder(base_dir)
        try:
            checks.check_not_an_earlier_run(base_dir, self.load_dir, self.load_checkpoint)
            super().save_config()
        except InputError:
            checks.release_run_folder(base_dir)
            raise
        except OSError as err:
            checks.release_run_folder(base_dir, remove_if_empty=True)
            raise InputError(
                f"cannot write the run folder {base_dir}: {err.strerror or err}; choose another --output-dir"
            ) from None


class CurvatureTrainer(Trainer):
    """Trainer that builds the autograd graph only on curvature steps."""

    config: CurvatureTrainerConfig
    _loss_finite: Optional[torch.Tensor] = None  # on the device: every loss since the last check was finite
    _last_finite_check: Optional[int] = None

    @ns_train_entry
    def setup(self, test_mode="val") -> None:
        """nerfstudio's setup, after checking that the scene exists; a failed setup removes the run folder it left
        unused (``config.yml`` alone) and raises its error unchanged."""
        try:
            self._check_scene(test_mode)
            with upstream_warnings_once():
                super().setup(test_mode=test_mode)
        except BaseException:
            if self.local_rank == 0:  # leave nothing behind
                remove_if_unused(self.base_dir, {"config.yml", LOCK}, self.config.output_dir)
                checks.release_run_folder(self.base_dir)
            raise

    def _check_scene(self, test_mode: str) -> None:
        """Raise :class:`InputError` if the scene the dataparser is about to read for ``test_mode`` is missing or
        malformed (:func:`gnerf.nerf.checks.check_scene`)."""
        datamanager = self.config.pipeline.datamanager
        data = datamanager.data if datamanager.data is not None else getattr(datamanager.dataparser, "data", None)
        checks.check_scene(data, datamanager.dataparser, test_mode)

    @ns_train_entry
    def train(self) -> None:
        """nerfstudio's training loop (the last call of ``ns-train`` into gnerf), printing each known upstream
        deprecation warning once; releases the run folder at the end."""
        try:
            with upstream_warnings_once():
                super().train()
        finally:
            if self.local_rank == 0:
                checks.release_run_folder(self.base_dir)

    def _load_checkpoint(self) -> None:
        """nerfstudio's ``--load-dir`` / ``--load-checkpoint``, with the checkpoint read safely
        (``weights_only=True``) and every way it can fail named in one :class:`InputError`."""
        config = self.config
        if config.load_dir is None and config.load_checkpoint is None:
            super()._load_checkpoint()  # says that training starts from scratch
            return
        path = checks.checkpoint_to_load(config.load_dir, config.load_step, config.load_checkpoint)
        state = checks.read_checkpoint(path)
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
            self.optimizers.load_optimizers(state["optimizers"])
            if "schedulers" in state and config.load_scheduler:
                self.optimizers.load_schedulers(state["schedulers"])
            self.grad_scaler.load_state_dict(state["scalers"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            raise InputError(
                f"the checkpoint {path} does not fit this model ({load_error_reason(err)}): load it with the "
                "options of the run that wrote it (ns-train --load-config its config.yml)"
            ) from None
        self._start_step = int(state["step"]) + 1
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}")

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers, with the schedules of forward-facing scenes; refuses curvature optimizers with
        mixed precision, the grad scaler or gradient accumulation."""
        config = dict(self.config.optimizers)
        # The one scene-dependent setting: on a scene the dataparser marks forward-facing, a GnerfSchedulerConfig's
        # lr_final_forward_facing replaces its lr_final (the paper decays ESGD-Max 1 -> 0.01 on LLFF / BLEFF, 1 -> 0.1
        # on Blender). Only the dataparser's outputs say whether a scene is forward-facing (the flag that the model's
        # sampling="auto" reads too), and they exist from here on, so the choice is made here, and said.
        if self._forward_facing():
            for name, group in config.items():
                sched = group.get("scheduler")
                if isinstance(sched, GnerfSchedulerConfig) and sched.for_forward_facing() is not sched:
                    config[name] = {**group, "scheduler": sched.for_forward_facing()}
                    CONSOLE.print(
                        f"gnerf: forward-facing scene: the {name} schedule decays to lr_final "
                        f"{sched.lr_final_forward_facing} (its lr_final_forward_facing)"
                    )
        optimizers = Optimizers(config, self.pipeline.get_param_groups())
        curvature = [name for name, opt in optimizers.optimizers.items() if needs_hessian_vector_products(opt)]
        if curvature:
            if self.mixed_precision or self.use_grad_scaler:
                raise InputError(
                    f"param group(s) {curvature} use a curvature optimizer, whose Hessian-vector products need "
                    "float32 gradients with an intact graph: run without --mixed-precision and --use-grad-scaler "
                    "(or give those groups a first-order optimizer)."
                )
            accumulating = [n for n in curvature if self.gradient_accumulation_steps[n] != 1]
            if accumulating:
                raise InputError(
                    f"param group(s) {accumulating} use a curvature optimizer, which does not support "
                    "gradient accumulation: remove them from --gradient-accumulation-steps."
                )
        return optimizers

    def _forward_facing(self) -> bool:
        outputs = getattr(self.pipeline.datamanager, "train_dataparser_outputs", None)
        return bool(outputs is not None and (outputs.metadata or {}).get("forward_facing", False))

    # nerfstudio's Trainer.train_iteration (1.1.5), with its profiler decorator, but for two things: the backward
    # pass and the optimizers' steps go through take_step (the graph is built only on curvature steps, whose
    # optimizers step there and release it; first-order optimizers step through optimizer_scaler_step_some, as
    # upstream), and the loss is checked for NaN (_note_loss). Upstream's cannot be called instead: its backward
    # pass is inline. The rest (accumulation, autocast, --log-gradients, grad scaler, schedulers) is upstream's.
    @profiler.time_function
    def train_iteration(self, step: int) -> TRAIN_INTERATION_OUTPUT:
        """One step: nerfstudio's, with gnerf's curvature protocol and NaN check (see the comment above)."""
        groups = list(self.optimizers.parameters.keys())
        accumulation = self.gradient_accumulation_steps
        self.optimizers.zero_grad_some([g for g in groups if step % accumulation[g] == 0])
        needs_step = [g for g in groups if step % accumulation[g] == accumulation[g] - 1]
        stepping = [self.optimizers.optimizers[g] for g in needs_step]
        name_of = {id(o): g for g, o in zip(needs_step, stepping)}
        device_type = self.device.split(":")[0]
        device_type = "cpu" if device_type == "mps" else device_type
        dicts = {}

        def forward(create_graph: bool) -> torch.Tensor:
            with torch.autocast(device_type=device_type, enabled=self.mixed_precision):
                _, dicts["loss"], dicts["metrics"] = self.pipeline.get_train_loss_dict(step=step)
                loss = functools.reduce(torch.add, dicts["loss"].values())
            self._note_loss(step, loss, dicts["loss"], create_graph)
            return loss

        loss, _ = take_step(
            stepping,
            forward,
            model=getattr(self.pipeline, "_model", self.pipeline),
            backward=lambda value, graph: self.grad_scaler.scale(value).backward(create_graph=graph),
            step=lambda plain: self.optimizers.optimizer_scaler_step_some(
                self.grad_scaler, [name_of[id(o)] for o in plain]
            ),
        )
        loss_dict, metrics_dict = dicts["loss"], dicts["metrics"]

        if self.config.log_gradients:
            total = 0.0
            for tag, value in self.pipeline.model.named_parameters():
                if value.grad is not None:
                    grad = value.grad.detach().norm()
                    metrics_dict[f"Gradients/{tag}"] = grad
                    total += grad
            metrics_dict["Gradients/Total"] = total

        scale = self.grad_scaler.get_scale()
        self.grad_scaler.update()
        if scale <= self.grad_scaler.get_scale():
            self.optimizers.scheduler_step_all(step)
        return loss, loss_dict, metrics_dict

    def _note_loss(self, step: int, loss: torch.Tensor, loss_dict, curvature_step: bool) -> None:
        """Fold this step's loss into the on-device finite flag; check it on log steps and curvature steps.

        Checked on the device every step, synchronised only on log steps, curvature steps and saves; in a
        distributed run the flag is averaged first, so a NaN on any rank stops every rank at this step.
        """
        finite = torch.isfinite(loss.detach())
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite
        if curvature_step or step % self.config.logging.steps_per_log == 0:
            if is_distributed():
                flag = self._loss_finite.to(torch.float32)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                self._loss_finite = flag.bool()
            self._check_finite_loss(step, loss_dict)

    def _check_finite_loss(self, step: int, loss_dict=None) -> None:
        """Raise :class:`NonFiniteLossError` if any loss since the last check was NaN or infinite."""
        if self._loss_finite is None or bool(self._loss_finite):
            self._last_finite_check = step
            return
        since = self._last_finite_check
        window = f"at step {step}" if since is None else f"between steps {since} and {step}"
        terms = "" if loss_dict is None else " (" + ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items()) + ")"
        saved = sorted(self.checkpoint_dir.glob("*.ckpt")) if self.checkpoint_dir.is_dir() else []
        way_out = (
            f"or resume from the last checkpoint ({saved[-1].name}) with --load-dir {self.checkpoint_dir}"
            if saved
            else "and start again (no checkpoint had been saved)"
        )
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite {window}{terms}; stopped without saving these weights. "
            f"Lower the learning rate (--optimizers.fields.optimizer.lr) {way_out}."
        )

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Save pipeline, optimizers, schedulers and scaler; the file appears complete or not at all."""
        self._check_finite_loss(step)  # never write weights that a NaN loss has reached
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        try:
            self._write_checkpoint(step, ckpt_path)
        except OSError as err:
            raise InputError(
                f"cannot write the checkpoint {ckpt_path}: {err.strerror or err}; free disk space "
                "or choose another --output-dir"
            ) from None
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("*.ckpt"):
                if f != ckpt_path:
                    f.unlink()

    def _write_checkpoint(self, step: int, ckpt_path: Path) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = {
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        # the temporary file is written beside, not inside, the checkpoint folder: nerfstudio parses every file name
        # in it. A failed write (a full disk) removes it; one that a killed run left goes at the next start.
        atomic_save_torch(state, ckpt_path, tmp_dir=self.checkpoint_dir.parent)
