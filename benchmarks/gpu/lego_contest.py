"""Time to quality on lego: every registered Gaussian-NeRF method and nerfstudio's coarse vanilla-nerf, N steps each.

Every method is built at the same size (rays x samples per step, image scale, trunk, seed) by
``lego_convergence.build`` and trained by its real ``train_iteration`` for N = ``--steps`` steps, **its
registered learning-rate schedule compressed to those N steps** (start and final lr as registered; ESGD-Max's
curvature cadence and lr warm-up stay as registered; nerfstudio registers vanilla-nerf's RAdam 5e-4 with no
schedule, so it has none here either). Test PSNR and SSIM, the mean over ``--views`` fixed test views rendered
at ``--eval-scale`` of the training resolution against the area-downscaled ground truth, are measured off the
training clock at steps 10, 20, 30, 50 and every ``--every`` steps. The report gives PSNR / SSIM against steps
and against each method's own training wall time, and the first evaluated step (and its training time) at which
each method reaches (a) gaussian-nerf-adam's final PSNR and (b) the best final PSNR of all methods.

Records: one JSON per method in ``--records`` (default: ``--out``), ``<method>.json``, rewritten after every
evaluation: the protocol, the machine, the schedule, every evaluation (step, training seconds, CPU seconds, PSNR,
SSIM, load average) and whether the run is complete. A method whose record is complete for the same protocol is
not trained again; the report (``NAME.md``, ``NAME.png``, ``NAME.json`` in ``--out``) is rebuilt from the records,
so records committed to the repository carry a contest across working sessions. ``--report-only`` rebuilds it
without training.

Checkpoints (``--checkpoint-every K``): every K steps (at an evaluation) the trainer's state (weights, optimizer,
schedule, grad scaler), the run's RNG state, clocks and curve go to ``--checkpoints/<method>.pt``. A method whose
record is partial resumes from its checkpoint when one is there for the same protocol (the record lists the steps
it resumed from), and otherwise starts again from step 0, replacing its partial record; so does a method whose
checkpoint was saved with other settings (``schedule_of``: its optimizer, lrs and schedule, say before its
registered lr changed). A complete record is reused as it is: delete it after changing a method's registered
settings. The checkpoints live
under ``outputs/`` (not in the repository): a contest continues in another checkout only from its records, so
there a method whose record is partial starts again; finished methods carry over through their records.

``--order interleaved`` builds all methods in one process and lets them take turns of up to ``--chunk`` steps
(each method's clock counting only its own steps, the device synchronised at each turn's ends), so drifts of the
machine hit all alike, and a contest stopped part-way holds every method at about the same step; ``--order
sequential`` trains one method after another (one trainer in memory, each finishing before the next starts).
Either order resumes from the checkpoints. ``--deadline S`` stops (resumably) once the script has run S seconds;
``--stop-at-step K`` pauses every method at step K.

``--lr-scale X`` multiplies every learning rate of every method by X (the optimizers' lrs, a second algorithm's
lr, and the schedules' absolute lrs, so each schedule's shape and every ratio stay as registered): a learning-rate
screen. X enters the protocol (when it is not 1), so its records go in a folder of their own (``--records``,
``--out``) and never mix with the registered lrs'.

Presets (``--preset``; options given explicitly win):

- ``gpu``: the compressed paper protocol for one device call: lego at 400x400, 2048 rays x 128 samples, the
  registered 9 x 256 field, 4 test views (r_0, r_50, r_100, r_150) at 200x200, N = 800, every 100 steps,
  interleaved, no checkpoints (benchmarks/gpu/contest.sh);
- ``cpu``: docs/lego_cpu's sizes (100x100 training images, 128 rays x 64 samples, 2 test views at 50x50),
  N = 5000, every 100 steps, interleaved, checkpoints every 100 steps, records and report in docs/lego_cpu_contest;
- ``tiny``: a rehearsal in well under a minute on a CPU (12 steps, 32 rays x 8 samples, a 3 x 16 trunk, 5% scale).

    python -m benchmarks.gpu.lego_contest --preset gpu --deadline 470 --out $OUT               # a GPU (contest.sh)
    python -m benchmarks.gpu.lego_contest --preset cpu                                          # this CPU (hours)
    python -m benchmarks.gpu.lego_contest --preset cpu --report-only                            # rebuild the report
    python -m benchmarks.gpu.lego_contest --preset tiny --out /tmp/contest                      # a rehearsal
    python -m benchmarks.gpu.lego_contest --preset cpu --lr-scale 3 --stop-at-step 500 \
        --out docs/lego_cpu_lr_screen/x3 --methods gaussian-nerf-muon gaussian-nerf-adam-cosine       # an lr screen
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import interrupt_on_sigterm, machine, stopped_in_one_line, table
from benchmarks.gpu import lego_convergence as lc
from benchmarks.gpu.lego_convergence import VANILLA, Evaluation, Run
from gnerf.files import atomic_write_bytes

REFERENCE = "gaussian-nerf-adam"  # target (a): this method's final PSNR (the paper's Adam)
PRESETS: Dict[str, Dict[str, object]] = {
    "gpu": dict(
        image_scale=1.0,
        rays=2048,
        samples=128,
        views=4,
        eval_scale=0.5,
        steps=800,
        every=100,
        order="interleaved",
        checkpoint_every=0,
        name="lego_gpu_contest",
        out=Path("outputs/lego_gpu_contest"),
    ),
    "cpu": dict(
        image_scale=0.25,
        rays=128,
        samples=64,
        views=2,
        eval_scale=0.5,
        steps=5000,
        every=100,
        order="interleaved",
        checkpoint_every=100,
        name="lego_cpu_contest",
        out=Path("docs/lego_cpu_contest"),
        device="cpu",
    ),
    "tiny": dict(
        image_scale=0.05,
        rays=32,
        samples=8,
        hidden=16,
        layers=3,
        views=2,
        eval_scale=0.5,
        steps=12,
        every=5,
        order="interleaved",
        checkpoint_every=5,
        name="lego_tiny_contest",
        out=Path("outputs/lego_tiny_contest"),
        device="cpu",
        threads=1,
    ),
}
PROTOCOL_KEYS = (
    "image_scale",
    "rays",
    "samples",
    "hidden",
    "layers",
    "views",
    "eval_scale",
    "steps",
    "every",
    "seed",
    "lr_warmup",
)


def default_methods() -> List[str]:
    """gaussian-nerf-adam first (its final PSNR is target (a)), then the other registered methods, then vanilla-nerf."""
    from benchmarks.recipes import METHODS as REGISTERED

    return [REFERENCE] + [m for m in REGISTERED if m != REFERENCE] + [VANILLA]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from benchmarks.recipes import METHODS as REGISTERED

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="gpu", help="sizes and schedule (see the module docstring)"
    )
    p.add_argument("--data", type=Path, default=lc.default_data(), help="Blender-format lego (train and test splits)")
    p.add_argument("--out", type=Path, help="folder of the report NAME.md/.png/.json (default: the preset's)")
    p.add_argument("--name", help="file stem of the report (default: the preset's)")
    p.add_argument("--records", type=Path, help="folder of the per-method records <method>.json (default: --out)")
    p.add_argument(
        "--checkpoints", type=Path, help="folder of the per-method checkpoints (default: outputs/<name>_checkpoints)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=REGISTERED + (VANILLA,),
        help=f"default: every registered method and {VANILLA}, {REFERENCE} first",
    )
    p.add_argument("--steps", type=int, help="N: steps per method; every registered schedule is compressed to N steps")
    p.add_argument("--every", type=int, help="evaluate every this many steps (also at steps 10, 20, 30, 50)")
    p.add_argument("--order", choices=("interleaved", "sequential"))
    p.add_argument("--checkpoint-every", type=int, help="save a resumable checkpoint every this many steps (0: never)")
    p.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        help="stop (resumably) once the script has run this many seconds (0: none)",
    )
    p.add_argument(
        "--stop-at-step", type=int, default=0, help="pause every method at this step (resumably; 0: run to N)"
    )
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the records, training nothing")
    p.add_argument("--rays", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--hidden", type=int, help="trunk width (0: registered, 256)")
    p.add_argument("--layers", type=int, help="trunk linear layers (0: registered, 9)")
    p.add_argument("--image-scale", type=float, help="training resolution / the images' own")
    p.add_argument("--views", type=int, help="test views, evenly spaced over the test split")
    p.add_argument("--eval-scale", type=float, help="evaluation resolution / training resolution")
    p.add_argument("--eval-chunk", type=int, default=16384, help="rays rendered at once when evaluating")
    p.add_argument(
        "--chunk", type=int, default=100, help="interleaved: most steps of one method before the next's turn"
    )
    p.add_argument("--seed", type=int, default=42, help="nerfstudio's machine seed (registered: 42)")
    p.add_argument("--lr-warmup", type=float, default=None, help="ESGD-Max's lr warm-up base (registered 0.99)")
    p.add_argument("--lr-scale", type=lc.lr_scale, default=1.0, help=lc.LR_SCALE_HELP)
    p.add_argument("--device")
    p.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    preset = {
        "hidden": 0,
        "layers": 0,
        "threads": 0,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        **PRESETS[args.preset],
    }
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.methods = args.methods or default_methods()
    args.records = args.records or args.out
    args.checkpoints = args.checkpoints or Path("outputs") / f"{args.name}_checkpoints"
    if args.steps < 1 or args.every < 1 or args.views < 1 or not 0 < args.eval_scale <= 1 or args.chunk < 1:
        p.error("--steps, --every, --views, --chunk must be positive and --eval-scale in (0, 1]")
    if not args.report_only and not (
        (args.data / "transforms_train.json").exists() and (args.data / "transforms_test.json").exists()
    ):
        p.error(
            f"{args.data} is not a Blender-format scene with train and test splits; run "
            "`bash benchmarks/gpu/prepare.sh` or pass --data"
        )
    # what lego_convergence's build() and turn() read
    args.schedule_steps, args.max_steps, args.budget = args.steps, args.steps, math.inf
    return args


def protocol_of(args) -> Dict[str, object]:
    """What must match for two runs to be one contest: data, sizes, N, evaluation, seed."""
    from gnerf.nerf.model import GaussianNeRFModelConfig

    registered = GaussianNeRFModelConfig()
    out: Dict[str, object] = {"data": args.data.name}
    for key in PROTOCOL_KEYS:
        out[key] = getattr(args, key)
    out["hidden"] = args.hidden or registered.hidden_dim
    out["layers"] = args.layers or registered.num_layers
    if args.lr_scale != 1.0:  # absent at the registered lrs, so records made before the option still match
        out["lr_scale"] = args.lr_scale
    return out


def record_path(args, method: str) -> Path:
    return args.records / f"{method}.json"


def load_records(args, protocol: Dict[str, object]) -> Dict[str, dict]:
    """The records of ``args.methods`` found in ``args.records``; a record of another protocol stops the script."""
    records = {}
    for m in args.methods:
        path = record_path(args, m)
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("protocol") != protocol:
                raise SystemExit(
                    f"{path} was recorded under another protocol ({rec.get('protocol')}; now {protocol}): "
                    "pass another --records folder, or delete the record to run the method again"
                )
            records[m] = rec
    return records


def schedule_of(trainer) -> str:
    """The fields' optimizer and lr schedule as this trainer runs them, in words."""
    group = trainer.config.optimizers["fields"]
    opt, sched = group["optimizer"], group.get("scheduler")
    name = getattr(opt, "name", None) or type(opt).__name__.removesuffix("OptimizerConfig")
    words = f"{name} lr {opt.lr:g}"
    for field, part in (("adam_lr", "Adam"), ("esgd_lr", "ESGD")):
        if getattr(opt, field, None) is not None:
            words += f" ({part} part {getattr(opt, field):g})"
    if sched is None:
        return words + ", constant (no schedule registered)"
    kind = getattr(sched, "kind", type(sched).__name__)
    warmup = getattr(sched, "warmup_steps", 0)
    words += f", {f'linear warm-up over {warmup} steps, then ' if warmup else ''}{kind} to "
    words += f"{getattr(sched, 'lr_final', float('nan')):g} over {sched.max_steps:,} steps"
    if getattr(opt, "curvature", False):
        words += (
            f"; curvature on each of the first {opt.precondition_warmup_steps} steps, then every "
            f"{opt.precondition_frequency}th"
        )
        if getattr(opt, "lr_warmup", None) is not None:
            words += f"; lr warm-up base {opt.lr_warmup}"
    return words


