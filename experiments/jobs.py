"""The grid's runs as independent jobs on submitit: local processes by default, SLURM when asked.

Each job runs one fitting command (``gnerf-fit-image``, ``-occupancy`` or ``-video``) with the
arguments the grid built for it, as a child of the job's Python (``sys.executable``, the Python that
submitted the grid) with the gnerf tree that the grid imported first on ``PYTHONPATH``, so that a
checkout runs its own code even where another gnerf is installed. The command's output is appended
to ``log.txt`` in the run folder; submitit's own logs go to ``<output_dir>/jobs/``.

A job returns ``{"status": "done"}``, or ``{"status": "diverged" | "failed", "error": <the command's
error line>}``, each with ``"machine"``: the machine it ran on in a few words (:func:`machine_line`).
The fitting commands report bad input and a NaN loss as one ``error: ...`` line and exit status 1,
other failures with a traceback whose last line is kept. A job that dies (killed, out
of time) is reported as failed with submitit's last error line. One failed job never stops the others.

Local jobs: at most ``workers`` run at once; each sees the GPU when the machine has one. SLURM:
every job is submitted at once as a job array, ``workers`` of them running at a time.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "COMMANDS",
    "EngineConfig",
    "JobSpec",
    "error_line",
    "fit_job",
    "machine_line",
    "run_jobs",
    "stop_run",
]

#: The console command of each task and the function behind it (pyproject.toml's [project.scripts]).
COMMANDS = {
    "image": ("gnerf-fit-image", "image_main"),
    "occupancy": ("gnerf-fit-occupancy", "occupancy_main"),
    "video": ("gnerf-fit-video", "video_main"),
}
#: The fitting loop's words for a NaN or infinite loss (gnerf.tasks.loop): such a run diverged, it did not fail.
DIVERGED = "the training loss became"


@dataclass(frozen=True)
class EngineConfig:
    """Where and how the jobs run."""

    cluster: str = "local"
    """local (processes on this machine) or slurm."""
    workers: int = 2
    """Jobs running at once (SLURM: the job array's parallelism)."""
    threads: int = 1
    """CPU threads per job (SLURM: cpus_per_task)."""
    timeout_min: int = 24 * 60
    """Minutes a job may run before it is stopped (its run resumes on the next invocation)."""
    slurm_partition: Optional[str] = None
    """SLURM partition (None: the cluster's default)."""
    gpus_per_node: Optional[int] = None
    """GPUs per job; None: 1 where this machine has CUDA (local), else 0."""
    poll_s: float = 0.5
    """Seconds between looks at the running jobs."""


@dataclass(frozen=True)
class JobSpec:
    """One job: a fitting command's arguments and the run folder they write."""

    task: str
    args: Tuple[str, ...]
    folder: Path
    label: str = ""

    @property
    def command(self) -> str:
        """The equivalent command line, as a user would type it."""
        return shlex.join([COMMANDS[self.task][0], *self.args])


def error_line(stderr: str, returncode: int) -> str:
    """The line that says why a command failed: its ``error: ...`` line, else the last line it wrote."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"exit status {returncode}"


def machine_line() -> str:
    """This machine in a few words (CPU model, visible cores, and the GPUs a job would train on), without torch."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"CPU {cpu}, {os.cpu_count()} visible cores"
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        try:
            names = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            ).stdout.split("\n")
            gpus = [n.strip() for n in names if n.strip()]
            if gpus:
                text += f", GPU {', '.join(gpus)}"
        except (OSError, subprocess.SubprocessError):
            pass
    return text


def fit_job(spec: JobSpec, pythonpath: str) -> Dict[str, Any]:
    """Run ``spec``'s fitting command with this Python; its output is appended to the run folder's log.txt."""
    entry = COMMANDS[spec.task][1]
    code = f"import sys; from gnerf.tasks.cli import {entry}; {entry}(sys.argv[1:])"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH", "")) if p)
    spec.folder.mkdir(parents=True, exist_ok=True)
    with open(spec.folder / "log.txt", "a") as log:
        log.write(f"$ {spec.command}\n")
        log.flush()
        proc = subprocess.run(
            [sys.executable, "-c", code, *spec.args], stdout=log, stderr=subprocess.PIPE, text=True, env=env
        )
        log.write(proc.stderr)
    if proc.returncode == 0:
        return {"status": "done", "machine": machine_line()}
    error = error_line(proc.stderr, proc.returncode)
    return {"status": "diverged" if DIVERGED in error else "failed", "error": error, "machine": machine_line()}


def stop_run(folder: Path) -> Optional[int]:
    """Send SIGTERM to the fitting command holding the run folder ``folder``; returns its id (None: none holds it).

    Cancelling a local job alone does not reach its command: submitit's local jobs forward only SIGTERM, which
    their job process ignores, and a grid started in the background (``&``) has SIGINT ignored all the way down."""
    import signal

    from gnerf.files import lock_holder

    pid = lock_holder(folder)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
    return pid


def _tree() -> str:
    """The folders holding the gnerf package this process imported and this experiments package (a checkout's
    root, usually both), as a ``PYTHONPATH`` value."""
    import gnerf

    roots = dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (gnerf, sys.modules[__name__]))
    return os.pathsep.join(roots)


