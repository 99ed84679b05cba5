"""The checkpoint of a fitting run: what it holds, how it is written, and how ``--resume`` reads it back.

``checkpoint.pt`` holds the model, optimizer, RNG states and counters after the last finished
epoch; ``checkpoint.prev.pt`` the one before, which :func:`load_checkpoint` falls back to when the
latest is missing or unreadable. Checkpoints are read with ``weights_only=True`` and written
atomically.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import torch
from torch import nn

from gnerf.errors import InputError
from gnerf.tasks import dist as gdist
from gnerf.files import atomic_save_torch

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
RESUMABLE_CHANGES = ("epochs", "resume", "output_dir", "device", "progress", "eval_batch_size", "threads",
                     "dist_timeout")


@dataclass
class Progress:
    """How far a run has come: finished epochs, steps, training seconds and one metrics row per epoch."""

    epoch: int = 0
    iteration: int = 0
    wall_time: float = 0.0
    history: List[Dict[str, float]] = field(default_factory=list)


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
            raise InputError(f"{path.name} in {str(path.parent)!r} holds a pickled Python object "
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


def load_checkpoint(out: Path) -> Dict[str, Any]:
    """The checkpoint in ``out``; the one before it (with a one-line warning) when the latest is unreadable.

    Raises:
        InputError: ``out`` holds neither, the checkpoints are unreadable, or they hold pickled Python objects.
    """
    latest, prev = out / CHECKPOINT, out / PREV_CHECKPOINT
    if not latest.is_file() and not prev.is_file():
        raise InputError(f"--resume: no checkpoint {str(latest)!r}; "
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
    raise InputError(f"{CHECKPOINT} in {str(out)!r} is unreadable ({reason}): delete it to start over, or restore it")



def holds_checkpoint(out: Path) -> bool:
    """Whether the run folder ``out`` already holds a checkpoint (the latest or the one before)."""
    return (out / CHECKPOINT).exists() or (out / PREV_CHECKPOINT).exists()


def restore(out: Path, epochs: int, config: Dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            shuffle: torch.Generator, device: torch.device) -> Progress:
    """Load the checkpoint in ``out`` into ``model``, ``optimizer``, the RNGs, and return its progress.

    Raises:
        InputError: ``config`` differs from the saved one beyond :data:`RESUMABLE_CHANGES`, or ``epochs``
            is below the epochs already trained (see :func:`load_checkpoint` for the rest).
    """
    ckpt = load_checkpoint(out)
    changed = _diff(ckpt["config"], config)
    if changed:
        raise InputError(f"--resume: the configuration differs from the run in {str(out)!r} "
                         f"({'; '.join(changed)}); only {', '.join(RESUMABLE_CHANGES)} may change")
    if epochs < ckpt["epoch"]:
        raise InputError(f"--resume --epochs {epochs}: the run in {str(out)!r} has already trained "
                         f"{ckpt['epoch']} epochs; pass a larger --epochs to train it further")
    if epochs == ckpt["epoch"] and gdist.rank() == 0:
        print(f"the run in {str(out)!r} has already trained all {epochs} epochs: nothing to train "
              "(pass a larger --epochs to train further); writing its outputs again", flush=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    shuffle.set_state(ckpt["shuffle_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
    return Progress(ckpt["epoch"], ckpt["iteration"], ckpt["wall_time"], list(ckpt["history"]))


def save_checkpoint(out: Path, progress: Progress, config: Dict[str, Any], model: nn.Module,
                    optimizer: torch.optim.Optimizer, shuffle: torch.Generator, device: torch.device) -> None:
    """Write the checkpoint of ``progress`` to ``out`` atomically, keeping the previous one beside it."""
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
    }
    latest = out / CHECKPOINT
    if latest.exists():  # keep the previous checkpoint for --resume, in case this one gets damaged
        os.replace(latest, out / PREV_CHECKPOINT)
    atomic_save_torch(state, latest)
