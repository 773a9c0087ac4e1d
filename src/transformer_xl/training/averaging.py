"""An exponential moving average of the weights (train.ema_decay): the model that checkpoints hold.

A run that reads a small corpus many times ends with weights that fit its last steps' batches; the mean
of the weights over the last few hundred steps generalises better (on the text8 sample at the cpu-7min
recipe, validation 2.31 bpc against 2.35 for the final weights at decay 0.997; benchmarks/RESULTS.md).
The average is bias-corrected like Adam's moments: after t updates it is the weighted mean of the t weights visited,
weights (1 - d) d^(t - i) normalised to sum to one, so a short run averages what it has rather than
mixing in the initial weights.

Who sees which weights: the optimiser steps the model's own (training) weights; validation, best/ and
last/ see the average, so ``txl eval``, generation and export use it with no option. A checkpoint keeps
the training weights in its training state, and a resume restores both.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn


class WeightAverage:
    """The bias-corrected exponential moving average, with decay ``decay`` per optimiser step, of
    ``model``'s parameters (kept in float32 beside them)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.named = dict(model.named_parameters())
        self.average = {name: p.detach().float().clone() for name, p in self.named.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold in the current weights: avg += w_t (p - avg), w_t = (1 - d) / (1 - d^t) (1 at the first)."""
        self.updates += 1
        weight = (1 - self.decay) / (1 - self.decay ** self.updates)
        for name, p in self.named.items():
            self.average[name].lerp_(p.detach().float(), weight)

    @contextmanager
    def applied(self) -> Iterator[dict[str, Tensor]]:
        """Inside the block the model holds the average; after it, its training weights again (exactly).
        The block gets those training weights (a copy: what a checkpoint saves for resume)."""
        training = {name: p.detach().clone() for name, p in self.named.items()}
        self._load(self.average)
        try:
            yield training
        finally:
            self._load(training)

    @torch.no_grad()
    def _load(self, weights: dict[str, Tensor]) -> None:
        for name, p in self.named.items():
            p.copy_(weights[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], average: dict[str, Tensor]) -> None:
        """Continue an average saved with ``state`` whose value ``average`` is (the checkpoint's model)."""
        self.updates = int(state["updates"])
        self.average = {name: average[name].detach().float().clone().to(p.device) for name, p in self.named.items()}
