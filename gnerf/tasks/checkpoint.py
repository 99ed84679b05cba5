"""The checkpoint of a fitting run: what it holds, how it is written, and how ``--resume`` reads it back.

``checkpoint.pt`` holds the model, optimizer, RNG states, counters (and the EMA of the weights) after the last finished
epoch, and the SHA-256 of the input files; ``checkpoint.prev.pt`` the one before, which :func:`restore` falls
back to when the latest is missing, unreadable or does not fit the model. Checkpoints are read with
``weights_only=True`` and written atomically.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from gnerf.errors import InputError
from gnerf.files import (
    PickledObject,
    UnreadableFile,
    atomic_copy,
    atomic_save_torch,
    load_error_reason,
    read_weights_only,
)
from gnerf.tasks import dist as gdist

__all__ = [
    "CHECKPOINT",
    "PREV_CHECKPOINT",
    "RESUMABLE_CHANGES",
    "Progress",
    "holds_checkpoint",
    "load_checkpoint",
    "restore",
    "save_checkpoint",
]

CHECKPOINT = "checkpoint.pt"
PREV_CHECKPOINT = "checkpoint.prev.pt"
#: Configuration keys that may change when a run is resumed.
RESUMABLE_CHANGES = (
    "epochs",
    "resume",
    "allow_changed_optim",
    "output_dir",
    "device",
    "progress",
    "eval_batch_size",
    "threads",
    "dist_timeout",
)
#: What --allow-changed-optim lets change besides those: the optimizer's lr and the schedule.
OPTIM_CHANGES = ("optim.lr", "schedule.")
#: The param-group entries that follow from --optim.lr, taken from the optimizer built at the new lr when
#: --allow-changed-optim changes it (esgd-adam-start keeps its Adam lr as a ratio to the lr).
_LR_ENTRIES = ("lr", "adam_lr_ratio")


@dataclass
class Progress:
    """How far a run has come: finished epochs, steps, training seconds and one metrics row per epoch."""

    epoch: int = 0
    iteration: int = 0
    wall_time: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)


def _diff(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> List[Tuple[str, str]]:
    """The differing entries of two configurations, as ``(key, "key: old -> new")``."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in RESUMABLE_CHANGES and not prefix:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append((f"{prefix}{key}", f"{prefix}{key}: {va!r} -> {vb!r}"))
    return out


def _optim_change(key: str) -> bool:
    return key == "optim.lr" or key.startswith("schedule.") or key == "schedule"


_REQUIRED_KEYS = (
    "model",
    "optimizer",
    "shuffle_rng",
    "torch_rng",
    "epoch",
    "iteration",
    "wall_time",
    "history",
    "config",
)


def _read_checkpoint(path: Path) -> Dict[str, Any]:
    """``path`` loaded with ``weights_only=True`` on the CPU (where the RNG states must stay): tensors and plain
    containers only, never arbitrary objects."""
    try:
        ckpt = read_weights_only(path)
    except PickledObject as err:  # a pickled Python object: loading it could run code
        raise InputError(
            f"{path.name} in {str(path.parent)!r} holds a pickled Python object "
            f"({err}) that could run code when loaded; gnerf checkpoints hold only "
            "tensors and plain values, so --resume refuses it: delete it or restore the original"
        ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED_KEYS):
        raise UnreadableFile("not a checkpoint of a fitting run")
    return ckpt


def load_checkpoint(out: Path) -> Dict[str, Any]:
    """The checkpoint in ``out``; the one before it (with a one-line warning) when the latest is unreadable.

    Raises:
        InputError: ``out`` holds neither, the checkpoints are unreadable, or they hold pickled Python objects.
    """
    return _first_usable(out, lambda ckpt: None)


def _first_usable(out: Path, use) -> Dict[str, Any]:
    """The first of the latest and the previous checkpoint in ``out`` that reads back and that ``use`` accepts
    (``use(ckpt)`` raises :class:`UnreadableFile` saying why it does not); a one-line warning when that is the
    previous one.

    Raises:
        InputError: ``out`` holds neither, neither is usable, or one holds a pickled Python object.
    """
    latest, prev = out / CHECKPOINT, out / PREV_CHECKPOINT
    if not latest.is_file() and not prev.is_file():
        raise InputError(f"--resume: no checkpoint {str(latest)!r}; point --output-dir at the folder of an earlier run")
    reason = None
    if latest.is_file():
        try:
            ckpt = _read_checkpoint(latest)
            use(ckpt)
            return ckpt
        except UnreadableFile as err:
            reason = str(err)
    if prev.is_file():
        try:
            ckpt = _read_checkpoint(prev)
            use(ckpt)
        except UnreadableFile:
            reason = f"{reason}; so is {PREV_CHECKPOINT}" if reason else f"it is missing, {PREV_CHECKPOINT} unreadable"
        else:
            if gdist.rank() == 0:
                problem = "is missing" if reason is None else f"is unreadable ({reason})"
                sys.stderr.write(
                    f"warning: {CHECKPOINT} in {str(out)!r} {problem}; resuming from the one before, "
                    f"{PREV_CHECKPOINT} (epoch {ckpt['epoch']})\n"
                )
            return ckpt
    raise InputError(f"{CHECKPOINT} in {str(out)!r} is unreadable ({reason}): delete it to start over, or restore it")


