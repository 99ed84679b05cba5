"""Optimizer variants: a registered optimizer with some of its settings changed, one value of a grid's optimizer axis.

A variant is written as a spec::

    NAME[:KEY=VALUE]...

    muon                                        the registered optimizer as it is (its lr and schedule)
    muon:lr=6e-4                                another learning rate
    adam:lr=3e-4:schedule=cosine                another lr and schedule (cosine to its default lr_final, 0)
    adam:lr=3e-4:schedule=cosine:lr_final=1e-6  ... with the schedule's own option
    muon:lr_final=1e-6                          the registered schedule (cosine for muon) with another lr_final
    adam:betas=0.9,0.99                         a tuple: comma separated; ``none`` for None

- ``NAME`` is a registered optimizer (:data:`gnerf.optim.OPTIMIZERS`, any case);
- ``KEY`` is a field of its config (``lr``, ``adam_lr``, ``betas`` ...; ``-`` or ``_``), or ``schedule``
  (``constant``, ``cosine`` or ``exponential``), or a field of the schedule (``lr_final``, ``warmup_steps``,
  ``max_steps``). A key that both have (Schedule-Free's ``warmup_steps``) is the optimizer's;
  ``schedule.KEY`` names the schedule's explicitly (and the canonical form writes it so). Schedule options without ``schedule=`` change the
  optimizer's registered schedule.

Every value is converted to its field's type and the whole variant is checked (the config's and the
schedule's own checks) when it is parsed; a bad spec is one ``ValueError`` line that names it.

A spec has one canonical form (:attr:`Variant.spec`): the name, then the optimizer's options sorted
by key, then ``schedule=KIND`` and the schedule's options sorted by key, each value written one way
(floats as Python's shortest round-trip form: ``3e-4`` becomes ``0.0003``; ``true``/``false``;
``none``). Reports name a variant by it, and its run folder is :attr:`Variant.slug`, the canonical form
with ``+`` for ``:`` (``adam+lr=0.0003+schedule=cosine``): a plain registered name is its own folder,
as before variants existed. The fitting command's options are :meth:`Variant.args`: the optimizer's
subcommand with ``--optim.KEY VALUE`` and, when the schedule changes, ``schedule:KIND`` with
``--schedule.KEY VALUE`` (tyro subcommands: last on the command line, optimizer first).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Dict, List, Optional, Tuple, Union

from gnerf.optim import OPTIMIZERS, OptimizerConfig
from gnerf.optim.schedules import SCHEDULES, ScheduleConfig, schedule_name

__all__ = ["Variant", "base_name", "canonical", "parse_variant", "recorded_equal"]

_WORD = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _fields(cls: type) -> Dict[str, Any]:
    """``{field: type}`` of a config dataclass (ClassVars left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, type(f.default)) for f in dataclasses.fields(cls)}


def _convert(text: str, tp: Any) -> Any:
    """``text`` as a value of type ``tp``; ``ValueError`` (worded for the spec's error line) if it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if text.lower() == "none" and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0])
    if origin in (tuple, Tuple):
        parts = text.split(",")
        types = [args[0]] * len(parts) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(types) != len(parts):
            raise ValueError(f"needs {len(types)} comma-separated values")
        return tuple(_convert(p, t) for p, t in zip(parts, types))
    if tp is bool:
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if text.lower() not in words:
            raise ValueError("needs true or false")
        return words[text.lower()]
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("needs a whole number") from None
    if tp is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("needs a number") from None
        if not math.isfinite(value):
            raise ValueError("needs a finite number")
        return value
    if not _WORD.match(text):
        raise ValueError("needs a word of letters, digits, '_', '.' or '-'")
    return text


def _text(value: Any) -> str:
    """The one way a value is written in a canonical spec."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _arg(key: str, value: Any, prefix: str, default: Any) -> List[str]:
    """The command-line options that set ``key`` (tyro: booleans are ``--x`` / ``--no-x`` flags)."""
    flag = f"--{prefix}.{key.replace('_', '-')}"
    if isinstance(value, bool) and isinstance(default, bool):
        return [flag if value else f"--{prefix}.no-{key.replace('_', '-')}"]
    if isinstance(value, tuple):
        return [flag, *(_text(v) if v is not None else "None" for v in value)]
    return [flag, "None" if value is None else (repr(value) if isinstance(value, float) else str(value))]


