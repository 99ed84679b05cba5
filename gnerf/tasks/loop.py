"""The one fitting loop shared by the image, occupancy and video tasks.

A task turns its input into a :class:`Problem` (coordinates and targets held on the device, a
loss and an evaluation) and calls :func:`fit`, which owns everything else: the field and
optimizer (built from :class:`FieldConfig` / :class:`OptimConfig` through the shared builders),
shuffled minibatches, the curvature protocol (:func:`gnerf.optim.step.take_step`),
the NaN check, the per-epoch metrics files, tensorboard scalars, the progress bar and the
checkpoint that :attr:`FitConfig.resume` continues from.

Launched by ``torchrun`` (see :mod:`gnerf.tasks.dist`), the loop trains a
``DistributedDataParallel`` model: every rank takes its share of each minibatch, weighted so that
the averaged gradient is the whole minibatch's; curvature steps skip DDP's all-reduce and let the
optimizer average gradients and Hessian-vector products in one (:mod:`gnerf.optim.distributed`).
Rank 0 alone evaluates and writes the run folder.

Output folder layout (``FitConfig.output_dir``)::

    config.json        the resolved configuration
    metrics.csv        one row per epoch: epoch, iteration, wall_time, loss, <task metrics>
    metrics.jsonl      the same rows as JSON lines
    checkpoint.pt      model, optimizer, RNG states and counters after the last finished epoch
    checkpoint.prev.pt the checkpoint of the epoch before, which --resume falls back to
    .lock              held (``flock``) by the run that uses the folder; holds its process id
    tensorboard/       the same scalars as event files (x axis: iteration)
    <reconstructions>  written by the task after training
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import pickle
import re
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from gnerf.fields import ACTIVATIONS, CoordinateMLP
from gnerf.optim.base import needs_hessian_vector_products
from gnerf.optim.curvature import HVP_METHODS, functional_loss
from gnerf.optim.registry import build_optimizer, get_optimizer_spec
from gnerf.optim.step import take_step
from gnerf.tasks import dist as gdist
from gnerf.tasks.io import atomic_save_torch, atomic_write_bytes, atomic_write_json

__all__ = [
    "FieldConfig",
    "FitConfig",
    "FitResult",
    "OptimConfig",
    "Problem",
    "RunFolderError",
    "build_field",
    "choose_device",
    "config_to_dict",
    "default_output_dir",
    "fit",
    "hold_run_folder",
    "predict",
    "prepare_run",
    "validate_config",
]

CHECKPOINT = "checkpoint.pt"
PREV_CHECKPOINT = "checkpoint.prev.pt"
LOCK = ".lock"
#: Configuration keys that may change when a run is resumed.
RESUMABLE_CHANGES = ("epochs", "resume", "output_dir", "device", "progress", "eval_batch_size", "threads",
                     "dist_timeout")


class RunFolderError(Exception):
    """The run folder cannot be used: another run holds it, or it cannot be created or written."""


@dataclass
class FieldConfig:
    """The coordinate network (:class:`gnerf.fields.CoordinateMLP`)."""

    activation: str = "gaussian"
    """Hidden activation: gaussian, sine, wavelet or relu."""
    hidden_dim: int = 256
    """Width of every hidden layer."""
    num_layers: int = 5
    """Number of linear layers, the output layer included (the paper's "5-layer network")."""
    sigma: Optional[float] = None
    """Gaussian width; None picks the task's paper default (images 0.05, shapes 0.09)."""
    omega: float = 30.0
    """Sine frequency (SIREN initialisation is applied automatically)."""
    omega0: float = 10.0
    """Wavelet frequency."""
    s0: float = 10.0
    """Wavelet scale."""
    positional_encoding: Optional[int] = None
    """Positional-encoding frequencies L; None: 8 for relu (the paper's ReLU + PE), 0 otherwise."""


@dataclass
class OptimConfig:
    """The optimizer, built by name through :func:`gnerf.optim.registry.build_optimizer`."""

    name: str = "esgd"
    """Registered optimizer name, e.g. adam, esgd, esgd-max."""
    lr: Optional[float] = None
    """Learning rate; None: the paper's (Adam 1e-4, 1e-3 for relu; ESGD/ESGD-Max 0.15)."""
    precondition_warmup_steps: Optional[int] = None
    """esgd, esgd-max, esgd-adam-start: first steps that all update the curvature (None: the paper's 50)."""
    precondition_frequency: Optional[int] = None
    """Steps between preconditioner updates after the warm-up (None: the optimizer's; esgd* 100, kfac 100,
    shampoo 1)."""
    hvp_method: Optional[str] = None
    """Hutchinson optimizers (esgd, esgd-max, adahessian-e/-j): double-backward or forward-over-reverse
    (None: double-backward, the faster; see docs/benchmarks.md)."""
    adam_steps: Optional[int] = None
    """esgd-adam-start: Adam's steps before ESGD takes over (None: the optimizer's 800)."""


@dataclass
class FitConfig:
    """Options every fitting command shares (the tasks subclass this)."""

    output_dir: Optional[Path] = None
    """Run folder; None: outputs/<task>/<input>-<activation>-<optimizer>-<timestamp>."""
    epochs: int = 100
    """Passes over the training set."""
    batch_size: int = 512
    """Minibatch size (coordinates per step); minibatches are reshuffled every epoch."""
    seed: int = 0
    """Seed for the network initialisation, shuffling and curvature probes."""
    device: Optional[str] = None
    """torch device; None: cuda when available, else cpu."""
    resume: bool = False
    """Continue the run in output_dir from its checkpoint (epochs may be raised; the same epochs train nothing
    and write the outputs again; fewer are refused)."""
    eval_batch_size: int = 65536
    """Coordinates per forward pass when evaluating and reconstructing."""
    log_every: int = 100
    """Steps between NaN checks, progress-bar and tensorboard loss updates."""
    progress: bool = True
    """Show a progress bar."""
    threads: Optional[int] = None
    """CPU threads torch may use (None: torch's default); 1 is fastest on a busy machine."""
    dist_timeout: float = 600.0
    """Under torchrun: seconds a rank waits for the others in a collective before it gives up."""
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)


