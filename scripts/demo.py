"""Quick start (``make demo``): train gaussian-nerf-esgd on the procedural scene, evaluate, render a video."""

import tyro

from gnerf.demo import DemoConfig, run_demo
from gnerf.errors import InputError, exit_with_error


def main() -> None:
    cfg = tyro.cli(DemoConfig)
    try:
        run_demo(cfg)
    except InputError as error:  # e.g. --scene names a folder that is not a generated scene
        exit_with_error(error)


if __name__ == "__main__":
    main()
