"""Compare optimizers on a task x activations x optimizers x instances grid: `python scripts/compare_optimizers.py --help`.

A thin tyro front end over :mod:`gnerf.tasks.compare`. Example (the quick preset, a 2-core CPU)::

    python scripts/compare_optimizers.py --quick --workers 2 --threads 1 --output-dir outputs/compare-quick
"""

from __future__ import annotations

import functools
import sys

import tyro

from gnerf.tasks.compare import CompareConfig, run_comparison


def main() -> None:
    cfg = tyro.cli(CompareConfig, description=CompareConfig.__doc__)
    try:
        run_comparison(cfg, log=functools.partial(print, flush=True))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
