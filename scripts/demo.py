"""Quick start (``make demo``): train gaussian-nerf-esgd on the procedural scene, evaluate, render a video."""

import tyro

from gnerf.demo import DemoConfig, run_demo


def main() -> None:
    run_demo(tyro.cli(DemoConfig))


if __name__ == "__main__":
    main()
