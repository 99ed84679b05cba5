"""Files both front ends write and read: atomic writers, the run folder's lock, the clean-up of a failed start or of
an interrupted write, and the safe reading of torch files.

Every writer here writes a temporary file next to the target (``.<name>.<random>.tmp<suffix>``) and
``os.replace``s it into place, so an interrupted run never leaves a half-written output behind; a process
killed during a write can leave the temporary file, which :func:`remove_orphaned_temporaries` deletes when the
next run takes the folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from gnerf.errors import InputError, RunFolderError

PathLike = Union[str, Path]

__all__ = [
    "LOCK",
    "HeldFolder",
    "PathLike",
    "PickledObject",
    "UnreadableFile",
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_image",
    "atomic_write_json",
    "atomic_write_video",
    "is_temporary",
    "load_error_reason",
    "lock_folder",
    "lock_holder",
    "read_weights_only",
    "release_folder",
    "remove_if_unused",
    "remove_orphaned_temporaries",
    "require_file",
    "to_uint8",
]

#: The lock file of a run folder.
LOCK = ".lock"


def require_file(path: PathLike, what: str) -> Path:
    """``Path(path)`` if it is an existing file, else :class:`~gnerf.errors.InputError` naming it and ``what`` it is."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist or is not a file; check the path")
    return p


@contextlib.contextmanager
def _atomic(path: PathLike, tmp_dir: Optional[PathLike] = None) -> Iterator[str]:
    """The temporary file of an atomic write of ``path``, for the body to write: it then replaces ``path``
    (``os.replace``); it is written in ``tmp_dir`` (on the same file system) instead of beside ``path`` when given,
    an ``OSError`` names ``path`` (not the temporary; a full disk names neither), and the temporary is removed
    whatever happens."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent if tmp_dir is None else tmp_dir
    )
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(target)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: The names of the temporary files of :func:`atomic_write_bytes` (``tempfile.mkstemp``'s 8 random characters)
#: and of the nerfstudio trainer's earlier ``.step-NNNNNNNNN.ckpt.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$|^\.step-\d+\.ckpt\.tmp$")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of a temporary file that gnerf's atomic writers create."""
    return _TEMPORARY.match(name) is not None