def _executor(cfg: EngineConfig, folder: Path):
    import submitit

    if cfg.cluster not in ("local", "slurm"):
        raise ValueError(f"--cluster {cfg.cluster!r}: choose local or slurm")
    gpus = cfg.gpus_per_node
    if gpus is None:
        import torch

        gpus = 1 if cfg.cluster == "local" and torch.cuda.is_available() else 0
    executor = submitit.AutoExecutor(folder=folder, cluster=cfg.cluster)
    executor.update_parameters(
        timeout_min=cfg.timeout_min, cpus_per_task=cfg.threads, gpus_per_node=gpus, name="gnerf-grid"
    )
    if cfg.cluster == "slurm":
        options: Dict[str, Any] = {"slurm_array_parallelism": cfg.workers}
        if cfg.slurm_partition:
            options["slurm_partition"] = cfg.slurm_partition
        executor.update_parameters(**options)
    return executor


def _outcome(job) -> Dict[str, Any]:
    try:
        return job.result()
    except Exception as err:  # noqa: BLE001 - a job that died is reported, the others go on
        return {"status": "failed", "error": f"job {job.job_id}: {_last_error(str(err)) or type(err).__name__}"}


def _last_error(message: str) -> str:
    """The line that says what went wrong in submitit's error: the last line of the job's traceback where the
    message quotes one (between lines of dashes, before the paths of its logs), else the message's last line."""
    blocks = re.split(r"^-{5,}$", message, flags=re.M)
    quoted = blocks[1] if len(blocks) >= 3 else message
    lines = [line.strip() for line in quoted.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_jobs(
    specs: Sequence[Any],
    cfg: EngineConfig,
    folder: Path,
    done: Callable[[Any, Dict[str, Any]], None] = lambda spec, result: None,
    job: Callable[[Any, str], Dict[str, Any]] = fit_job,
) -> List[Dict[str, Any]]:
    """Run every spec as a job, calling ``done(spec, result)`` as each finishes; returns the results in order.

    A job is ``job(spec, pythonpath)`` (default :func:`fit_job`: a :class:`JobSpec`'s fitting command); another job
    function must be importable by name (a module's top level) and return a dict with a ``"status"``, and its specs
    need a ``folder``. A job that raises is reported as failed with the exception's last line.

    Local jobs still running when this is interrupted (^C, or SIGTERM where the front end turns it into
    ``KeyboardInterrupt``) are cancelled and their fitting commands stopped (their runs resume next time from
    their last checkpoint); SLURM jobs are left to the cluster. Local jobs start with SIGINT ignored, so that a ^C
    in the terminal, which reaches every process of the grid, stops the grid alone, which stops the rest in order
    (submitit's job controller would otherwise die of it mid-wait and print its traceback).
    """
    executor = _executor(cfg, folder)
    pythonpath = _tree()
    results: Dict[int, Dict[str, Any]] = {}
    pending = list(enumerate(specs))
    running: Dict[Any, int] = {}
    try:
        if cfg.cluster == "slurm":
            with _on_pythonpath(pythonpath), executor.batch():
                running = {executor.submit(job, spec, pythonpath): i for i, spec in pending}
            pending = []
        while pending or running:
            while pending and len(running) < cfg.workers:
                i, spec = pending.pop(0)
                with _on_pythonpath(pythonpath), _sigint_ignored():
                    running[executor.submit(job, spec, pythonpath)] = i
            finished = [submitted for submitted in running if submitted.done()]
            if not finished:
                time.sleep(cfg.poll_s)
                continue
            for submitted in finished:
                i = running.pop(submitted)
                results[i] = _outcome(submitted)
                done(specs[i], results[i])
    finally:
        if cfg.cluster == "local":
            _stop_local(running, specs)
    return [results[i] for i in range(len(specs))]


def _stop_local(running: Dict[Any, int], specs: Sequence[Any], startup_s: float = 60.0) -> None:
    """Stop the fitting commands of the local jobs ``running``; a job whose command has not yet taken its run folder
    is waited for until it does or ends, so that its command does not start training after the grid stopped. After
    ``startup_s`` such a job is only cancelled, which a job started with SIGINT ignored does not heed."""
    waiting = dict(running)
    end = time.monotonic() + startup_s
    while waiting:
        for submitted, i in list(waiting.items()):
            if stop_run(specs[i].folder) is not None or submitted.done() or time.monotonic() > end:
                submitted.cancel(check=False)
                del waiting[submitted]
        if waiting:
            time.sleep(0.2)


class _sigint_ignored:
    """Within the block (in the main thread), SIGINT is ignored: the processes started in it inherit that."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.before = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.main:  # a handler not set from Python reads as None: the default then
            signal.signal(signal.SIGINT, signal.SIG_DFL if self.before is None else self.before)


class _on_pythonpath:
    """Within the block, ``PYTHONPATH`` starts with ``path``: submitit's job processes inherit the environment
    at submission, and must import this module (and gnerf) from the same tree as the grid."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (self.path, self.before) if p)

    def __exit__(self, *exc) -> None:
        if self.before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = self.before