def record_of(run: Run, args, protocol, previous: Optional[dict], complete: bool, note: Optional[str]) -> dict:
    started = (previous or {}).get("started_utc") or now()
    return {
        "method": run.method,
        "protocol": protocol,
        "complete": complete,
        "steps": run.steps,
        "seconds": run.seconds,
        "cpu_seconds": run.cpu_seconds,
        "stopped": run.stopped,
        "note": note,
        "schedule": schedule_of(run.trainer),
        "machine": machine(args.device),
        "threads": torch.get_num_threads(),
        "order": args.order,
        "started_utc": started,
        "updated_utc": now(),
        "resumed_from": run.resumed_from,
        "command": "python -m benchmarks.gpu.lego_contest " + " ".join(sys.argv[1:]),
        "curve": [dataclasses.asdict(e) for e in run.curve],
    }


def write_record(args, rec: dict) -> None:
    args.records.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(record_path(args, rec["method"]), (json.dumps(rec, indent=1) + "\n").encode())


def checkpoint_path(args, method: str) -> Path:
    return args.checkpoints / f"{method}.pt"


def save_checkpoint(run: Run, args, protocol) -> None:
    t = run.trainer
    state = {
        "protocol": protocol,
        "schedule": schedule_of(t),
        "step": run.steps,
        "pipeline": t.pipeline.state_dict(),
        "optimizers": {k: v.state_dict() for k, v in t.optimizers.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in t.optimizers.schedulers.items()},
        "scalers": t.grad_scaler.state_dict(),
        "rng": run.rng,
        "run": {
            "seconds": run.seconds,
            "cpu_seconds": run.cpu_seconds,
            "resumed_from": run.resumed_from,
            "curve": [dataclasses.asdict(e) for e in run.curve],
        },
    }
    path = checkpoint_path(args, run.method)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(run: Run, args, protocol) -> bool:
    """Load the method's checkpoint into its trainer and run, if there is one of this protocol."""
    path = checkpoint_path(args, run.method)
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("protocol") != protocol:
        print(f"{run.method}: {path} is of another protocol; starting from step 0", flush=True)
        return False
    t = run.trainer
    settings = schedule_of(t)
    if state.get("schedule") != settings:
        print(
            f"{run.method}: {path} was saved with other settings ({state.get('schedule')}; now {settings}); "
            "starting from step 0",
            flush=True,
        )
        return False
    t.pipeline.load_pipeline(state["pipeline"], state["step"])
    try:
        t.optimizers.load_optimizers(state["optimizers"])
    except ValueError as e:  # gnerf's optimizers refuse a state saved by another version of themselves
        raise SystemExit(
            f"{path}: {run.method}'s optimizer refuses this checkpoint ({e}); delete the file to train "
            f"{run.method} again from step 0"
        ) from e
    t.optimizers.load_schedulers(state["schedulers"])
    t.grad_scaler.load_state_dict(state["scalers"])
    run.steps, run.rng = state["step"], state["rng"]
    run.seconds, run.cpu_seconds = state["run"]["seconds"], state["run"]["cpu_seconds"]
    run.curve = [Evaluation(**e) for e in state["run"]["curve"]]
    run.resumed_from = list(state["run"]["resumed_from"]) + [run.steps]
    print(f"{run.method}: resumed from {path} at step {run.steps} ({run.seconds:.0f} s of training)", flush=True)
    return True