def remove_orphaned_temporaries(folder: PathLike) -> int:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (call it only while holding the
    folder's lock, so that no other run is writing there); returns how many were deleted. Errors are ignored."""
    removed = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if is_temporary(entry.name) and entry.is_file(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                        removed += 1
                    except OSError:
                        pass
    except OSError:
        pass
    return removed


def atomic_write_bytes(path: PathLike, data: bytes, tmp_dir: Optional[PathLike] = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then ``os.replace``); the temporary file is written in
    ``tmp_dir`` (on the same file system) instead of beside ``path`` when given, and removed if the write fails."""
    with _atomic(path, tmp_dir) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_copy(src: PathLike, path: PathLike) -> Path:
    """Make ``path`` a copy of ``src`` atomically, ``src`` staying where it is: a hard link when the file system
    allows, else a copy of the bytes."""
    with _atomic(path) as tmp:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_torch(obj: Any, path: PathLike, tmp_dir: Optional[PathLike] = None) -> Path:
    """``torch.save`` to ``path`` atomically. Serialised in memory first, so that a full disk surfaces as an
    ``OSError`` of the write (``torch.save`` on a file reports it as a ``RuntimeError``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), tmp_dir)


class PickledObject(Exception):
    """A torch file holds a pickled Python object (named by the message), which could run code when loaded."""


class UnreadableFile(Exception):
    """A torch file that cannot be read back (truncated, empty, not a torch file); the message says which."""


def read_weights_only(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, never arbitrary objects.

    Raises:
        PickledObject: the file holds a pickled Python object (its global, e.g. ``os.system``, is the message).
        UnreadableFile: the file is empty, truncated or not a torch file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise PickledObject(found.group(1)) from None
        raise UnreadableFile("truncated, or not a torch checkpoint") from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError, OSError) as err:
        empty = isinstance(err, EOFError) and path.stat().st_size == 0
        raise UnreadableFile("the file is empty" if empty else "truncated, or not a torch checkpoint") from None


@dataclass(frozen=True)
class HeldFolder:
    """A run folder locked by :func:`lock_folder`: the lock's file descriptor, the deepest folder that existed
    before (what a failed start may remove lies below it), and whether the lock file was created."""

    fd: int
    existed: Path
    lock_created: bool


def _deepest_existing(path: Path) -> Path:
    return next((p for p in (path, *path.parents) if os.path.lexists(p)), Path(path.anchor or "."))


def _open_error(err: OSError, out: Path, existed: Path, what: str, change: str) -> RunFolderError:
    """The one-line error of a run folder ``out`` that cannot be made, or whose lock file cannot be opened."""
    lock = out / LOCK
    if err.errno == errno.ELOOP and os.path.islink(lock):
        return RunFolderError(
            f"{str(lock)!r} is a symbolic link: gnerf locks a run folder with a plain file "
            f"there and never writes through a link; remove the link, or {change}"
        )
    if err.errno == errno.ENAMETOOLONG:
        return RunFolderError(f"the run folder {_short(out)} has {_too_long(out, existed)}; {change}")
    blocker = next((p for p in (out, *out.parents) if os.path.lexists(p) and not os.path.isdir(p)), None)
    if blocker is not None:
        return RunFolderError(f"{what} {str(out)!r}: {str(blocker)!r} is a file, not a folder; {change}")
    return RunFolderError(f"cannot write the run folder {str(out)!r} ({err.strerror or err}); {change}")


def lock_folder(
    out: PathLike,
    what: str = "--output-dir",
    change: str = "choose another --output-dir",
    in_use: str = "choose another --output-dir",
    existed: Optional[Path] = None,
) -> HeldFolder:
    """Create the folder ``out`` and take an exclusive, non-blocking ``flock`` on ``out/.lock``, which then holds
    this process's id; the OS releases it when the process ends, however it ends. ``what`` names the folder in the
    messages (the option that set it), ``change`` ends them (how to use another folder) and ``in_use`` ends the one
    of a folder that another process holds; ``existed`` overrides the deepest folder that existed before (a folder
    made just before, to reserve its name).

    The lock file is opened with ``O_NOFOLLOW``: a symbolic link there is refused, never written through.

    Raises:
        RunFolderError: another process holds ``out``, or ``out`` cannot be created or written.
    """
    out = Path(out)
    existed = _deepest_existing(out) if existed is None else existed
    lock = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
        lock_created = not os.path.lexists(lock)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise _open_error(err, out, existed, what, change) from None
    if not os.path.isfile(lock):  # O_NOFOLLOW opened something that is not a plain file (a FIFO, a device)
        os.close(fd)
        raise RunFolderError(f"{str(lock)!r} is not a plain file; remove it, or {change}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        who = f"process {holder}" if holder is not None else "another process"
        raise RunFolderError(
            f"{str(out)!r} is in use by another run ({who}); wait for it to finish or {in_use}"
        ) from None
    except OSError as err:  # a file system without locks: run unprotected rather than not at all
        sys.stderr.write(
            f"warning: cannot lock {str(lock)!r} ({err.strerror}); nothing stops a second run "
            "from writing to the same folder\n"
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as err:
        os.close(fd)
        raise RunFolderError(f"cannot write the run folder {str(out)!r} ({err.strerror or err}); {change}") from None
    return HeldFolder(fd, existed, lock_created)


def _holder(fd: int) -> Optional[int]:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()  # the process id the lock file holds, if any
    return int(text) if text.isdigit() else None


def lock_holder(out: PathLike) -> Optional[int]:
    """The id of the live process holding the folder ``out`` (:func:`lock_folder`), else None (never a stale id)."""
    try:
        fd = os.open(Path(out) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it (released again when fd is closed)
    except BlockingIOError:
        return _holder(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _too_long(path: Path, existing: Path) -> str:
    """What is too long in ``path`` for the file system of ``existing``: a name in it, or the whole path."""

    def limit(name: str, default: int) -> int:
        try:
            return os.pathconf(existing, name)
        except (OSError, ValueError):
            return default

    name_max = limit("PC_NAME_MAX", 255)
    if any(len(os.fsencode(part)) > name_max for part in path.parts):
        return f"a name too long for the file system (a folder name may have at most {name_max} characters)"
    return (
        f"a path too long for the file system (a path may have at most {limit('PC_PATH_MAX', 4096) - 1} "
        f"characters; this one has {len(os.fsencode(str(path.absolute())))})"
    )


def release_folder(held: HeldFolder) -> None:
    """Release the lock of :func:`lock_folder` (closing its descriptor)."""
    try:
        os.close(held.fd)
    except OSError:
        pass


def load_error_reason(err: BaseException, limit: int = 160) -> str:
    """The line of a ``load_state_dict`` error that says what does not fit (``size mismatch for NAME: ...``,
    ``Missing key(s) ...``), not its heading ``Error(s) in loading state_dict for CLASS:``; at most ``limit``
    characters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    reason = next((line for line in lines if not line.startswith("Error(s) in loading")), lines[0])
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def _short(path: Path, keep: int = 60) -> str:
    """``repr(str(path))``, its middle elided when it is long (a path too long for the file system, say)."""
    text = str(path)
    return repr(text) if len(text) <= 2 * keep else repr(f"{text[:keep]}...{text[-keep:]}")


def remove_if_unused(folder: PathLike, removable: Collection[str], up_to: PathLike) -> None:
    """Undo a failed start: if ``folder`` holds nothing but files named in ``removable``, delete them, then
    ``folder`` and its parents while they are empty and strictly below ``up_to`` (so ``folder`` itself stays
    when it is ``up_to``). Errors are ignored."""
    folder, top = Path(folder).resolve(), Path(up_to).resolve()
    try:
        entries = os.listdir(folder)
        if set(entries) - set(removable):
            return
        for name in entries:
            os.unlink(folder / name)
        for path in (folder, *folder.parents):
            if path == top or top not in path.parents:
                break
            os.rmdir(path)
    except OSError:
        pass


def to_uint8(x: Union[Tensor, np.ndarray]) -> np.ndarray:
    """Values in [0, 1] (clipped) to ``uint8`` [0, 255]."""
    if isinstance(x, Tensor):
        x = x.detach().float().cpu().numpy()
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def atomic_write_image(path: PathLike, image: Union[Tensor, np.ndarray]) -> Path:
    """Write an ``[H, W(, C)]`` image (float in [0, 1] or ``uint8``) as PNG/JPEG, atomically."""
    import imageio.v3 as iio

    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    return atomic_write_bytes(path, iio.imwrite("<bytes>", arr, extension=Path(path).suffix or ".png"))


def atomic_write_video(path: PathLike, frames: Iterator[np.ndarray], fps: float) -> Path:
    """Encode ``uint8`` ``[H, W, 3]`` frames as H.264 mp4, atomically; returns the path.

    Odd frame sizes are encoded as yuv444p (yuv420p needs even sizes); nothing is resized.
    """
    import imageio.v2 as iio2

    target = Path(path)
    with _atomic(target) as tmp:
        writer = None
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                pix = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
                writer = iio2.get_writer(
                    tmp,
                    format="FFMPEG",
                    mode="I",
                    fps=fps,
                    codec="libx264",
                    quality=8,
                    pixelformat=pix,
                    macro_block_size=1,
                )
            writer.append_data(frame)
        if writer is None:
            raise ValueError(f"no frames to write to {str(target)!r}")
        writer.close()
    return target
