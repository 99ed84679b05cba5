"""What the radiance fields look like at initialisation, on one batch of lego rays (lego's early plateau).

For gaussian-nerf-esgd's registered field (``gnerf``, 9 x 256), GARF's published network (``garf``) and
nerfstudio's coarse vanilla-nerf, all at the same rays x samples and seed, one forward and backward pass
on one training batch, no optimizer step. Prints, as markdown:

* per method: the accumulated opacity along the rays (mean, min, max), the spread of the rendered colour
  over the rays, the loss;
* per Gaussian-activated layer of the two Gaussian fields: the mean activation and its spread over the
  sample points (the mean over channels of the per-channel standard deviation), i.e. whether the signal
  still varies with position deep in the network, and the gradient norm of the layer's weight.

With ``--steps N`` it then trains gaussian-nerf-esgd (ESGD-Max) and gaussian-nerf-adam from the same
initialisation for N steps each (registered schedules for 200,000 steps) and prints, per weight matrix, the
root mean square of the last step's update and of the gradient: how far each optimizer moves the field
while it sits on the initial plateau.

    python -m experiments.nerf_init                      # lego at 100x100 px, 256 rays x 64 samples (~1 min)
    python -m experiments.nerf_init --rays 128 --steps 300   # + the update sizes after 300 steps (~10 min)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from benchmarks.common import SHARED_DATA, machine, table
from benchmarks.nerf import NerfSize, build

ROOT = Path(__file__).resolve().parents[1]

ARCHITECTURES = ("gnerf", "garf")


def probe(trainer, seed: int) -> Tuple[Dict[str, float], List[Tuple[str, float, float]], List[Tuple[str, float]]]:
    """One training batch forward and backward: ray statistics, Gaussian layer statistics, weight gradients."""
    model = trainer.pipeline.model
    layers: List[Tuple[str, float, float]] = []
    hooks = []
    for name, module in model.named_modules():
        if type(module).__name__ in ("Gaussian", "CentredGaussian"):

            def hook(m, i, o, name=name):
                a = o.detach().reshape(-1, o.shape[-1])
                layers.append((name, float(a.mean()), float(a.std(0).mean())))

            hooks.append(module.register_forward_hook(hook))
    torch.manual_seed(seed)
    ray_bundle, batch = trainer.pipeline.datamanager.next_train(0)
    outputs = model(ray_bundle)
    loss = sum(model.get_loss_dict(outputs, batch).values())
    loss.backward()
    for h in hooks:
        h.remove()
    acc = outputs.get("accumulation", outputs.get("accumulation_coarse")).detach()
    rgb = outputs["rgb"].detach()
    rays = {
        "loss": float(loss.detach()),
        "acc_mean": float(acc.mean()),
        "acc_min": float(acc.min()),
        "acc_max": float(acc.max()),
        "rgb_spread": float(rgb.std(0).mean()),
    }
    grads = [(n, float(p.grad.norm())) for n, p in model.named_parameters() if p.grad is not None and p.dim() > 1]
    return rays, layers, grads


def update_sizes(trainer, steps: int) -> Dict[str, Tuple[float, float]]:
    """Train ``steps`` steps; per weight matrix, (RMS of the last step's update, RMS of its gradient)."""
    params = {n: p for n, p in trainer.pipeline.model.named_parameters() if p.dim() > 1}
    for step in range(steps - 1):
        trainer.train_iteration(step)
    before = {n: p.detach().clone() for n, p in params.items()}
    grads: Dict[str, float] = {}

    def keep_grads(*_):
        grads.update({n: float(p.grad.pow(2).mean().sqrt()) for n, p in params.items() if p.grad is not None})

    optimizer = trainer.optimizers.optimizers["fields"]
    handle = optimizer.register_step_pre_hook(keep_grads)
    trainer.train_iteration(steps - 1)
    handle.remove()
    return {
        n: (float((p.detach() - before[n]).pow(2).mean().sqrt()), grads.get(n, float("nan"))) for n, p in params.items()
    }


def main(argv: Sequence[str] = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "nerf_synthetic" / "lego")
    ap.add_argument("--rays", type=int, default=256)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--image-scale", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="also train ESGD-Max and Adam this many steps (0: no)")
    ap.add_argument("--output", type=Path, help="also write the markdown here (atomically)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"nerfstudio\.")
    sz = NerfSize(args.rays, args.samples, args.image_scale, cadence=(50, 100))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ARCHITECTURES:
            torch.manual_seed(args.seed)
            trainer = build("gaussian-nerf-esgd", args.data, Path(tmp) / arch, sz, 200_000, "cpu", architecture=arch)
            results[f"gaussian ({arch})"] = probe(trainer, args.seed)
        torch.manual_seed(args.seed)
        vanilla = build("vanilla-nerf (coarse)", args.data, Path(tmp) / "vanilla", sz, 200_000, "cpu")
        results["vanilla-nerf (coarse)"] = probe(vanilla, args.seed)
        sizes = {}
        if args.steps:
            for method in ("gaussian-nerf-esgd", "gaussian-nerf-adam"):
                torch.manual_seed(args.seed)
                trainer = build(method, args.data, Path(tmp) / method, sz, 200_000, "cpu")
                sizes[method] = update_sizes(trainer, args.steps)
    lines = [
        f"lego ({args.data}) at scale {args.image_scale}, one batch of {args.rays} rays x {args.samples} samples "
        f"at initialisation, seed {args.seed}; {machine('cpu')}. Command: `"
        + " ".join(["python -m experiments.nerf_init", *(argv if argv is not None else sys.argv[1:])])
        + "`",
        "",
    ]
    lines.append(
        table(
            ["field", "loss", "opacity along a ray: mean [min-max]", "rendered colour: std over rays"],
            [
                (
                    m,
                    f"{r['loss']:.4f}",
                    f"{r['acc_mean']:.3f} [{r['acc_min']:.3f}-{r['acc_max']:.3f}]",
                    f"{r['rgb_spread']:.4f}",
                )
                for m, (r, _, _) in results.items()
            ],
        )
    )
    for m, (_, layers, grads) in results.items():
        if layers:
            lines += ["", f"{m}: Gaussian layers in forward order", ""]
            lines.append(
                table(
                    ["layer", "mean activation", "spread over points"],
                    [(n, f"{mu:.3f}", f"{sd:.3f}") for n, mu, sd in layers],
                )
            )
        lines += ["", f"{m}: weight gradient norms", ""]
        lines.append(table(["weight", "gradient norm"], [(n, f"{g:.2e}") for n, g in grads]))
    if sizes:
        esgd, adam = sizes["gaussian-nerf-esgd"], sizes["gaussian-nerf-adam"]
        lines += ["", f"Update and gradient RMS at step {args.steps} (registered methods, same initialisation):", ""]
        lines.append(
            table(
                ["weight", "ESGD-Max update", "Adam update", "ESGD-Max / Adam", "ESGD-Max gradient", "Adam gradient"],
                [
                    (
                        n,
                        f"{esgd[n][0]:.2e}",
                        f"{adam[n][0]:.2e}",
                        f"{esgd[n][0] / adam[n][0]:.3g}",
                        f"{esgd[n][1]:.2e}",
                        f"{adam[n][1]:.2e}",
                    )
                    for n in esgd
                ],
            )
        )
    text = "\n".join(lines)
    print(text)
    if args.output:
        from gnerf.files import atomic_write_bytes

        args.output.parent.mkdir(parents=True, exist_ok=True)
        heading = "# The Gaussian fields and vanilla-nerf at initialisation, and ESGD-Max's and Adam's first steps\n\n"
        atomic_write_bytes(args.output, (heading + text + "\n").encode())
    return text


if __name__ == "__main__":
    main()
