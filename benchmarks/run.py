"""Run gnerf's timing suite and write one markdown report.

    python -m benchmarks.run --quick                 # this CPU, a few minutes, all five
    python -m benchmarks.run --gpu --output gpu.md   # one H100 / H200, < 5 min: (1)-(3), pure torch
    python -m benchmarks.run --quick --only 1 2      # a subset

(1)-(3) and (6) need only torch (no nerfstudio, no tyro); (4), (5) and (7) need nerfstudio and the lego scene.
(6) spawns DDP processes: 2 on the CPU (gloo), one per GPU with --gpu (skipped on a single GPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import SHARED_DATA, TrunkSpec, machine, today


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced sizes that fit a 2-core CPU in a few minutes")
    mode.add_argument("--gpu", action="store_true", help="paper batch on the GPU(s), (1)-(3) and (6), < 5 minutes")
    ap.add_argument("--only", type=int, nargs="+", choices=[1, 2, 3, 4, 5, 6, 7], help="run these benchmarks only")
    ap.add_argument("--processes", type=int, help="(6): DDP processes (default: 2 on CPU, every GPU with --gpu)")
    ap.add_argument("--points", type=int, help="points per step for (1)-(3) (default: 262,144; --quick 1,024)")
    ap.add_argument("--rounds", type=int, help="(1): alternating rounds of 100 steps per optimizer")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA / "nerf_synthetic" / "lego",
        help="(4), (5), (7): a Blender-format scene",
    )
    ap.add_argument("--rays", type=int, help="(4), (5), (7): rays per step (default: 64 with --quick, else 2048)")
    ap.add_argument("--samples", type=int, help="(4), (5), (7): samples per ray (default: 32 with --quick, else 128)")
    ap.add_argument(
        "--image-scale", type=float, help="(4), (5), (7): image downscale (default: 0.25 with --quick, else 1)"
    )
    ap.add_argument(
        "--budget", type=float, help="(5): training seconds per method (default: 45 with --quick, else 600)"
    )
    ap.add_argument("--checkpoints", type=int, help="(5): evaluations per method over the budget (default 3 / 6)")
    ap.add_argument(
        "--plain-gaussian",
        action="store_true",
        help="(4): also gaussian-nerf-esgd with its Gaussians as plain autograd (measures the fused activation)",
    )
    ap.add_argument("--tf32", action="store_true", help="(4): also gaussian-nerf-esgd with TF32 matmuls (GPU)")
    ap.add_argument("--figure", type=Path, help="(5): also plot test PSNR against time here (PNG)")
    ap.add_argument("--output", type=Path, help="write the markdown here (default: print only)")
    args = ap.parse_args(argv)
    if args.gpu and not args.device.startswith("cuda"):
        raise SystemExit("--gpu needs a CUDA device")
    which = set(args.only or ([1, 2, 3, 6] if args.gpu else [1, 2, 3, 4, 5, 6, 7]))

    quick = args.quick or (not args.gpu and not args.device.startswith("cuda"))
    points = args.points or (1024 if quick else 2048 * 128)
    spec = TrunkSpec(points=points, device=args.device)
    rounds = args.rounds or (2 if quick else 3)
    command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    parts = [
        f"## {'GPU' if args.device.startswith('cuda') else 'CPU'} results: {machine(args.device)}\n",
        f"Command: `{command}`; date {today()}; "
        f"{'reduced CPU batch' if points < 2048 * 128 else 'the paper batch'} of {points:,} points for (1)-(3).\n",
    ]
    t_all = time.perf_counter()

    def emit(text: str) -> None:
        print(text, flush=True)
        parts.append(text)
        if args.output:  # rewritten after every benchmark: a run stopped part-way keeps what it measured
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text("\n".join(parts))

    from benchmarks import trunk

    if 1 in which:
        emit(trunk.step_overhead(spec, rounds=rounds)[0])
    if 2 in which:
        emit(trunk.curvature_cost(spec, reps=5 if quick else 20)[0])
    if 3 in which:
        emit(trunk.update_cost(spec, reps=20 if quick else 200)[0])
    if 6 in which:
        from benchmarks import ddp

        processes = args.processes or (torch.cuda.device_count() if args.device.startswith("cuda") else 2)
        if processes < 2:
            emit("### (6) Data parallel\n\nSkipped: it needs at least two processes (GPUs).\n")
        else:
            emit(ddp.ddp_overhead(spec, processes, rounds=rounds)[0])
    if which & {4, 5, 7}:
        from benchmarks import nerf

        sz = nerf.size(quick, rays=args.rays, samples=args.samples, image_scale=args.image_scale)
        if 4 in which:
            emit(
                nerf.throughput(
                    args.data,
                    device=args.device,
                    quick=quick,
                    sz=sz,
                    plain_gaussian=args.plain_gaussian,
                    tf32=args.tf32,
                )[0]
            )
        if 7 in which:
            from benchmarks import nerf_profile

            emit(nerf_profile.breakdown(args.data, device=args.device, quick=quick, sz=sz)[0])
        if 5 in which:
            emit(
                nerf.convergence(
                    args.data,
                    device=args.device,
                    quick=quick,
                    sz=sz,
                    budget=args.budget,
                    checkpoints=args.checkpoints,
                    figure=args.figure,
                )[0]
            )
    emit(f"_Total benchmark time {time.perf_counter() - t_all:.0f} s._\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
