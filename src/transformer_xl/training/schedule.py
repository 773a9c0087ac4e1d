"""Learning rate as a pure function of the step, so resuming needs nothing but the step number.

The paper trains with Adam, a linear warmup and cosine annealing to a floor (the original's
``--scheduler cosine --warmup_step --eta_min``); inverse square root and constant are the alternatives.
"""

from __future__ import annotations

import math

from ..config import OptimConfig


def learning_rate(step: int, optim: OptimConfig, *, max_steps: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a run of ``max_steps`` steps."""
    warmup = optim.warmup_steps
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