def holds_checkpoint(out: Path) -> bool:
    """Whether the run folder ``out`` already holds a checkpoint (the latest or the one before)."""
    return (out / CHECKPOINT).exists() or (out / PREV_CHECKPOINT).exists()


def restore(
    out: Path,
    epochs: int,
    config: Dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    device: torch.device,
    inputs: Optional[Dict[str, Dict[str, str]]] = None,
    allow_changed_optim: bool = False,
    average: Optional[nn.Module] = None,
) -> Progress:
    """Load the checkpoint in ``out`` into ``model``, ``optimizer``, the RNGs, and return its progress.

    A latest checkpoint that cannot be read or does not fit the model (tensors of other shapes) gives way to the
    previous one, with a one-line warning. With ``allow_changed_optim``, the optimizer's lr and the schedule may
    differ from the run's: the optimizer keeps its state and takes the lr of ``optimizer`` as built. ``average``: the
    run's EMA of the weights (``--optim.ema-decay``), loaded too.

    Raises:
        InputError: ``config`` differs from the saved one beyond :data:`RESUMABLE_CHANGES` (and, with
            ``allow_changed_optim``, :data:`OPTIM_CHANGES`), an input file's content differs from the one the run
            was trained on (``inputs``, by option), or ``epochs`` is below the epochs already trained (see
            :func:`load_checkpoint` for the rest).
    """
    fresh = [{k: g[k] for k in _LR_ENTRIES if k in g} for g in optimizer.param_groups]
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def fits(ckpt: Dict[str, Any]) -> None:
        _check_resumable(out, ckpt, config, inputs, allow_changed_optim)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if average is not None:
                average.load_state_dict(ckpt["average"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as err:
            model.load_state_dict(model_state)
            raise UnreadableFile(f"it does not fit the model: {load_error_reason(err)}") from None

    ckpt = _first_usable(out, fits)
    changed = _diff(ckpt["config"], config)
    _check_epochs(out, epochs, ckpt["epoch"])
    if allow_changed_optim and changed:
        for group, lrs in zip(optimizer.param_groups, fresh):
            group.update(lrs)
            if "lr" in lrs:
                group["initial_lr"] = lrs["lr"]  # what the schedule, built next, scales
        if gdist.rank() == 0:
            print(f"--allow-changed-optim: continuing with {'; '.join(text for _, text in changed)}", flush=True)
    shuffle.set_state(ckpt["shuffle_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    return Progress(ckpt["epoch"], ckpt["iteration"], ckpt["wall_time"], list(ckpt["history"]))


def _check_epochs(out: Path, epochs: int, trained: int) -> None:
    """Refuse ``--epochs`` below the ``trained`` epochs of the run in ``out``; say so when it equals them."""
    if epochs < trained:
        raise InputError(
            f"--resume --epochs {epochs}: the run in {str(out)!r} has already trained "
            f"{trained} epochs; pass a larger --epochs to train it further"
        )
    if epochs == trained and gdist.rank() == 0:
        print(
            f"the run in {str(out)!r} has already trained all {epochs} epochs: nothing to train "
            "(pass a larger --epochs to train further); writing its outputs again",
            flush=True,
        )


def _check_resumable(
    out: Path,
    ckpt: Dict[str, Any],
    config: Dict[str, Any],
    inputs: Optional[Dict[str, Dict[str, str]]],
    allow_changed_optim: bool,
) -> None:
    """Raise :class:`InputError` if the run of ``ckpt`` cannot continue under ``config`` and ``inputs``."""
    changed = _diff(ckpt["config"], config)
    refused = [text for key, text in changed if not (allow_changed_optim and _optim_change(key))]
    if refused:
        hint = (
            "; pass --allow-changed-optim to continue with another lr or schedule"
            if all(_optim_change(key) for key, _ in changed)
            else ""
        )
        raise InputError(
            f"--resume: the configuration differs from the run in {str(out)!r} "
            f"({'; '.join(refused)}); only {', '.join(RESUMABLE_CHANGES)} may change{hint}"
        )
    for option, now in (inputs or {}).items():
        then = (ckpt.get("inputs") or {}).get(option)
        if then is not None and then.get("sha256") != now.get("sha256"):
            raise InputError(
                f"--resume: {option} {now['path']!r} is not the file the run in {str(out)!r} was trained "
                "on (its content changed since); restore that file, or start a new run in another "
                "--output-dir"
            )


def save_checkpoint(
    out: Path,
    progress: Progress,
    config: Dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    device: torch.device,
    inputs: Optional[Dict[str, Dict[str, str]]] = None,
    average: Optional[nn.Module] = None,
) -> None:
    """Write the checkpoint of ``progress`` to ``out`` atomically, keeping the previous one beside it; ``inputs``
    (the input files' paths and hashes, by option) are saved with it for :func:`restore` to compare, and ``average``
    (the EMA of the weights) when the run keeps one."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "shuffle_rng": shuffle.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "epoch": progress.epoch,
        "iteration": progress.iteration,
        "wall_time": progress.wall_time,
        "config": config,
        "history": progress.history,
        "inputs": dict(inputs or {}),
        "average": average.state_dict() if average is not None else None,
    }
    latest = out / CHECKPOINT
    if latest.exists():  # keep the previous checkpoint for --resume, in case this one gets damaged; a copy, so that
        atomic_copy(latest, out / PREV_CHECKPOINT)  # a checkpoint.pt is on disk at every instant
    atomic_save_torch(state, latest)
