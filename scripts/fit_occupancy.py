"""Fit the occupancy of a mesh with a coordinate network: `python scripts/fit_occupancy.py --help`.

A thin front end over :mod:`gnerf.tasks.occupancy`; installed as the console command `gnerf-fit-occupancy`.
"""

from gnerf.tasks.cli import occupancy_main as main

if __name__ == "__main__":
    main()
