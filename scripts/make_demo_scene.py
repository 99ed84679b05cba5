"""Render the procedural demo scene in Blender (nerf_synthetic) format, if it is not there already.

    python scripts/make_demo_scene.py                      # -> data/generated/procedural
    python scripts/make_demo_scene.py --image-size 80 --overwrite

The scene is described in :mod:`gnerf.scenes.procedural`; train on it with nerfstudio's
``blender-data`` dataparser.
"""

from __future__ import annotations

import time
from pathlib import Path

import tyro

from gnerf.scenes import make_blender_scene

DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "data" / "generated" / "procedural"


def main(
    out_dir: Path = DEFAULT_OUT_DIR,
    image_size: int = 64,
    num_train: int = 50,
    num_val: int = 5,
    num_test: int = 10,
    seed: int = 0,
    supersample: int = 3,
    overwrite: bool = False,
) -> Path:
    """Build the scene (skipped when a scene with these parameters is present) and print where it is.

    Args:
        out_dir: target folder; defaults to data/generated/procedural in the repository.
        image_size: width and height of every image in pixels.
        num_train: number of training views.
        num_val: number of validation views.
        num_test: number of test views (a ring at 30 degrees elevation).
        seed: camera placement seed.
        supersample: anti-aliasing rays per pixel along each axis.
        overwrite: re-render even if a matching scene is present.
    """
    start = time.perf_counter()
    path = make_blender_scene(
        out_dir,
        image_size=image_size,
        num_train=num_train,
        num_val=num_val,
        num_test=num_test,
        seed=seed,
        supersample=supersample,
        overwrite=overwrite,
    )
    print(
        f"procedural scene ({num_train} train / {num_val} val / {num_test} test, "
        f"{image_size}x{image_size}) ready at {path} ({time.perf_counter() - start:.1f} s)"
    )
    return path


if __name__ == "__main__":
    try:
        tyro.cli(main)
    except (ValueError, FileExistsError) as error:
        raise SystemExit(f"error: {error}") from None