@dataclass(frozen=True)
class Variant:
    """A registered optimizer with changed options and, possibly, another schedule (see the module docstring)."""

    name: str
    options: Tuple[Tuple[str, Any], ...] = ()
    """The optimizer config's changed fields, sorted by name."""
    schedule: Optional[str] = None
    """The schedule's kind; None: the optimizer's registered schedule, unchanged."""
    schedule_options: Tuple[Tuple[str, Any], ...] = ()
    """The schedule's changed fields, sorted by name (only with a ``schedule``)."""

    @property
    def spec(self) -> str:
        """The canonical spec: how reports name this variant."""
        parts = [self.name] + [f"{k}={_text(v)}" for k, v in self.options]
        if self.schedule is not None:
            parts.append(f"schedule={self.schedule}")
            shared = {f.name for f in dataclasses.fields(OPTIMIZERS[self.name])}
            parts += [f"{'schedule.' if k in shared else ''}{k}={_text(v)}" for k, v in self.schedule_options]
        return ":".join(parts)

    @property
    def slug(self) -> str:
        """The variant's folder name: the canonical spec with ``+`` for ``:``."""
        return self.spec.replace(":", "+")

    @property
    def plain(self) -> bool:
        """A registered optimizer at its registered settings."""
        return not self.options and self.schedule is None

    def config(self) -> OptimizerConfig:
        """The optimizer config this variant runs with, as the fitting command parses it (lr None unless the spec
        sets it: the fitting task's default for the activation, :func:`gnerf.tasks.config.task_lr`)."""
        return OPTIMIZERS[self.name](**{"lr": None, **dict(self.options)})

    def schedule_config(self) -> ScheduleConfig:
        """The schedule this variant runs with."""
        if self.schedule is None:
            return OPTIMIZERS[self.name].schedule
        return SCHEDULES[self.schedule](**dict(self.schedule_options))

    def mismatches(self, config: Dict[str, Any], activation: str) -> List[str]:
        """What a run's ``config.json`` says it ran with that this variant does not run with now (``optim.lr
        0.0002, now 6.67e-05``): the optimizer's name, and each of its and its schedule's settings the file states
        (not None; a setting it predates is not compared). The lr resolved as the fitting task resolves it
        (:func:`gnerf.tasks.config.task_lr`). Empty: the run is a run of this variant."""
        from gnerf.tasks.config import task_lr

        optim_cfg = self.config()
        optim = {f.name: getattr(optim_cfg, f.name) for f in dataclasses.fields(optim_cfg)}
        optim.update(name=self.name, lr=task_lr(optim_cfg, activation))
        sched_cfg = self.schedule_config()
        sched = {f.name: getattr(sched_cfg, f.name) for f in dataclasses.fields(sched_cfg)}
        sched["name"] = schedule_name(sched_cfg)
        out = []
        for part, want in (("optim", optim), ("schedule", sched)):
            have = config.get(part) or {}
            for key, value in want.items():
                if have.get(key) is not None and not recorded_equal(have[key], value):
                    out.append(f"{part}.{key} {_text(_tuple(have[key]))}, now {_text(value)}")
        return out

    def args(self) -> List[str]:
        """The fitting command's options choosing this variant (they come last on its command line)."""
        cls = OPTIMIZERS[self.name]
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        out = [f"optim:{self.name}"]
        for key, value in self.options:
            out += _arg(key, value, "optim", defaults.get(key))
        if self.schedule is not None:
            sdefaults = {f.name: f.default for f in dataclasses.fields(SCHEDULES[self.schedule])}
            out.append(f"schedule:{self.schedule}")
            for key, value in self.schedule_options:
                out += _arg(key, value, "schedule", sdefaults.get(key))
        return out


