"""Render the procedural demo scene in Blender (nerf_synthetic) format, if it is not there already.

    python scripts/make_demo_scene.py                      # -> data/generated/procedural
    python scripts/make_demo_scene.py --image-size 80 --overwrite

The scene is described in :mod:`gnerf.scenes.procedural`; train on it with nerfstudio's
``blender-data`` dataparser. The options are :func:`gnerf.scenes.make_blender_scene`'s (same names,
defaults and help), with ``--out-dir`` defaulting to data/generated/procedural in the repository.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import tyro

from gnerf.errors import InputError, exit_with_error
from gnerf.scenes import make_blender_scene

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "generated" / "procedural"


def main(args: Optional[Sequence[str]] = None) -> Path:
    """Build the scene (skipped when a scene with these parameters is present) and print where it is."""
    start = time.perf_counter()
    path = tyro.cli(functools.partial(make_blender_scene, out_dir=DEFAULT_OUT_DIR), args=args, description=main.__doc__)
    p = json.loads((path / "scene.json").read_text())
    print(
        f"procedural scene ({p['num_train']} train / {p['num_val']} val / {p['num_test']} test, "
        f"{p['image_size']}x{p['image_size']}) ready at {path} ({time.perf_counter() - start:.1f} s)"
    )
    return path


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        exit_with_error(error)
