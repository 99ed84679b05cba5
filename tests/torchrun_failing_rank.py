"""``gnerf-fit-image`` whose rank 1 raises on its third training step (run by tests/test_torchrun.py under torchrun)."""

import os
import sys

import gnerf.tasks.loop as loop
from gnerf.tasks.cli import image_main

if __name__ == "__main__":
    real = loop.take_step
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if os.environ["RANK"] == "1" and len(calls) == 3:
            raise RuntimeError("injected failure on rank 1")
        return real(*args, **kwargs)

    loop.take_step = failing
    image_main(sys.argv[1:])