@dataclass
class Problem:
    """What a task hands to :func:`fit`.

    Attributes:
        inputs: ``[N, in_dim]`` training coordinates, on the training device.
        targets: ``[N, out_dim]`` training targets, on the same device.
        loss_fn: ``loss_fn(prediction, target) -> scalar`` (mean over the minibatch).
        evaluate: ``evaluate(model) -> {metric: value}``, called after every epoch in eval mode
            under ``torch.no_grad()``; e.g. ``{"psnr": 31.2}``.
        sigma: the task's default Gaussian width (used when ``FieldConfig.sigma`` is None).
    """

    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[[nn.Module], Dict[str, float]]
    sigma: float


@dataclass
class FitResult:
    """The trained model and the per-epoch metrics rows of the whole run (resumed epochs included)."""

    model: nn.Module
    history: List[Dict[str, float]]
    output_dir: Path
    device: torch.device
    is_main: bool = True
    """False on the ranks other than 0 of a torchrun job, which write nothing."""


def choose_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given (checked to exist), else CUDA when available, else CPU.

    Under torchrun, ``cuda`` (or the default) means this rank's GPU, ``cuda:LOCAL_RANK``.
    """
    if device is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(f"--device {device!r} is not a torch device: {err}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device!r} asks for CUDA, but torch sees no CUDA device; use --device cpu")
    if dev.type == "cuda" and dev.index is None and gdist.world_size() > 1:
        dev = torch.device("cuda", gdist.local_rank())
        torch.cuda.set_device(dev)
    return dev


def build_field(cfg: FieldConfig, in_dim: int, out_dim: int, default_sigma: float) -> CoordinateMLP:
    """The task's :class:`CoordinateMLP` from ``cfg`` with the paper's activation defaults."""
    act = cfg.activation.lower()
    kwargs: Dict[str, float] = {
        "gaussian": {"sigma": default_sigma if cfg.sigma is None else cfg.sigma},
        "sine": {"omega": cfg.omega},
        "wavelet": {"omega0": cfg.omega0, "s0": cfg.s0},
    }.get(act, {})
    pe = cfg.positional_encoding if cfg.positional_encoding is not None else (8 if act == "relu" else 0)
    return CoordinateMLP(in_dim, out_dim, hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers,
                         activation=act, activation_kwargs=kwargs, positional_encoding=pe)


def _build_optimizer(cfg: OptimConfig, model: nn.Module, activation: str, seed: int) -> torch.optim.Optimizer:
    options = {k: v for k, v in (("precondition_warmup_steps", cfg.precondition_warmup_steps),
                                 ("precondition_frequency", cfg.precondition_frequency),
                                 ("hvp_method", cfg.hvp_method), ("adam_steps", cfg.adam_steps)) if v is not None}
    if _is_hutchinson(cfg.name):
        options["seed"] = seed  # the probes are drawn from the run's seed, identically on every rank
    try:
        return build_optimizer(cfg.name, model.parameters(), activation=activation, lr=cfg.lr, **options)
    except ValueError as err:
        raise ValueError(f"--optim.name {cfg.name!r}: {err}") from None


def _is_hutchinson(name: str) -> bool:
    return needs_hessian_vector_products(get_optimizer_spec(name).factory)


def default_output_dir(task: str, stem: str, cfg: FitConfig) -> Path:
    """``outputs/<task>/<stem>-<activation>-<optimizer>-<timestamp>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("outputs") / task / f"{stem}-{cfg.field.activation}-{cfg.optim.name}-{stamp}"


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; paths become strings."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _diff(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_CHANGES and not prefix:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


