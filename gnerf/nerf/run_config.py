"""Reading a run's ``config.yml`` without running code from it.

nerfstudio writes a run's configuration as YAML with Python tags and reads it back with PyYAML's unsafe
``yaml.Loader`` (``ns-eval``, ``ns-render``, ``ns-viewer``, ``ns-export``, ``ns-train --load-config``), which
runs whatever a tag names: ``!!python/object/apply:os.system ["..."]`` in a ``config.yml`` runs that command
as soon as the file is loaded, before anything fails. gnerf cannot change how those commands load it.

:func:`load_run_config` is what gnerf uses instead wherever gnerf reads a ``config.yml`` (the demo checks the
one it hands to ``ns-eval`` and ``ns-render``). It constructs only what nerfstudio's own configs hold:

- ``!!python/object:`` and ``!!python/name:`` of classes defined in nerfstudio, gnerf or gnerf's plugin
  registrations (``method_configs``), and of the functions listed in :data:`ALLOWED_FUNCTIONS`;
- ``!!python/object/apply:`` of ``pathlib`` paths and of enumerations defined in those packages;
- ``!!python/tuple`` and plain YAML.

Anything else (another module's function or class, a call of anything but a path or an enumeration member)
is refused with :class:`~gnerf.errors.InputError` naming the tag, and nothing of the file runs.
``python -m gnerf.nerf.run_config CONFIG.yml`` checks a file before it is given to a nerfstudio command, and
``python -m gnerf.nerf.run_config CAMERA_PATH.json`` a camera path before ``ns-render camera-path`` (which fails on
an empty one only after loading the model; :func:`check_camera_path`).
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pathlib
import sys
from pathlib import Path
from typing import Any, List, Optional

import yaml

from gnerf.errors import InputError, exit_with_error

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_PACKAGES",
    "SafeRunConfigLoader",
    "check_camera_path",
    "check_run_config",
    "load_run_config",
]

#: The packages whose classes a run's configuration may name.
ALLOWED_PACKAGES = ("nerfstudio", "gnerf", "method_configs")
#: The functions a run's configuration may name (as values, never called while loading).
ALLOWED_FUNCTIONS = ("nerfstudio.data.utils.nerfstudio_collate.nerfstudio_collate",)
_PATHS = (
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
)


def _in_allowed_package(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in ALLOWED_PACKAGES)


class SafeRunConfigLoader(yaml.SafeLoader):
    """A ``yaml.SafeLoader`` that also builds the Python objects of nerfstudio's configs, and nothing else."""

    def _refuse(self, node: yaml.Node, why: str) -> None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!", 1)
        raise yaml.constructor.ConstructorError(None, None, f"{tag} {why}", node.start_mark)

    def _resolve(self, name: str, node: yaml.Node) -> Any:
        """The class or function ``name`` (``module.attr``), imported only when its module is allowed."""
        if "__" in name:
            self._refuse(node, "names a private attribute")
        module_name, _, attr = name.rpartition(".")
        if not module_name or not _in_allowed_package(module_name):
            self._refuse(node, "names something outside nerfstudio and gnerf")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            self._refuse(node, "names nothing that exists")
        if inspect.isclass(obj) and _in_allowed_package(obj.__module__):
            return obj
        if name in ALLOWED_FUNCTIONS:
            return obj
        self._refuse(node, "is not a class defined in nerfstudio or gnerf")
        return None  # unreachable

    def construct_python_name(self, suffix: str, node: yaml.Node) -> Any:
        return self._resolve(suffix, node)

    def construct_python_object(self, suffix: str, node: yaml.MappingNode) -> Any:
        cls = self._resolve(suffix, node)
        if not inspect.isclass(cls):
            self._refuse(node, "is not a class")
        instance = cls.__new__(cls)
        yield instance
        state = self.construct_mapping(node, deep=True)
        instance.__dict__.update(state)

    def construct_python_object_apply(self, suffix: str, node: yaml.Node) -> Any:
        if suffix.startswith("pathlib."):
            cls = getattr(pathlib, suffix.partition(".")[2], None)
            if cls not in _PATHS:
                self._refuse(node, "is not a pathlib path")
        else:
            cls = self._resolve(suffix, node)
            if not (inspect.isclass(cls) and issubclass(cls, enum.Enum)):
                self._refuse(node, "is a call of something that is neither a path nor an enumeration")
        args: List[Any] = (
            self.construct_sequence(node, deep=True)
            if isinstance(node, yaml.SequenceNode)
            else self.construct_mapping(node, deep=True).get("args", [])
        )
        if not all(isinstance(a, (str, int, float)) for a in args):
            self._refuse(node, "takes arguments that are not plain values")
        return cls(*args)

    def construct_python_tuple(self, node: yaml.SequenceNode) -> tuple:
        return tuple(self.construct_sequence(node))


SafeRunConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", SafeRunConfigLoader.construct_python_tuple)
SafeRunConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", SafeRunConfigLoader.construct_python_name)
SafeRunConfigLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/object:", SafeRunConfigLoader.construct_python_object
)
SafeRunConfigLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/object/apply:", SafeRunConfigLoader.construct_python_object_apply
)


def load_run_config(path: Path) -> Any:
    """The configuration in ``path`` (a nerfstudio ``TrainerConfig``), built without running code from the file.

    Raises:
        InputError: the file is missing, not YAML, holds a tag that would run code or construct something outside
            nerfstudio and gnerf, or is not a run's configuration.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        config = yaml.load(text, Loader=SafeRunConfigLoader)  # noqa: S506 (the loader is the safe one above)
    except yaml.constructor.ConstructorError as err:
        line = f" (line {err.problem_mark.line + 1})" if err.problem_mark is not None else ""
        raise InputError(
            f"{path} is not safe to load: {err.problem}{line}; it could run code when nerfstudio's "
            "commands (ns-eval, ns-render, ns-train --load-config) load it, so do not pass it to them"
        ) from None
    except yaml.YAMLError as err:
        raise InputError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    from nerfstudio.engine.trainer import TrainerConfig

    if not isinstance(config, TrainerConfig):
        raise InputError(f"{path} is not the configuration of a nerfstudio run")
    return config


def check_run_config(path: Path) -> None:
    """Raise :class:`InputError` unless :func:`load_run_config` reads ``path``."""
    load_run_config(path)


def check_camera_path(path: Path) -> int:
    """The number of cameras of the camera path ``path`` (a ``--camera-path-filename`` of ``ns-render camera-path``),
    checked as nerfstudio reads it.

    Raises:
        InputError: the file is not JSON, lacks ``render_height``, ``render_width`` or ``seconds``, or its
            ``camera_path`` is not a non-empty list of cameras each with a 4 x 4 ``camera_to_world`` (16 numbers)
            and, unless the path's ``camera_type`` is panoramic, a ``fov``. nerfstudio fails on an empty path with
            ``RuntimeError: stack expects a non-empty TensorList`` after loading the model.
    """
    import json
    import numbers

    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path} is not a camera path (a JSON object with camera_path, render_height, ...)")
    missing = [key for key in ("render_height", "render_width", "seconds", "camera_path") if key not in meta]
    if missing:
        raise InputError(f"the camera path {path} has no {', '.join(missing)}")
    cameras = meta["camera_path"]
    if not isinstance(cameras, list) or not cameras:
        raise InputError(
            f"the camera path {path} has no cameras (its camera_path is empty): ns-render would fail "
            "after loading the model; add cameras, e.g. in ns-viewer's camera path editor"
        )
    panoramic = str(meta.get("camera_type", "perspective")).lower() in ("equirectangular", "omnidirectional", "vr180")
    for i, camera in enumerate(cameras):
        matrix = camera.get("camera_to_world") if isinstance(camera, dict) else None
        if not (isinstance(matrix, list) and len(matrix) == 16 and all(isinstance(v, numbers.Real) for v in matrix)):
            raise InputError(
                f"the camera path {path}: camera {i} needs a camera_to_world of 16 numbers (a 4 x 4 matrix, row by row)"
            )
        if not panoramic and "fov" not in camera:
            raise InputError(f"the camera path {path}: camera {i} needs a fov (the vertical field of view in degrees)")
    return len(cameras)


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m gnerf.nerf.run_config FILE ...``: check each file, a run's ``config.yml`` (that it loads without
    running code from it) or, ending in ``.json``, a camera path for ``ns-render camera-path``; one ``error:`` line
    for the first that does not pass."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: python -m gnerf.nerf.run_config CONFIG.yml|CAMERA_PATH.json [...]")
    for p in paths:
        try:
            if Path(p).suffix.lower() == ".json":
                print(f"ok: {p} is a camera path of {check_camera_path(Path(p))} camera(s)")
                continue
            check_run_config(Path(p))
        except InputError as err:
            exit_with_error(err)
        print(f"ok: {p} loads without running code from it")


if __name__ == "__main__":
    main()
