"""What ``ns-train`` with gnerf's methods checks before it trains, and the run folder it holds while it does.

nerfstudio checks little of its input: a zero where a count is needed, a scene file that is not JSON, a
checkpoint folder without checkpoints each surface as a traceback deep inside its code, some only after
training. The trainer (:mod:`gnerf.nerf.trainer`) calls the checks here where its input arrives, and each
raises :class:`~gnerf.errors.InputError` naming the option or file and the fix:

- :func:`check_options`: the counts ``ns-train`` needs to be at least 1 (iterations, rays, samples, ...).
- :func:`near_far_planes`: ``llff-data``'s near and far planes from its factors, checked.
- :func:`check_scene`: the scene folder, and for Blender scenes their ``transforms_{train,val,test}.json``
  (present, JSON, with frames and the first frame's image; the test split is what ``ns-eval`` evaluates). A
  trainer set up to evaluate on the test split (``test_mode="test"``, as the benchmarks do) reads no val split,
  so its scene needs none.
- :func:`hold_run_folder` / :func:`release_run_folder`: the lock on the run folder (``.lock``, as the
  fitting commands hold theirs), so that a second ``ns-train`` with the same ``--timestamp`` stops at once
  instead of mixing its ``config.yml`` and checkpoints with the first one's; it also deletes the temporary
  checkpoint files that a killed run left.
- :func:`read_checkpoint` / :func:`checkpoint_to_load`: ``--load-dir`` / ``--load-checkpoint`` read with
  ``weights_only=True``, so a checkpoint holding a pickled Python object is refused rather than run.
- :func:`check_saved_checkpoint`: the checkpoint folder of a finished run, before nerfstudio's ``eval_setup``
  (``ns-eval``, ``ns-render``, ...) reads it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from gnerf.errors import InputError
from gnerf.files import (
    LOCK,
    HeldFolder,
    PickledObject,
    UnreadableFile,
    lock_folder,
    read_weights_only,
    release_folder,
    remove_if_unused,
    remove_orphaned_temporaries,
)

__all__ = [
    "check_options",
    "check_saved_checkpoint",
    "check_scene",
    "checkpoint_to_load",
    "hold_run_folder",
    "near_far_planes",
    "read_checkpoint",
    "release_run_folder",
]


def check_options(config: Any) -> None:
    """Refuse the ``ns-train`` counts that must be at least 1 and an optimizer's ``ema_decay``, naming the option
    (``config``: a TrainerConfig)."""
    datamanager, model = config.pipeline.datamanager, config.pipeline.model
    counts = {
        "--max-num-iterations": config.max_num_iterations,
        "--steps-per-save": config.steps_per_save,
        "--pipeline.datamanager.train-num-rays-per-batch": getattr(datamanager, "train_num_rays_per_batch", 1),
        "--pipeline.datamanager.eval-num-rays-per-batch": getattr(datamanager, "eval_num_rays_per_batch", 1),
        "--pipeline.model.num-samples": getattr(model, "num_samples", 1),
        "--pipeline.model.eval-num-rays-per-chunk": getattr(model, "eval_num_rays_per_chunk", 1),
    }
    for option, value in counts.items():
        if value is None or value < 1:
            raise InputError(f"{option} must be >= 1, got {value}")
    if config.load_step is not None and config.load_step < 0:
        raise InputError(f"--load-step must be >= 0, got {config.load_step}")
    # the fitting loop keeps an EMA of the weights (--optim.ema-decay); nerfstudio's trainer keeps none
    for group, entry in (config.optimizers or {}).items():
        if getattr(entry.get("optimizer"), "ema_decay", None) is not None:
            raise InputError(
                f"--optimizers.{group}.optimizer.ema-decay: ns-train does not evaluate an EMA of the weights; leave it "
                "unset (the fitting commands take it)"
            )


# -- the scene ---------------------------------------------------------------------------------------------------


def near_far_planes(
    near_factor: float, far_factor: float, bounds: Any, data: Optional[Path] = None
) -> Tuple[float, float]:
    """``llff-data``'s near and far planes, ``near_factor * min(bounds)`` and ``far_factor * max(bounds)``; refuses
    factors that are not finite and > 0, or that put the near plane at or beyond the far one (scene ``data``)."""
    for option, value in (("--near-factor", near_factor), ("--far-factor", far_factor)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(
                f"{option} must be a finite number > 0 (the near and far planes are these factors "
                f"times the scene's nearest and farthest bounds), got {value}"
            )
    near, far = float(near_factor * bounds.min()), float(far_factor * bounds.max())
    if not near < far:
        raise InputError(
            f"--near-factor {near_factor} and --far-factor {far_factor} put the near plane "
            f"({near:.4g}) at or beyond the far plane ({far:.4g}) of {data}; lower "
            "--near-factor or raise --far-factor"
        )
    return near, far


BLENDER_SPLITS = ("train", "val", "test")


def blender_splits(test_mode: str) -> Tuple[str, ...]:
    """The Blender splits a trainer set up with ``test_mode`` needs: nerfstudio's datamanager reads train and,
    to evaluate on, val (``"val"``, ``ns-train``'s) or test (``"test"``, ``"inference"``). ``ns-train`` also
    needs the test split, for ``ns-eval`` later."""
    return BLENDER_SPLITS if test_mode == "val" else ("train", "test")


def check_scene(data: Optional[Path], dataparser: Any, test_mode: str = "val") -> None:
    """Refuse a scene that the dataparser would fail on: a missing folder; for nerfstudio's Blender dataparser,
    a missing, malformed or empty ``transforms_<split>.json`` of a split the trainer reads
    (:func:`blender_splits`) or a missing first image; for other dataparsers, a ``transforms.json`` that is not
    JSON."""
    if data is None:
        return
    data = Path(data)
    if not data.exists():
        raise InputError(
            f"the scene {data} does not exist: point --data at a scene folder (a Blender scene "
            "with transforms_train.json, or llff-data --data with poses_bounds.npy)"
        )
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    if isinstance(dataparser, BlenderDataParserConfig):
        for split in blender_splits(test_mode):
            _check_blender_split(data, split)
    else:
        transforms = data if data.is_file() and data.suffix == ".json" else data / "transforms.json"
        if transforms.is_file():
            _read_json(transforms)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}; "
            "fix the file or generate it again"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


def _check_blender_split(data: Path, split: str) -> None:
    path = data / f"transforms_{split}.json"
    if not path.is_file():
        if split == "train" and (data / "poses_bounds.npy").is_file():
            raise InputError(
                f"{data} holds poses_bounds.npy, not transforms_train.json: it is an LLFF scene; "
                f"add llff-data to the command (ns-train gaussian-nerf-esgd llff-data --data {data})"
            )
        need = {"train": "to train on", "val": "to evaluate during training on", "test": "for ns-eval to evaluate on"}[
            split
        ]
        raise InputError(
            f"the Blender scene {data} has no transforms_{split}.json, whose views it needs {need}; "
            f"add the file (a Blender scene has transforms_train.json, transforms_val.json and "
            "transforms_test.json)"
        )
    meta = _read_json(path)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(
            f'{path} lists no frames (its "frames" must be a non-empty list of views, each with '
            "file_path and transform_matrix)"
        )
    if "camera_angle_x" not in meta:
        raise InputError(f"{path} has no camera_angle_x (the horizontal field of view in radians)")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise InputError(f"{path}: frame {i} needs file_path and transform_matrix")
    first = data / (str(frames[0]["file_path"]).replace("./", "") + ".png")
    if not first.is_file():
        raise InputError(
            f"{path}: the image of its first frame, {first}, does not exist (file_path is read "
            "relative to the scene folder, with .png appended)"
        )


# -- the run folder ----------------------------------------------------------------------------------------------

_HELD: Dict[Path, HeldFolder] = {}


def hold_run_folder(base_dir: Path) -> None:
    """Lock the run folder ``base_dir`` (made if need be) for this process, and delete the temporary checkpoint
    files a killed run left there; nothing if this process holds it already.

    Raises:
        RunFolderError: another process holds it (the message names it and its process id), or it cannot be
            made or written.
    """
    key = Path(base_dir).resolve()
    if key in _HELD:
        return
    _HELD[key] = lock_folder(
        base_dir, what="the run folder", in_use="give this run another --timestamp or --output-dir"
    )
    remove_orphaned_temporaries(base_dir)


def check_not_an_earlier_run(base_dir: Path, load_dir: Optional[Path], load_checkpoint: Optional[Path]) -> None:
    """Raise :class:`InputError` when ``base_dir`` already holds an earlier run's checkpoints and this run does not
    continue from them (``--load-dir`` that folder's ``nerfstudio_models``, or ``--load-checkpoint`` a file in it):
    nerfstudio would write over its ``config.yml`` and its checkpoints of the same steps."""
    models = Path(base_dir) / "nerfstudio_models"
    saved = sorted(models.glob("step-*.ckpt")) if models.is_dir() else []
    if not saved:
        return
    resumes = (load_dir is not None and Path(load_dir).resolve() == models.resolve()) or (
        load_checkpoint is not None and Path(load_checkpoint).resolve().parent == models.resolve()
    )
    if not resumes:
        raise InputError(
            f"{base_dir} already holds a run (its checkpoint {saved[-1].name}), which this one would write over: "
            f"continue it with --load-dir {models}, or give this run another --timestamp or --output-dir"
        )


def release_run_folder(base_dir: Path, remove_if_empty: bool = False, up_to: Optional[Path] = None) -> None:
    """Release the lock of :func:`hold_run_folder`; with ``remove_if_empty``, remove the lock file we created and
    the folders made for the run while they hold nothing else (up to, not including, ``up_to``)."""
    held = _HELD.pop(Path(base_dir).resolve(), None)
    if held is None:
        return
    if remove_if_empty:
        if held.lock_created:
            try:
                os.unlink(Path(base_dir) / LOCK)
            except OSError:
                pass
        remove_if_unused(base_dir, (), up_to if up_to is not None else held.existed)
    release_folder(held)


# -- checkpoints -------------------------------------------------------------------------------------------------

_CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
_REQUIRED = ("step", "pipeline", "optimizers", "scalers")


def checkpoint_to_load(load_dir: Optional[Path], load_step: Optional[int], load_checkpoint: Optional[Path]) -> Path:
    """The checkpoint that ``--load-dir`` (with ``--load-step``, else the latest) or ``--load-checkpoint`` names."""
    if load_dir is not None:
        load_dir = Path(load_dir)
        if not load_dir.is_dir():
            raise InputError(
                f"--load-dir {load_dir} is not a folder; point it at the nerfstudio_models folder of an earlier run"
            )
        steps = {
            int(m.group(1)): load_dir / name for name in os.listdir(load_dir) if (m := _CHECKPOINT_NAME.match(name))
        }
        if not steps:
            raise InputError(
                f"--load-dir {load_dir} holds no checkpoint (step-NNNNNNNNN.ckpt); point it at the "
                "nerfstudio_models folder of an earlier run"
            )
        if load_step is None:
            return steps[max(steps)]
        if load_step not in steps:
            raise InputError(
                f"--load-step {load_step}: {load_dir} holds no step-{load_step:09d}.ckpt (it holds "
                f"steps {', '.join(str(s) for s in sorted(steps))})"
            )
        return steps[load_step]
    path = Path(load_checkpoint)
    if not path.is_file():
        raise InputError(f"--load-checkpoint {path} does not exist or is not a file")
    return path


def check_saved_checkpoint(checkpoint_dir: Path, load_step: Optional[int] = None) -> Path:
    """The checkpoint that nerfstudio's ``eval_setup`` (``ns-eval``, ``ns-render``, ``ns-viewer``, ``ns-export``) is
    about to load from a run's ``checkpoint_dir``: the one of ``load_step``, else the latest. That code parses every
    name in the folder as a step and takes the largest, so an empty folder (a run stopped before its first save) is
    an ``IndexError`` and any other file a ``ValueError``; here each is an :class:`InputError` naming the folder."""
    run = checkpoint_dir.parent
    if not checkpoint_dir.is_dir():
        raise InputError(
            f"the run {run} has no checkpoint folder {checkpoint_dir.name} (it stopped before its first "
            "save, or the folder was moved); train it again, or load the config.yml of a run that saved "
            "a checkpoint"
        )
    names = sorted(os.listdir(checkpoint_dir))
    other = [name for name in names if not _CHECKPOINT_NAME.match(name)]
    if other:
        raise InputError(
            f"{checkpoint_dir} holds {other[0]!r}, which is not a checkpoint (step-NNNNNNNNN.ckpt); "
            "nerfstudio reads every name in that folder as a step: move the file out"
        )
    if not names:
        raise InputError(
            f"the run {run} saved no checkpoint ({checkpoint_dir} is empty: the run stopped before its "
            "first save); train it again, or load the config.yml of a run that saved a checkpoint"
        )
    if load_step is not None and f"step-{load_step:09d}.ckpt" not in names:
        raise InputError(
            f"load_step {load_step} in the run's config.yml: {checkpoint_dir} holds no "
            f"step-{load_step:09d}.ckpt (it holds {', '.join(names)})"
        )
    return checkpoint_dir / (f"step-{load_step:09d}.ckpt" if load_step is not None else names[-1])


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """A nerfstudio checkpoint read with ``weights_only=True``: tensors and plain values, never arbitrary objects."""
    try:
        state = read_weights_only(path)
    except PickledObject as err:
        raise InputError(
            f"the checkpoint {path} holds a pickled Python object ({err}) that could run code when "
            "loaded; checkpoints of gnerf's methods hold only tensors and plain values, so it is refused: "
            "delete it or restore the original"
        ) from None
    except UnreadableFile as err:
        raise InputError(
            f"the checkpoint {path} is unreadable ({err}): delete it, or load another (--load-step, --load-checkpoint)"
        ) from None
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED):
        raise InputError(
            f"{path} is not a nerfstudio checkpoint (it lacks {', '.join(_REQUIRED)}): load another "
            "(--load-step, --load-checkpoint)"
        )
    return state
