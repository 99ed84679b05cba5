"""gnerf's timing suite: step overhead, curvature step cost, optimizer update cost, data parallel and nerf runs.

``python -m benchmarks.run --quick`` (CPU, a few minutes) or ``--gpu`` (pure torch, < 5 min on one
H100/H200); results in ``docs/benchmarks.md``. ``benchmarks.recipes`` builds the registered nerfstudio
methods in-process at reduced sizes (also used by the tests); ``benchmarks/gpu`` holds the scripts of a
lent GPU machine. The paper's comparisons and one-off investigations are in ``experiments/``.
"""
