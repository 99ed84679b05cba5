"""gnerf's experiments: the paper's reproduction grid and one-off investigations, each with its report in docs/.

- ``python -m experiments.reproduce``: the paper's comparisons by suites (images and shapes, the other
  preconditioners, video, the contest; docs/reproduction*.md), run as grids of fitting jobs
  (:mod:`experiments.compare`, :mod:`experiments.jobs`) of optimizer variants (:mod:`experiments.variants`)
  whose finished runs are recorded in docs/data/ (:mod:`experiments.records`);
- ``python -m experiments.sweep``: the contenders' lr sweep (docs/sweep.md, docs/data/sweep/);
- ``python -m experiments.schedule_sweep``: each optimizer's schedules at its registered lr (docs/schedule_sweep.md);
- ``python -m experiments.contest``: the optimizer contest at the paper's image protocol (docs/contest.md,
  docs/data/contest/);
- ``python -m experiments.esgd_seeds``: the published ESGD over many seeds (docs/esgd_seeds.md);
- ``python -m experiments.nerf_init``: why ESGD-Max stays longer on lego's plateau (docs/lego_cpu/nerf_init.md);
- ``python -m experiments.winding``: the winding-number labels against the hand-written ones they replaced
  (docs/benchmarks.md).
"""
