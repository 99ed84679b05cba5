"""Fit a video with a coordinate network: `python scripts/fit_video.py --help`.

A thin front end over :mod:`gnerf.tasks.video`; installed as the console command `gnerf-fit-video`.
"""

from gnerf.tasks.cli import video_main as main

if __name__ == "__main__":
    main()
