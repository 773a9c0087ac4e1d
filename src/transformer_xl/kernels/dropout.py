"""Dropout whose CPU mask costs a fraction of torch's.

On CPU, ``F.dropout`` draws one Bernoulli sample per element, which took ~14% of a training step of
the char-small config here (profile in benchmarks/RESULTS.md). This module draws 64 random bits at a
time and cuts them into three 16-bit uniforms: an element is kept when its uniform is at least
round(p * 65536), i.e. with probability 1 - p' where p' = round(p * 65536) / 65536 (|p' - p| <= 2^-17),
and kept elements are scaled by 1 / (1 - p'), so the expectation is exactly preserved. It draws from
torch's default generator, so seeds and saved RNG states reproduce it. On other devices it is
``F.dropout``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _keep_mask(shape: torch.Size, threshold: int, device: torch.device) -> Tensor:
    """Boolean mask, True with probability 1 - threshold / 65536."""
    n = shape.numel()
    # random_() on int64 is uniform over [0, 2^63): the low three 16-bit lanes of each word are uniform
    # over all 16-bit values (the top lane lacks the sign bit and is dropped).
    words = torch.empty((n + 2) // 3, dtype=torch.int64, device=device).random_()
    lanes = slice(0, 3) if sys.byteorder == "little" else slice(1, 4)
    keep = words.view(torch.int16).view(-1, 4)[:, lanes] >= threshold - 32768  # (words, 3) bool
    return keep.view(-1)[:n].view(shape)


class CheapDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU (see the module docstring); installed by swapping the
    class of an existing ``nn.Dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True, self.inplace)
        threshold = round(self.p * 65536)
        if threshold >= 65536:
            return torch.zeros_like(x)
        keep = _keep_mask(x.shape, threshold, x.device)
        return torch.where(keep, x, 0.0).mul_(65536 / (65536 - threshold))
