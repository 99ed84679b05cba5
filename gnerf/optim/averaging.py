r"""Evaluation weights: an exponential moving average (EMA) of a model's weights, kept beside the training.

With ``ema_decay`` :math:`\beta` set on an optimizer's config (``--optim.ema-decay 0.99``, or the spec
``psgd-kron:ema_decay=0.99``), the fitting loop keeps, after every optimizer step :math:`t`,

.. math::
    \bar\theta_1 = \theta_1, \qquad \bar\theta_t = \beta\,\bar\theta_{t-1} + (1 - \beta)\,\theta_t,

and evaluates, reports and writes out :math:`\bar\theta` instead of :math:`\theta`; the optimizer steps
:math:`\theta` as it would without it. This is ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn(beta)``: its state (the averaged weights and the count of averaged steps) is saved in
the run's checkpoint, so a resumed run continues the same average. The average spans about
:math:`1 / (1 - \beta)` steps (100 at 0.99): it smooths the step-to-step noise of minibatch training and lags the
weights by about as many steps. Measured (README, docs/ema_paper.md, docs/ema_sweep.md): several dB above the
weights mid-run, the same at the end of a 25,600-step run whose lr decays to 0, lower at the end of a 3,200-step one.
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["check_ema_decay", "weight_average"]


def check_ema_decay(decay: Optional[float]) -> None:
    """Raise ``ValueError`` unless ``decay`` is None or in [0, 1)."""
    if decay is not None and not 0.0 <= decay < 1.0:  # NaN and infinities fail the range too
        raise ValueError(f"invalid ema_decay={decay}: must be in [0, 1) (e.g. 0.99), or None for no average")


def weight_average(model: nn.Module, decay: Optional[float]) -> Optional[AveragedModel]:
    """The EMA of ``model``'s parameters with ``decay`` (None: no average); call ``update_parameters(model)``
    after each step and evaluate its ``module``. Buffers are the model's own (the fields have none that train).
    ``decay`` is the one :meth:`~gnerf.optim.configs.OptimizerConfig.check` passed."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
