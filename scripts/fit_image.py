"""Fit an RGB image with a coordinate network: `python scripts/fit_image.py --help`.

A thin front end over :mod:`gnerf.tasks.image`; installed as the console command `gnerf-fit-image`.
"""

from gnerf.tasks.cli import image_main as main

if __name__ == "__main__":
    main()
