"""Known deprecation warnings of the libraries below gnerf (torch, nerfstudio), shown once inside gnerf's entry points.

nerfstudio 1.1.5 predates the torch releases that deprecated some of what it calls, and its camera code
triggers torch's "non-tuple sequence for multidimensional indexing" warning on every training step. Python
shows a warning once per code location, but that memory is cleared whenever the warning filters change,
and gnerf's training step changes them on every step (:func:`gnerf.optim.step.take_step` silences one
torch warning around ``backward``), so these warnings repeat thousands of times.

:func:`upstream_warnings_once` is the context that gnerf's entry points (the nerfstudio trainer's ``setup`` and
``train``) run inside: there, each warning of :data:`KNOWN_UPSTREAM` is shown the first time only, keyed by its
category and text, whatever the filters do; every other warning is shown as Python would. Nothing changes
outside the context: no filter is set when gnerf is imported. :func:`child_warning_filters` gives the same
messages as a ``PYTHONWARNINGS`` value, for a command that starts nerfstudio's own commands (the demo) and has
shown them once already.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from typing import Iterator, Set, Tuple, Type

__all__ = ["KNOWN_UPSTREAM", "child_warning_filters", "upstream_warnings_once"]

#: The known deprecation warnings of torch and nerfstudio that gnerf's runs trigger, and torch's warning about
#: nerfstudio's fixed number of data-loader workers: (category, the start of the message). None is gnerf's to fix.
KNOWN_UPSTREAM: Tuple[Tuple[Type[Warning], str], ...] = (
    (UserWarning, "Using a non-tuple sequence for multidimensional indexing is deprecated"),
    (FutureWarning, "`torch.cuda.amp.custom_fwd(args...)` is deprecated"),
    (FutureWarning, "`torch.cuda.amp.custom_bwd(args...)` is deprecated"),
    (FutureWarning, "`torch.cuda.amp.GradScaler(args...)` is deprecated"),
    (FutureWarning, "`torch.cuda.amp.autocast(args...)` is deprecated"),
    (FutureWarning, "`torch.jit.script` is deprecated"),
    (UserWarning, "Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior"),
    # not a deprecation, but upstream's too: nerfstudio's data loaders start 4 workers whatever the machine
    (UserWarning, "This DataLoader will create"),
)

_SHOWN: Set[Tuple[Type[Warning], str]] = set()


def _known(category: Type[Warning], text: str) -> bool:
    return any(issubclass(category, c) and text.startswith(start) for c, start in KNOWN_UPSTREAM)


@contextlib.contextmanager
def upstream_warnings_once() -> Iterator[None]:
    """Inside the block, show each warning of :data:`KNOWN_UPSTREAM` once per process (see the module docstring);
    the filters and ``warnings.showwarning`` are restored after it."""
    with warnings.catch_warnings():
        shown_by = warnings.showwarning

        def show_once(message, category, filename, lineno, file=None, line=None):
            key = (category, str(message))
            if _known(category, key[1]):
                if key in _SHOWN:
                    return
                _SHOWN.add(key)
            shown_by(message, category, filename, lineno, file, line)

        warnings.showwarning = show_once
        yield


def child_warning_filters() -> str:
    """A ``PYTHONWARNINGS`` value that ignores the warnings of :data:`KNOWN_UPSTREAM` (in the processes a command
    starts after it has shown them once)."""
    entries = []
    for category, start in KNOWN_UPSTREAM:
        literal = re.split(r"[:,]", start)[0]  # PYTHONWARNINGS separates its fields with ':' and entries with ','
        entries.append(f"ignore:{literal}:{category.__name__}")
    return ",".join(entries)
