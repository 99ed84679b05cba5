"""Shared benchmark code: the GARF trunk, timing, peak memory, machine description, markdown tables,
the shared data folder and a free TCP port for process groups (the tests use these two as well).

Pure torch + gnerf (no nerfstudio, no tyro), so that benchmarks (1)-(3) run on a bare GPU machine.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from gnerf.fields import CoordinateMLP
from gnerf.metrics import mse  # noqa: F401  (the benchmarks import their loss from here)

#: The data shared by the benchmarks and tests: ``../shared/data`` next to the repository.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The repository's root.
REPOSITORY = Path(__file__).resolve().parents[1]


def shown(path: Path) -> str:
    """``path`` as a report names it: relative to the repository when it is inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPOSITORY))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool):
    """Within the block, CUDA float32 matmuls use TF32 (tensor cores) or not; the previous setting after it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread, so that ``finally`` blocks write what a
    benchmark has measured when it is stopped from outside (``timeout``, ``benchmarks/gpu/env.sh:run_until``)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def stopped_in_one_line(what: str, kept: str):
    """Within the block, a stop from outside (^C, or SIGTERM after :func:`interrupt_on_sigterm`) ends the process
    with one line, ``error: WHAT stopped (HOW); KEPT``, and exit status 130, instead of a traceback; the block's
    own ``finally`` clauses have run by then."""
    try:
        yield
    except KeyboardInterrupt as err:
        from gnerf.errors import Interrupted, exit_interrupted

        exit_interrupted(Interrupted(f"{what} stopped ({str(err) or 'Ctrl-C'}); {kept}"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TrunkSpec:
    """The Gaussian radiance-field (GARF) trunk at some batch: ``CoordinateMLP(3 -> 1 + width)``."""

    points: int = 2048 * 128  # the paper's 2048 rays x 128 samples
    width: int = 256
    layers: int = 9
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0

    def describe(self) -> str:
        return f"GARF trunk {self.layers} x {self.width} (Gaussian, sigma 0.1, skip), {self.points:,} points per step"


def make_trunk(spec: TrunkSpec) -> torch.nn.Module:
    return CoordinateMLP(
        3,
        1 + spec.width,
        hidden_dim=spec.width,
        num_layers=spec.layers,
        activation="gaussian",
        activation_kwargs={"sigma": 0.1},
        skip_connections=(spec.layers // 2 + 1,),
    )


def make_batch(spec: TrunkSpec) -> Tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(spec.seed)
    x = (torch.rand(spec.points, 3, generator=g) * 3 - 1.5).to(spec.device)
    y = torch.rand(spec.points, 1 + spec.width, generator=g).to(spec.device)
    return x, y


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


class Timer:
    """Wall time of a block, synchronising the device on entry and exit."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def peak_memory(fn: Callable[[], object], device: str) -> float:
    """Peak device memory (GiB) allocated while ``fn`` runs, above what was allocated before; NaN on CPU."""
    if not is_cuda(device):
        return float("nan")
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def step_stats(times: Sequence[Tuple[float, bool]]) -> Dict[str, float]:
    """Mean seconds over all, plain and curvature steps of ``(seconds, was_curvature_step)`` pairs, and the counts."""
    plain = [t for t, c in times if not c]
    curv = [t for t, c in times if c]
    return dict(
        mean=sum(t for t, _ in times) / len(times),
        plain=sum(plain) / len(plain),
        curv=sum(curv) / len(curv) if curv else float("nan"),
        n_curv=len(curv),
        n=len(times),
    )


def interleaved_medians(
    fns: Dict[str, Callable[[], object]], device: str, reps: int, warmup: int = 2
) -> Dict[str, float]:
    """Median seconds of each function, the functions run in turn ``reps`` times (noise hits all alike)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            with Timer(device) as t:
                fn()
            times[k].append(t.seconds)
    return {k: statistics.median(v) for k, v in times.items()}


def machine(device: str) -> str:
    if is_cuda(device):
        return f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads ({os.cpu_count()} visible cores), torch {torch.__version__}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def section(title: str, spec_line: str, body: str, notes: Optional[Sequence[str]] = None) -> str:
    text = f"### {title}\n\n{spec_line}\n\n{body}\n"
    if notes:
        text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text


def today() -> str:
    return datetime.date.today().isoformat()