def _tuple(value: Any) -> Any:
    """A JSON list as the tuple a config holds."""
    return tuple(value) if isinstance(value, list) else value


def recorded_equal(a: Any, b: Any) -> bool:
    """Whether a value read back from a record (JSON: lists for tuples) equals a setting; numbers to 0.5%
    (relative), the rounding of an lr written with 3 significant digits, as a grid's lrs are."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(recorded_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=5e-3, abs_tol=0.0)
    return a == b


def _split(spec: str, part: str) -> Tuple[str, str]:
    if "=" not in part:
        raise ValueError(f"optimizer spec {spec!r}: {part!r} is not KEY=VALUE (specs are NAME[:KEY=VALUE]...)")
    key, value = part.split("=", 1)
    key = key.strip().lower().replace("-", "_")
    if not key or not value.strip():
        raise ValueError(f"optimizer spec {spec!r}: {part!r} is not KEY=VALUE (specs are NAME[:KEY=VALUE]...)")
    return key, value.strip()


@cache
def parse_variant(spec: str) -> Variant:
    """The :class:`Variant` of ``spec`` (see the module docstring), checked.

    Raises:
        ValueError: one line naming ``spec`` and what is wrong with it (unknown optimizer, option or
            schedule; a value of the wrong type; a value the optimizer or schedule refuses).
    """
    text = str(spec).strip()
    name, *parts = text.split(":")
    name = name.strip().lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer spec {text!r}: unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    fields = _fields(cls)
    registered = cls.schedule
    kind: Optional[str] = None
    raw_optim: Dict[str, str] = {}
    raw_sched: Dict[str, str] = {}
    for part in parts:
        key, value = _split(text, part)
        if key == "schedule":
            if value.lower() not in SCHEDULES:
                raise ValueError(
                    f"optimizer spec {text!r}: unknown schedule {value!r}; choose one of: {', '.join(SCHEDULES)}"
                )
            kind = value.lower()
            continue
        explicit = key.startswith("schedule.")
        key = key[len("schedule.") :] if explicit else key
        target = raw_sched if explicit or key not in fields else raw_optim
        if key in target:
            raise ValueError(f"optimizer spec {text!r}: {key} is given twice")
        target[key] = value
    if raw_sched and kind is None:  # options of the registered schedule: its kind and settings stay
        kind = schedule_name(registered)
        base = {
            f.name: getattr(registered, f.name)
            for f in dataclasses.fields(registered)
            if getattr(registered, f.name) != f.default
        }
    else:
        base = {}
    options: Dict[str, Any] = {}
    for key, value in raw_optim.items():
        try:
            options[key] = _convert(value, fields[key])
        except ValueError as err:
            raise ValueError(f"optimizer spec {text!r}: {key}={value} {err}") from None
    sched: Dict[str, Any] = dict(base)
    if kind is not None:
        sfields = _fields(SCHEDULES[kind])
        for key, value in raw_sched.items():
            if key not in sfields:
                raise ValueError(
                    f"optimizer spec {text!r}: neither {name} nor its schedule {kind} has an option "
                    f"{key!r}; {name} takes {', '.join(sorted(fields))}; schedule {kind} takes "
                    f"{', '.join(sorted(sfields))}"
                )
            try:
                sched[key] = _convert(value, sfields[key])
            except ValueError as err:
                raise ValueError(f"optimizer spec {text!r}: {key}={value} {err}") from None
    variant = Variant(name, tuple(sorted(options.items())), kind, tuple(sorted(sched.items())))
    try:
        config = variant.config()
        config.check()
        variant.schedule_config().check(config.resolved_lr())
    except (TypeError, ValueError) as err:
        raise ValueError(f"optimizer spec {text!r}: {err}") from None
    return variant


def base_name(spec: str) -> str:
    """The registered optimizer a spec starts from (``muon`` for ``muon:lr=6e-4``)."""
    return parse_variant(spec).name


def canonical(spec: str) -> str:
    """The canonical form of ``spec`` (``adam:lr=3e-4`` -> ``adam:lr=0.0003``; a plain name stays as it is)."""
    return parse_variant(spec).spec