def marks_of(args) -> List[int]:
    marks = {m for m in (10, 20, 30, 50) if m < args.steps} | set(range(args.every, args.steps, args.every))
    if args.stop_at_step:
        marks.add(args.stop_at_step)
    return sorted(marks)


def train_group(group: Sequence[str], args, protocol, records: Dict[str, dict], t_start: float) -> None:
    """Build, resume and train ``group`` (taking turns) until each reaches N, the deadline or --stop-at-step."""
    marks = marks_of(args)
    with tempfile.TemporaryDirectory() as tmp:
        runs: Dict[str, Run] = {}
        for i, m in enumerate(group):
            trainer, _ = lc.build(m, args, Path(tmp) / str(i))
            runs[m] = Run(m, trainer)
        views = lc.TestViews(runs[group[0]].trainer, args.views, args.eval_scale)
        for m, r in runs.items():
            lc.warm_up(r.trainer, args.device)
            torch.manual_seed(args.seed)  # every run starts training from the same RNG state
            r.rng = lc.rng_state()
            if not resume(r, args, protocol) and m in records:
                print(f"{m}: no checkpoint of its partial record here; starting again from step 0", flush=True)
        px = int(runs[group[0]].trainer.pipeline.datamanager.train_dataset.cameras.width[0].item())
        print(
            f"set up {', '.join(group)} in {time.perf_counter() - t_start:.1f} s on {machine(args.device)}: "
            f"{px}x{px} px, {args.rays} rays x {args.samples} samples, N = {args.steps} steps",
            flush=True,
        )

        def save(r: Run, complete: bool, note: Optional[str] = None, checkpoint: bool = True) -> None:
            records[r.method] = record_of(r, args, protocol, records.get(r.method), complete, note)
            write_record(args, records[r.method])
            if (
                checkpoint
                and args.checkpoint_every
                and not complete
                and r.stopped is None
                and (r.steps % args.checkpoint_every == 0 or note is not None)
            ):
                save_checkpoint(r, args, protocol)
            write_report(records, args, protocol, figure=False)

        def pause(r: Run, note: str) -> None:
            if not (r.curve and r.curve[-1].step == r.steps):
                lc.evaluate(r, views, "pause")
            r.done = True
            save(r, complete=False, note=note)
            print(f"{r.method}: {note}", flush=True)

        rounds = 0
        try:
            while not all(r.done for r in runs.values()):
                order = list(runs.values()) if rounds % 2 == 0 else list(runs.values())[::-1]
                for r in order:
                    if r.done:
                        continue
                    if args.deadline and time.perf_counter() - t_start > args.deadline:
                        pause(r, f"paused by --deadline {args.deadline:.0f} at step {r.steps}")
                        continue
                    if args.stop_at_step and r.steps >= args.stop_at_step:
                        pause(r, f"paused by --stop-at-step at step {r.steps}")
                        continue
                    n = len(r.curve)
                    lc.turn(r, args, marks, [], views)
                    if len(r.curve) > n:
                        save(r, complete=r.done)
                rounds += 1
        finally:
            for r in runs.values():  # stopped by an error or ^C: keep what was measured, marked as partial
                if not r.done and r.curve and records.get(r.method, {}).get("steps") != r.steps:
                    save(r, complete=False, note=f"interrupted at step {r.steps}", checkpoint=False)
            write_report(records, args, protocol)
            del runs
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    args = parse(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # nerfstudio 1.1.5 under torch >= 2.6
    warnings.filterwarnings("ignore", category=UserWarning, module=r"nerfstudio\.")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    protocol = protocol_of(args)
    records = load_records(args, protocol)
    done = [m for m in args.methods if records.get(m, {}).get("complete")]
    todo = [] if args.report_only else [m for m in args.methods if m not in done]
    if done:
        print(f"complete in {args.records}, not trained again: {', '.join(done)}", flush=True)
    groups = [todo] if args.order == "interleaved" and todo else [[m] for m in todo]
    for group in groups:
        if args.deadline and time.perf_counter() - t_start > args.deadline:
            print(f"--deadline {args.deadline:.0f} s: not started: {', '.join(group)}", flush=True)
            continue
        train_group(group, args, protocol, records, t_start)
    md = write_report(records, args, protocol)
    print(
        f"wrote {md}, {md.with_suffix('.png')}, {md.with_suffix('.json')} "
        f"({time.perf_counter() - t_start:.0f} s in all)",
        flush=True,
    )
    return records


def curve_of(rec: dict) -> List[Evaluation]:
    return [Evaluation(**e) for e in rec.get("curve", [])]


def final_of(rec: dict) -> Optional[Evaluation]:
    curve = curve_of(rec)
    return curve[-1] if curve else None


def first_reaching(curve: Sequence[Evaluation], target: float) -> Optional[Evaluation]:
    return next((e for e in curve if math.isfinite(e.psnr) and e.psnr >= target - 1e-9), None)


def targets(records: Dict[str, dict]) -> Dict[str, Tuple[str, float, bool]]:
    """``{"a": (method, psnr, complete), "b": ...}``: gaussian-nerf-adam's final PSNR and the best final PSNR."""
    out = {}
    ref = records.get(REFERENCE)
    if ref and final_of(ref) and math.isfinite(final_of(ref).psnr):
        out["a"] = (REFERENCE, final_of(ref).psnr, bool(ref["complete"]))
    finals = [
        (final_of(r).psnr, m, bool(r["complete"]))
        for m, r in records.items()
        if final_of(r) and math.isfinite(final_of(r).psnr)
    ]
    if finals:
        psnr, m, complete = max(finals)
        out["b"] = (m, psnr, complete)
    return out


def _db(v: Optional[float]) -> str:
    return f"{v:.2f}" if v is not None and math.isfinite(v) else "n/a"


def _ssim(v: Optional[float]) -> str:
    return f"{v:.3f}" if v is not None and math.isfinite(v) else "n/a"


def report(records: Dict[str, dict], args, protocol, training: bool) -> str:
    methods = [m for m in args.methods if m in records]
    p = protocol
    lines = [f"# Time to quality on lego: {len(args.methods)} methods, N = {p['steps']:,} steps each", ""]
    complete = [m for m in args.methods if records.get(m, {}).get("complete")]
    state = (
        "Complete."
        if len(complete) == len(args.methods)
        else (
            f"Partial: {len(complete)} of {len(args.methods)} methods complete"
            + (", written while training" if training else "")
            + "."
        )
    )
    machines = sorted({records[m]["machine"] for m in methods})
    lines += [
        f"{state} Machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines) or 'n/a'}. "
        f"Records: `{args.records}` (one JSON per method); report rebuilt {now()} (UTC).",
        "",
    ]
    lines.append(
        f"Protocol: `{p['data']}`, training images at scale {p['image_scale']} of their own resolution, "
        f"{p['rays']} rays x {p['samples']} samples per step for every method, Gaussian trunk {p['layers']} x "
        f"{p['hidden']}, seed {p['seed']}. **Each method's registered learning-rate schedule is compressed to the run's "
        f"N = {p['steps']:,} steps** (start and final lr as registered, reached at step N instead of at 200,000"
        + (
            f"; **every learning rate times {p['lr_scale']:g}**, vanilla-nerf's too: a learning-rate screen"
            if "lr_scale" in p
            else ""
        )
        + "); "
        f"ESGD-Max's curvature cadence and lr warm-up stay as registered; nerfstudio registers no schedule for "
        f"vanilla-nerf (coarse network only, `benchmarks/nerf.py`). Test PSNR and SSIM: mean over {p['views']} fixed "
        f"test views rendered at {p['eval_scale']} of the training resolution against the area-downscaled ground "
        f"truth, at steps 10, 20, 30, 50 and every {p['every']}, off the training clock. Time is each method's own "
        "training wall time (the device synchronised at each turn's ends)."
    )
    orders = sorted({records[m]["order"] for m in methods})
    if "sequential" in orders:
        lines += [
            "",
            "Methods ran one after another (some perhaps in other sessions): their wall times are "
            "comparable only as far as the machine's load was alike (mean load average per run below); the CPU "
            "time (this process, all threads) is less sensitive to other work on the machine.",
        ]
    lines += [
        "",
        "| method | schedule (as run) | steps | training time (s) | mean step (ms) | CPU s / step | "
        "final test PSNR (dB) | final SSIM | best PSNR (dB) | mean load | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        r, e = records[m], final_of(records[m])
        loads = [x.load for x in curve_of(r) if x.load is not None]
        note = r.get("stopped") or r.get("note") or ("" if r["complete"] else "partial")
        if r.get("resumed_from"):
            note = (note + "; " if note else "") + "resumed at step " + ", ".join(map(str, r["resumed_from"]))
        ms = 1e3 * r["seconds"] / r["steps"] if r["steps"] else float("nan")
        cpu = r["cpu_seconds"] / r["steps"] if r["steps"] else float("nan")
        lines.append(
            f"| {m} | {r['schedule']} | {r['steps']} | {r['seconds']:.1f} | {ms:.1f} | {cpu:.2f} | "
            f"{_db(e.psnr if e else None)} | {_ssim(e.ssim if e else None)} | "
            f"{_db(max((x.psnr for x in curve_of(r) if math.isfinite(x.psnr)), default=None))} | "
            f"{f'{sum(loads) / len(loads):.1f}' if loads else 'n/a'} | {note} |"
        )
    missing = [m for m in args.methods if m not in records]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]

    goal = targets(records)
    lines += ["", "## Time to quality", ""]
    if not goal:
        lines.append("(no evaluation yet)")
    else:
        words = []
        for key, label in (("a", "(a) gaussian-nerf-adam's final PSNR"), ("b", "(b) the best final PSNR")):
            if key in goal:
                m, v, ok = goal[key]
                words.append(f"{label}: **{v:.2f} dB** ({m}{'' if ok else ', partial run'})")
        lines += [
            "; ".join(words) + ". First evaluated step at or above each target and the method's training "
            "time there (evaluations every "
            f"{p['every']} steps bound the resolution):",
            "",
        ]
        head = ["method"]
        for key in ("a", "b"):
            if key in goal:
                head += [f"step to ({key})", f"time to ({key}) (s)", f"CPU s to ({key})"]
        rows = []
        for m in methods:
            row: List[object] = [m]
            for key in ("a", "b"):
                if key in goal:
                    e = first_reaching(curve_of(records[m]), goal[key][1])
                    row += (
                        [e.step, f"{e.seconds:.1f}", f"{e.cpu_seconds:.0f}" if e.cpu_seconds is not None else "n/a"]
                        if e
                        else [f"not by step {records[m]['steps']}", "", ""]
                    )
            rows.append(row)
        lines.append(table(head, rows))

    lines += ["", "## Test PSNR (dB) / SSIM against steps", ""]
    steps = sorted({e.step for m in methods for e in curve_of(records[m])})
    rows = []
    for s in steps:
        row: List[object] = [s]
        for m in methods:
            e = next((x for x in curve_of(records[m]) if x.step == s), None)
            row += [_db(e.psnr), _ssim(e.ssim)] if e else ["", ""]
        rows.append(row)
    head = ["step"] + [f"{m} {k}" for m in methods for k in ("PSNR", "SSIM")]
    lines.append(table(head, rows) if rows else "(no evaluation yet)")

    lines += [
        "",
        "## Test PSNR (dB) against training wall time",
        "",
        "Each method's last evaluation at or before each time (its step in brackets).",
        "",
    ]
    longest = max((records[m]["seconds"] for m in methods), default=0.0)
    rows = []
    for k in range(1, 9):
        t = longest * k / 8
        row = [f"{t:.0f}" if longest >= 80 else f"{t:.1f}"]
        for m in methods:
            e = [x for x in curve_of(records[m]) if x.seconds <= t + 1e-9]
            row.append(f"{_db(e[-1].psnr)} ({e[-1].step})" if e else "")
        rows.append(row)
    lines.append(table(["time (s)"] + methods, rows) if longest > 0 else "(no evaluation yet)")
    commands = sorted({records[m]["command"] for m in methods})
    lines += ["", "Command" + ("s" if len(commands) > 1 else "") + ": " + "; ".join(f"`{c}`" for c in commands), ""]
    return "\n".join(lines)


def plot(records: Dict[str, dict], args, path: Path, title: str) -> None:
    """Test PSNR against steps and against training time, SSIM against steps; the two targets dashed (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_t, ax_q) = plt.subplots(1, 3, figsize=(16, 4.2))
    for m in args.methods:
        if m not in records:
            continue
        pts = [e for e in curve_of(records[m]) if math.isfinite(e.psnr)]
        if not pts:
            continue
        (line,) = ax_s.plot([e.step for e in pts], [e.psnr for e in pts], marker="o", ms=2.5, label=m)
        ax_t.plot([e.seconds for e in pts], [e.psnr for e in pts], marker="o", ms=2.5, label=m, color=line.get_color())
        q = [e for e in pts if e.ssim is not None and math.isfinite(e.ssim)]
        ax_q.plot([e.step for e in q], [e.ssim for e in q], marker="o", ms=2.5, label=m, color=line.get_color())
    for key, (_, v, _) in targets(records).items():
        for ax in (ax_s, ax_t):
            ax.axhline(v, color="grey", ls="--", lw=0.8)
            ax.annotate(
                f"({key}) {v:.2f} dB",
                (0.01, v),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                va="bottom",
                color="grey",
            )
    ax_s.set_xlabel("training step")
    ax_t.set_xlabel("training wall time (s)")
    ax_q.set_xlabel("training step")
    ax_s.set_ylabel("test PSNR (dB)")
    ax_t.set_ylabel("test PSNR (dB)")
    ax_q.set_ylabel("test SSIM")
    for ax in (ax_s, ax_t, ax_q):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def write_report(records: Dict[str, dict], args, protocol, figure: bool = True) -> Path:
    """NAME.md, and with ``figure`` (not while training) NAME.png and NAME.json (every record, the targets), in ``args.out``."""
    args.out.mkdir(parents=True, exist_ok=True)
    md = args.out / f"{args.name}.md"
    atomic_write_bytes(md, report(records, args, protocol, training=not figure).encode())
    if figure:
        goal = {k: {"method": m, "psnr": v, "complete": ok} for k, (m, v, ok) in targets(records).items()}
        data = {"protocol": protocol, "targets": goal, "methods": {m: records[m] for m in args.methods if m in records}}
        atomic_write_bytes(md.with_suffix(".json"), (json.dumps(data, indent=1) + "\n").encode())
        machines = "; ".join(sorted({r["machine"] for r in records.values()}))
        plot(
            records,
            args,
            md.with_suffix(".png"),
            f"lego, {protocol['rays']} rays x {protocol['samples']} samples, scale {protocol['image_scale']}, "
            f"N = {protocol['steps']}, schedules compressed to N; {machines}",
        )
    return md


if __name__ == "__main__":
    interrupt_on_sigterm()  # stopped from outside (run_until, timeout): write what was measured
    kept = (
        "its records and report are written and each method resumes from its last checkpoint: run the same command "
        "to continue"
    )
    with stopped_in_one_line("lego contest", kept):
        main()
