"""gnerf benchmarks (issue 6): step overhead, curvature step cost, optimizer update cost, and nerf runs.

``python benchmarks/run.py --quick`` (CPU, a few minutes) or ``--gpu`` (pure torch, < 5 min on one
H100/H200); results in ``docs/benchmarks.md``.
"""
