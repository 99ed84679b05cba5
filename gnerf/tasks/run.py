"""Starting a run: its checked configuration, device and run folder (locked while the run uses it).

:func:`prepare_run` validates the configuration (the only place that does), hashes the input files and picks the
run folder and device; :func:`hold_run_folder` then takes the folder for the task's ``with`` block.

A folder is a gnerf run when its ``config.json`` says so (the ``gnerf_run`` entry the loop writes; runs written
before that entry existed are recognised by their configuration's keys). A run starts only in a new or empty
folder, or in a gnerf run that has no checkpoint yet (whose files it replaces); ``--resume`` continues a gnerf run.
Any other folder is refused, so that a run never writes over files it did not make; an input file inside the
run folder is refused too. The logs and records that whatever starts a run keeps beside it (:data:`JOB_RECORDS`,
``*.log``) do not count.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

import torch

from gnerf.errors import InputError, Interrupted, Retry, RunFolderError
from gnerf.files import (
    LOCK,
    HeldFolder,
    is_temporary,
    lock_folder,
    release_folder,
    remove_if_unused,
    remove_orphaned_temporaries,
)
from gnerf.tasks import dist as gdist
from gnerf.tasks.config import FitConfig, default_output_dir, validate_config

__all__ = [
    "LOCK",
    "RUN_FILES",
    "RUN_MARKER",
    "Run",
    "RunFolderError",
    "choose_device",
    "clear_unfinished_run",
    "file_sha256",
    "hold_run_folder",
    "is_run_folder",
    "prepare_run",
    "writing_outputs",
]

#: The key of ``config.json`` that marks a folder as a gnerf run (the task and its input files' hashes).
RUN_MARKER = "gnerf_run"
#: What a run writes to its folder besides its checkpoints and the lock (the files of an unfinished run that a new
#: start replaces).
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "metrics.jsonl",
    "target.png",
    "reconstruction.png",
    "reconstruction.ply",
    "preview.png",
    "reconstruction.mp4",
    "frame_psnr.csv",
)
_LEGACY_KEYS = {"epochs", "batch_size", "seed", "field", "optim"}


@dataclass(frozen=True)
class Run:
    """A run ready to start: its validated configuration, run folder and device, the task's name and the SHA-256
    of each input file by its option (``{"--image": {"path": ..., "sha256": ...}}``)."""

    cfg: FitConfig
    output_dir: Path
    device: torch.device
    task: str = ""
    inputs: Dict[str, Dict[str, str]] = field(default_factory=dict)
    reserved_below: Optional[Path] = None
    """When gnerf named the run folder and made it to reserve the name: the deepest folder that existed before."""


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


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's content, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_run(task: str, stem: str, cfg: FitConfig, inputs: Optional[Mapping[str, Any]] = None) -> Run:
    """Check ``cfg`` and the input files ``inputs`` (by option, ``{"--image": path}``), hash those, and pick the run
    folder (by default a new one named after ``task`` and ``stem``, made here so that the name is this run's
    alone) and device.

    Raises:
        InputError: a bad option, ``--resume`` without ``--output-dir``, or an input file inside the run folder.
        RunFolderError: the default run folder cannot be made.
    """
    validate_config(cfg)
    if cfg.resume and cfg.output_dir is None:
        raise InputError("--resume needs --output-dir, the folder of the run to continue")
    inputs = {option: Path(path).expanduser() for option, path in (inputs or {}).items()}
    if cfg.output_dir is not None:
        _check_inputs_outside(inputs, Path(cfg.output_dir))
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise InputError(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    hashes = {
        option: {"path": str(path), "sha256": file_sha256(path)} for option, path in inputs.items() if path.is_file()
    }
    if cfg.output_dir is not None:
        return Run(cfg, Path(cfg.output_dir), device, task, hashes)
    reserved = None
    if gdist.rank() == 0:
        try:
            reserved = _reserve(default_output_dir(task, stem, cfg))
        except RunFolderError as err:
            reserved = str(err)
    reserved = gdist.broadcast_object(reserved)
    if isinstance(reserved, str):
        raise RunFolderError(reserved)
    out, below = reserved
    return Run(cfg, out, device, task, hashes, below)


def _check_inputs_outside(inputs: Mapping[str, Path], out: Path) -> None:
    """Refuse an input file that lies inside the run folder, whose files a run replaces."""
    folder = out.expanduser().resolve()
    for option, path in inputs.items():
        if folder in path.resolve().parents:
            raise InputError(
                f"{option} {str(path)!r} lies inside --output-dir {str(out)!r}, whose files a run "
                f"replaces; move the file out of that folder, or choose another --output-dir"
            )


def _reserve(base: Path) -> Tuple[Path, Path]:
    """Make ``base`` (or ``base-2``, ``base-3``, ... when it exists: two runs started in the same second) and return
    it with the deepest folder that existed before."""
    existed = next((p for p in base.parents if os.path.lexists(p)), Path("."))
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                os.mkdir(candidate)
                return candidate, existed
            except FileExistsError:
                continue
    except OSError as err:
        raise RunFolderError(
            f"cannot make the run folder {str(base)!r} ({err.strerror or err}); choose a folder with --output-dir"
        ) from None
    raise AssertionError("unreachable")


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` holds a gnerf run: its ``config.json`` carries the gnerf run marker (or, written before the
    marker existed, a fitting configuration's keys)."""
    try:
        with open(out / "config.json", "rb") as f:
            config = json.loads(f.read(1 << 22))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (RUN_MARKER in config or _LEGACY_KEYS <= set(config))


def _holds_checkpoint(out: Path) -> bool:
    from gnerf.tasks.checkpoint import holds_checkpoint

    return holds_checkpoint(out)


