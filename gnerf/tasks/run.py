"""Starting a run: its checked configuration, device and run folder (locked while the run uses it).

:func:`prepare_run` validates the configuration (the only place that does) and picks the run
folder and device; :func:`hold_run_folder` then takes the folder for the task's ``with`` block.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch

from gnerf.errors import InputError
from gnerf.tasks import dist as gdist
from gnerf.tasks.config import FitConfig, default_output_dir, validate_config
from gnerf.files import remove_if_unused

__all__ = ["LOCK", "Run", "RunFolderError", "choose_device", "hold_run_folder", "prepare_run"]

LOCK = ".lock"


class RunFolderError(InputError):
    """The run folder cannot be used: another run holds it, it holds a run already, or it cannot be created or
    written."""


@dataclass(frozen=True)
class Run:
    """A run ready to start: its validated configuration, run folder and device."""

    cfg: FitConfig
    output_dir: Path
    device: torch.device


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
            raise InputError(f"--device {device!r} is not a torch device: {err}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device!r} asks for CUDA, but torch sees no CUDA device; use --device cpu")
    if dev.type == "cuda" and dev.index is None and gdist.world_size() > 1:
        dev = torch.device("cuda", gdist.local_rank())
        torch.cuda.set_device(dev)
    return dev

def prepare_run(task: str, stem: str, cfg: FitConfig) -> Run:
    """Check ``cfg`` and pick its run folder and device (the folder named after ``task`` and ``stem`` by default)."""
    validate_config(cfg)
    if cfg.resume and cfg.output_dir is None:
        raise InputError("--resume needs --output-dir, the folder of the run to continue")
    out = cfg.output_dir if cfg.output_dir is not None else gdist.broadcast_object(default_output_dir(task, stem, cfg))
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise InputError(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    return Run(cfg, Path(out), choose_device(cfg.device))


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
        if held is not None:  # a failed start leaves nothing behind
            remove_if_unused(out, {LOCK} if held[2] else (), held[1])
        raise
    finally:
        if held is not None:
            os.close(held[0])  # releases the lock


def _lock_folder(out: Path) -> Tuple[int, Path, bool]:
    """Create ``out`` and lock it: (lock file descriptor, the deepest folder that existed, whether the lock file
    was created)."""
    existed = next((p for p in (out, *out.parents) if os.path.lexists(p)), Path(out.anchor or "."))
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
    return fd, existed, lock_created