class _MetricsLog:
    """metrics.csv + metrics.jsonl (rewritten atomically each epoch) and tensorboard scalars."""

    def __init__(self, out: Path, history: List[Dict[str, float]], purge_step: Optional[int]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.out = out
        self.rows = list(history)
        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)

    def add(self, row: Dict[str, float]) -> None:
        self.rows.append(row)
        keys: List[str] = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_bytes(self.out / "metrics.csv", buf.getvalue().encode())
        atomic_write_bytes(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows).encode())
        for k, v in row.items():
            if k not in ("epoch", "iteration"):
                self.writer.add_scalar(f"epoch/{k}", v, int(row["iteration"]))
        self.writer.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class _Unreadable(Exception):
    """A checkpoint that cannot be read back (truncated, empty, not a checkpoint); the text says which."""


_REQUIRED_KEYS = ("model", "optimizer", "shuffle_rng", "torch_rng", "epoch", "iteration", "wall_time", "history",
                  "config")


def _read_checkpoint(path: Path) -> Dict[str, Any]:
    """``path`` loaded with ``weights_only=True``: tensors and plain containers only, never arbitrary objects."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # RNG states must stay on the CPU
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:  # a pickled Python object: loading it could run code
            raise ValueError(f"{path.name} in {str(path.parent)!r} holds a pickled Python object "
                             f"({found.group(1)}) that could run code when loaded; gnerf checkpoints hold only "
                             "tensors and plain values, so --resume refuses it: delete it or restore the original"
                             ) from None
        raise _Unreadable("truncated, or not a torch checkpoint") from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, OSError) as err:
        empty = isinstance(err, EOFError) and path.stat().st_size == 0
        raise _Unreadable("the file is empty" if empty else "truncated, or not a torch checkpoint") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED_KEYS):
        raise _Unreadable("not a checkpoint of a fitting run")
    return ckpt


def _load_checkpoint(out: Path) -> Dict[str, Any]:
    """The checkpoint in ``out``; the one before it (with a one-line warning) when the latest is unreadable.

    Raises:
        FileNotFoundError: ``out`` holds neither.
        ValueError: the checkpoints are unreadable, or hold pickled Python objects.
    """
    latest, prev = out / CHECKPOINT, out / PREV_CHECKPOINT
    if not latest.is_file() and not prev.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {str(latest)!r}; "
                                "point --output-dir at the folder of an earlier run")
    reason = None
    if latest.is_file():
        try:
            return _read_checkpoint(latest)
        except _Unreadable as err:
            reason = str(err)
    if prev.is_file():
        try:
            ckpt = _read_checkpoint(prev)
        except _Unreadable:
            reason = f"{reason}; so is {PREV_CHECKPOINT}" if reason else f"it is missing, {PREV_CHECKPOINT} unreadable"
        else:
            if gdist.rank() == 0:
                problem = "is missing" if reason is None else f"is unreadable ({reason})"
                sys.stderr.write(f"warning: {CHECKPOINT} in {str(out)!r} {problem}; resuming from the one before, "
                                 f"{PREV_CHECKPOINT} (epoch {ckpt['epoch']})\n")
            return ckpt
    raise ValueError(f"{CHECKPOINT} in {str(out)!r} is unreadable ({reason}): delete it to start over, or restore it")


def validate_config(cfg: FitConfig) -> None:
    """Reject bad loop options and unknown optimizer / activation names before any work is done."""
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("log_every", 1)):
        if getattr(cfg, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(cfg, name)}")
    try:
        get_optimizer_spec(cfg.optim.name)
    except ValueError as err:
        raise ValueError(f"--optim.name {cfg.optim.name!r}: {err}") from None
    if cfg.optim.hvp_method is not None:
        if not _is_hutchinson(cfg.optim.name):
            raise ValueError(f"--optim.hvp-method applies to esgd, esgd-max, adahessian-e and adahessian-j, "
                             f"not to --optim.name {cfg.optim.name!r}; remove it")
        if cfg.optim.hvp_method not in HVP_METHODS:
            raise ValueError(f"--optim.hvp-method {cfg.optim.hvp_method!r}: choose one of {', '.join(HVP_METHODS)}")
    if cfg.field.activation.lower() not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.field.activation!r} (--field.activation); "
                         f"choose one of: {', '.join(ACTIVATIONS)}")


def fit(problem: Problem, cfg: FitConfig, output_dir: Path, config: Dict[str, Any], device: torch.device) -> FitResult:
    """Train a field on ``problem`` as ``cfg`` says, writing metrics and checkpoints to ``output_dir``.

    ``config`` is the task's resolved configuration (written to ``config.json``; on resume it
    must match the saved one except for :data:`RESUMABLE_CHANGES`).

    Raises:
        FileExistsError: ``output_dir`` already holds a run and ``cfg.resume`` is False.
        FileNotFoundError: ``cfg.resume`` without a checkpoint in ``output_dir``.
        ValueError: resuming with a different configuration or fewer epochs than were trained, an
            unreadable checkpoint (when ``checkpoint.prev.pt`` is unreadable too), or a bad option.
        FloatingPointError: the training loss became NaN or infinite.
    """
    validate_config(cfg)
    out = Path(output_dir)
    ckpt_path, prev_path = out / CHECKPOINT, out / PREV_CHECKPOINT
    n = problem.inputs.shape[0]
    if n == 0:
        raise ValueError("the training set is empty")

    torch.manual_seed(cfg.seed)
    model = build_field(cfg.field, problem.inputs.shape[1], problem.targets.shape[1], problem.sigma).to(device)
    optimizer = _build_optimizer(cfg.optim, model, cfg.field.activation.lower(), cfg.seed)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    start_epoch, iteration, wall_time = 0, 0, 0.0
    history: List[Dict[str, float]] = []

    if cfg.resume:
        ckpt = _load_checkpoint(out)
        changed = _diff(ckpt["config"], config)
        if changed:
            raise ValueError(f"--resume: the configuration differs from the run in {str(out)!r} "
                             f"({'; '.join(changed)}); only {', '.join(RESUMABLE_CHANGES)} may change")
        if cfg.epochs < ckpt["epoch"]:
            raise ValueError(f"--resume --epochs {cfg.epochs}: the run in {str(out)!r} has already trained "
                             f"{ckpt['epoch']} epochs; pass a larger --epochs to train it further")
        if cfg.epochs == ckpt["epoch"] and gdist.rank() == 0:
            print(f"the run in {str(out)!r} has already trained all {cfg.epochs} epochs: nothing to train "
                  "(pass a larger --epochs to train further); writing its outputs again", flush=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        start_epoch, iteration, wall_time = ckpt["epoch"], ckpt["iteration"], ckpt["wall_time"]
        history = list(ckpt["history"])
    elif ckpt_path.exists() or prev_path.exists():
        raise FileExistsError(f"{str(out)!r} already holds a run; pass --resume to continue it "
                              "or choose another --output-dir")

    # torchrun: every rank has checked the folder before the DDP constructor's collective, so rank 0
    # cannot have written to it yet.
    world, rank = gdist.world_size(), gdist.rank()
    main = rank == 0
    train_model: nn.Module = model
    if world > 1:
        if cfg.batch_size < world:
            raise ValueError(f"--batch-size {cfg.batch_size} is smaller than the {world} processes torchrun started; "
                             "every process needs at least one coordinate per step")
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", config)

    from tqdm.auto import tqdm

    steps_per_epoch = math.ceil(n / cfg.batch_size)
    log = _MetricsLog(out, history, purge_step=iteration + 1 if cfg.resume else None) if main else None
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=min(iteration, cfg.epochs * steps_per_epoch),
               disable=not (cfg.progress and main), unit="step", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=shuffle).to(device)
            epoch_sum = torch.zeros((), device=device, dtype=torch.float64)
            window_sum = torch.zeros((), device=device, dtype=torch.float64)
            window = 0
            for i in range(steps_per_epoch):
                idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                # this rank's share, weighted so that the ranks' mean gradient is the whole minibatch's
                local = idx.tensor_split(world)[rank] if world > 1 else idx
                weight = local.numel() * world / idx.numel()

                def local_loss(forward: Callable[[Tensor], Tensor]) -> Tensor:
                    pred = forward(problem.inputs[local])
                    return problem.loss_fn(pred, problem.targets[local]) if local.numel() else pred.sum()

                loss, _ = take_step(optimizer, lambda plan: local_loss(train_model), model=train_model,
                                    backward=lambda v, graph: (v * weight if weight != 1.0 else v).backward(
                                        create_graph=graph),
                                    loss_fn=lambda: functional_loss(model, lambda f: local_loss(f) * weight)[0])
                optimizer.zero_grad(set_to_none=True)
                iteration += 1
                window += 1
                detached = loss.detach().double()
                epoch_sum += detached * local.numel()
                window_sum += detached * weight
                if window == cfg.log_every or i == steps_per_epoch - 1:
                    if world > 1:  # every rank sees the same mean, so a NaN stops all of them together
                        torch.distributed.all_reduce(window_sum)
                        window_sum /= world
                    mean = window_sum.item() / window
                    if not math.isfinite(mean):
                        raise FloatingPointError(
                            f"the training loss became {mean} in epoch {epoch} between iterations "
                            f"{iteration - window + 1} and {iteration} (optimizer {cfg.optim.name!r}, "
                            f"lr {optimizer.param_groups[0]['lr']}); lower --optim.lr or check the input data")
                    if log is not None:
                        log.scalar("train/loss", mean, iteration)
                    bar.set_postfix(epoch=epoch, loss=f"{mean:.3g}", refresh=False)
                    bar.update(window)
                    window_sum.zero_()
                    window = 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall_time += time.perf_counter() - t0
            if world > 1:
                torch.distributed.all_reduce(epoch_sum)
            if not main:
                continue
            model.eval()
            with torch.no_grad():
                metrics = problem.evaluate(model)
            row = {"epoch": epoch, "iteration": iteration, "wall_time": wall_time, "loss": epoch_sum.item() / n}
            row.update({k: float(v) for k, v in metrics.items()})
            try:
                _save_epoch(log, row, history, ckpt_path, prev_path, {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "shuffle_rng": shuffle.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "epoch": epoch,
                    "iteration": iteration,
                    "wall_time": wall_time,
                    "config": config,
                })
            except OSError as err:  # disk full, folder removed or made read-only during the run
                raise RunFolderError(f"cannot write to the run folder {str(out)!r} after epoch {epoch} "
                                     f"({err.strerror or err}); free disk space or fix the folder, then --resume "
                                     "from the last complete checkpoint") from None
            bar.write("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    finally:
        bar.close()
        if log is not None:
            log.close()
    model.eval()
    return FitResult(model=model, history=history, output_dir=out, device=device, is_main=main)


def _save_epoch(log: "_MetricsLog", row: Dict[str, float], history: List[Dict[str, float]], ckpt_path: Path,
                prev_path: Path, state: Dict[str, Any]) -> None:
    """Append ``row`` to the metrics files and ``history``, and write the checkpoint (the previous kept beside)."""
    log.add(row)
    history.append(row)
    if ckpt_path.exists():  # keep the previous checkpoint for --resume, in case this one gets damaged
        os.replace(ckpt_path, prev_path)
    atomic_save_torch({**state, "history": history}, ckpt_path)


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """``model(inputs)`` in chunks of ``batch_size`` rows (no gradients)."""
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)])


def prepare_run(task: str, stem: str, cfg: FitConfig) -> Tuple[Path, torch.device]:
    """Check ``cfg`` and return its run folder and device (the folder named after ``task`` and ``stem`` by default)."""
    validate_config(cfg)
    if cfg.resume and cfg.output_dir is None:
        raise ValueError("--resume needs --output-dir, the folder of the run to continue")
    out = cfg.output_dir if cfg.output_dir is not None else gdist.broadcast_object(default_output_dir(task, stem, cfg))
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    return Path(out), choose_device(cfg.device)


@contextlib.contextmanager
def hold_run_folder(out: Path) -> Iterator[None]:
    """Hold the run folder ``out`` for the ``with`` block (rank 0 of a torchrun job alone writes it).

    Creates ``out`` and takes an exclusive, non-blocking ``flock`` on ``out/.lock`` (which then holds
    this process's id) before anything else is written, so a second run on the same folder stops at
    once. The OS releases the lock when the process ends, however it ends, so the lock file of a
    killed run never blocks ``--resume``. If the block raises while the folder holds nothing but
    the lock, what this call created is removed again: a failed start leaves nothing behind.

    Raises:
        RunFolderError: another process holds ``out``, or ``out`` cannot be created or written.
    """
    held, message = None, None
    if gdist.rank() == 0:
        try:
            held = _lock_folder(Path(out))
        except RunFolderError as err:
            message = str(err)
    message = gdist.broadcast_object(message)  # every rank stops with rank 0's message
    if message is not None:
        raise RunFolderError(message)
    if held is not None:
        print(f"run folder: {out}", flush=True)
    try:
        yield
    except BaseException:
        if held is not None:
            _remove_if_unused(Path(out), *held[1:])
        raise
    finally:
        if held is not None:
            os.close(held[0])  # releases the lock


def _lock_folder(out: Path) -> Tuple[int, List[Path], bool]:
    """Create ``out`` and lock it: (lock file descriptor, the folders created, whether the lock file was)."""
    created = []
    for folder in (out, *out.parents):
        if os.path.lexists(folder):
            break
        created.append(folder)
    lock = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        lock_created = not lock.exists()
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise RunFolderError(f"--output-dir {str(out)!r}: {str(blocker)!r} is a file, not a folder; "
                                 "choose another --output-dir") from None
        raise RunFolderError(f"cannot write the run folder {str(out)!r} ({err.strerror or err}); "
                             "choose another --output-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise RunFolderError(f"{str(out)!r} is in use by another run ({who}); wait for it to finish "
                             "or choose another --output-dir") from None
    except OSError as err:  # a file system without locks: run unprotected rather than not at all
        sys.stderr.write(f"warning: cannot lock {str(lock)!r} ({err.strerror}); nothing stops a second run "
                         "from writing to the same folder\n")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise RunFolderError(f"cannot write the run folder {str(out)!r} ({err.strerror or err}); "
                             "choose another --output-dir") from None
    return fd, created, lock_created


def _remove_if_unused(out: Path, created: List[Path], lock_created: bool) -> None:
    """Remove what :func:`_lock_folder` created if ``out`` holds nothing but the lock file."""
    try:
        if set(os.listdir(out)) - {LOCK}:
            return
        if lock_created:
            os.unlink(out / LOCK)
        for folder in created:  # deepest first
            os.rmdir(folder)
    except OSError:
        pass
