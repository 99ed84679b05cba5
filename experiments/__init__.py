"""gnerf's experiments: the paper's reproduction grid and one-off investigations, each with its report in docs/.

- ``python -m experiments.reproduce``: the paper's image and shape comparisons (docs/reproduction*.md), run
  as a grid of fitting jobs (:mod:`experiments.compare`, :mod:`experiments.jobs`);
- ``python -m experiments.esgd_seeds``: the published ESGD over many seeds (docs/esgd_seeds.md);
- ``python -m experiments.nerf_init``: why ESGD-Max stays longer on lego's plateau (docs/lego_cpu/nerf_init.md);
- ``python -m experiments.winding``: the winding-number labels against the hand-written ones they replaced
  (docs/benchmarks.md).
"""