#: Files that whatever starts a run keeps beside it, which do not make a folder foreign: the reproduction grid
#: appends the command's output to log.txt in the run folder and records a failed attempt in error.json (retried
#: next time) or failed.json.
JOB_RECORDS = ("log.txt", "error.json", "failed.json")


def _is_log(name: str) -> bool:
    """Whether ``name`` is one of the :data:`JOB_RECORDS` or a ``*.log``."""
    return name in JOB_RECORDS or name.endswith(".log")


def _check_contents(out: Path, resume: bool) -> None:
    """Refuse a folder that holds files and is not a gnerf run, and a gnerf run with a checkpoint unless
    ``resume``; a gnerf run without a checkpoint (a start that was killed) loses its files to this run."""
    entries = sorted(name for name in os.listdir(out) if name != LOCK and not is_temporary(name) and not _is_log(name))
    if not entries:
        return
    if not is_run_folder(out):
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        if resume:
            raise RunFolderError(
                f"--resume: {str(out)!r} holds no gnerf run (it holds {shown}, but no config.json "
                "of a run); point --output-dir at the folder of an earlier run"
            )
        raise RunFolderError(
            f"--output-dir {str(out)!r} holds files that are not a gnerf run ({shown}); a run "
            "starts in a new or empty folder and never writes over other files: choose another "
            "--output-dir"
        )
    if resume:
        return
    if _holds_checkpoint(out):
        raise RunFolderError(
            f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --output-dir"
        )
    clear_unfinished_run(out)  # a start that was killed before its first checkpoint: nothing to continue


def clear_unfinished_run(out: Path) -> None:
    """Delete the files a run writes besides its checkpoints and lock (:data:`RUN_FILES`, ``tensorboard/``) from
    ``out``: those of a run that stopped before its first checkpoint. Errors are ignored."""
    for name in RUN_FILES:
        with contextlib.suppress(OSError):
            os.unlink(out / name)
    board = out / "tensorboard"
    if board.is_dir() and not board.is_symlink():
        shutil.rmtree(board, ignore_errors=True)


@contextlib.contextmanager
def hold_run_folder(run: Union[Run, Path]) -> Iterator[None]:
    """Hold the run folder of ``run`` (a :class:`Run`, or a folder for a fresh run) for the ``with`` block; rank 0
    of a torchrun job alone writes it.

    Creates the folder and takes an exclusive, non-blocking ``flock`` on ``.lock`` in it (which then holds this
    process's id) before anything else is written, so a second run on the same folder stops at once. The OS
    releases the lock when the process ends, however it ends, so the lock file of a killed run never blocks
    ``--resume``. Then checks what the folder holds (see the module docstring) and deletes the temporary files
    of writes that a killed run left. If the block raises while the folder holds nothing but the lock, what this
    run created is removed again: a failed start leaves nothing behind.

    Raises:
        RunFolderError: another process holds the folder, it holds files that are not a gnerf run (or a run, and
            ``--resume`` was not given), or it cannot be created or written.
    """
    if not isinstance(run, Run):
        run = Run(FitConfig(output_dir=Path(run)), Path(run), torch.device("cpu"))
    out = run.output_dir
    held: Optional[HeldFolder] = None
    message = None
    if gdist.rank() == 0:
        try:
            held = lock_folder(out, existed=run.reserved_below)
            _check_contents(out, run.cfg.resume)
            remove_orphaned_temporaries(out)
        except RunFolderError as err:
            message = str(err)
        except OSError as err:
            message = f"cannot read the run folder {str(out)!r} ({err.strerror or err}); choose another --output-dir"
        if message is not None and held is not None:
            _undo(out, held)
            held = None
    message = gdist.broadcast_object(message)  # every rank stops with rank 0's message
    if message is not None:
        if held is None and run.reserved_below is not None and gdist.rank() == 0:
            remove_if_unused(out, (), run.reserved_below)
        raise RunFolderError(message)
    if held is not None:
        print(f"run folder: {out}", flush=True)
    try:
        yield
    except BaseException:
        if held is not None:  # a failed start leaves nothing behind
            _undo(out, held)
            held = None
        raise
    finally:
        if held is not None:
            release_folder(held)


def _undo(out: Path, held: HeldFolder) -> None:
    """Remove what this run created: the lock file, then the folder and its parents while they are empty; then
    release the lock."""
    if held.lock_created:
        with contextlib.suppress(OSError):
            os.unlink(out / LOCK)
    remove_if_unused(out, (), held.existed)
    release_folder(held)


@contextlib.contextmanager
def writing_outputs(run: Run) -> Iterator[None]:
    """The ``with`` block in which a task writes its outputs after training: a write that fails (a full disk)
    raises :class:`RunFolderError`, and Ctrl-C :class:`~gnerf.errors.Interrupted`, each saying that the checkpoint
    is kept and that ``--resume`` with the same ``--epochs`` writes the outputs again."""
    retry = Retry(str(run.output_dir), run.cfg.epochs)
    again = f"{retry.options()} (the same --epochs trains nothing and writes the outputs again)"
    try:
        yield
    except OSError as err:
        name = Path(err.filename).name if getattr(err, "filename", None) else "the outputs"
        raise RunFolderError(
            f"cannot write {name} to the run folder {str(run.output_dir)!r} "
            f"({err.strerror or err}); the checkpoint of the last epoch is kept: free disk space, "
            f"then {again}"
        ) from None
    except KeyboardInterrupt:
        what = (
            f"interrupted (Ctrl-C) while writing the outputs; the run folder {str(run.output_dir)!r} keeps the "
            f"checkpoint of epoch {run.cfg.epochs}"
        )
        raise Interrupted(f"{what}: to write them, {again}", retry, what) from None
