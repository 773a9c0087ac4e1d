"""Learning rate as a pure function of the step (or of the training seconds, for a time budget), so resuming
needs nothing but the step number (and the seconds, which the training state saves).

The paper trains with Adam, a linear warmup and cosine annealing to a floor (the original's
``--scheduler cosine --warmup_step --eta_min``); inverse square root and constant are the alternatives.
"""

from __future__ import annotations

import math

from ..config import OptimConfig


def learning_rate(step: int, optim: OptimConfig, *, max_steps: int, seconds: float = 0.0,
                  max_time: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a run of ``max_steps`` steps.

    With ``optim.decay_clock == "time"`` the cosine runs over ``max_time`` seconds of training instead:
    ``seconds`` is how many have passed. The warmup (still in steps) then multiplies the cosine, so the
    rate is continuous and reaches ``lr_min`` when the time is up, however fast the machine is.
    """
    warmup = optim.warmup_steps
    if optim.decay_clock == "time" and optim.schedule == "cosine":
        if max_time <= 0:
            raise ValueError("decay_clock 'time' needs max_time > 0")
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        progress = min(1.0, max(0.0, seconds) / max_time)
        return ramp * (optim.lr_min + 0.5 * (optim.lr - optim.lr_min) * (1.0 + math.cos(math.pi * progress)))
    if warmup > 0 and step < warmup:
        return optim.lr * (step + 1) / warmup  # linear warmup; never 0 at the first step
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule == "inv_sqrt":
        # lr * sqrt(warmup / step) after warmup (Vaswani et al.), continuous at the end of warmup.
        return optim.lr * math.sqrt(max(warmup, 1) / max(step + 1, 1))
    # cosine from lr at the end of warmup to lr_min at the end of the decay, then held at the floor
    decay = (optim.decay_steps or max_steps) - warmup
    if decay <= 0:
        return optim.lr_min
    progress = min(1.0, (step - warmup) / decay)
    return optim.lr_min + 0.5 * (optim.lr - optim.lr_min) * (1.0 + math.cos(math.pi * progress))
