"""Dropout whose CPU mask and scaling cost a fraction of torch's.

On CPU, ``F.dropout`` draws one Bernoulli sample per element, which took ~14% of a training step of
the char-small config here (profile in benchmarks/RESULTS.md). This module draws 64 random bits at a
time and cuts them into four 16-bit uniforms: an element is kept when its uniform is at least
round(p * 65536), i.e. with probability 1 - p' where p' = round(p * 65536) / 65536 (|p' - p| <= 2^-17),
and kept elements are scaled by 1 / (1 - p'), so the expectation is exactly preserved. Masking and
scaling are one pass each way (``addcmul`` with the boolean mask) where ``where`` then ``mul`` took two.
It draws from torch's default generator, so seeds and saved RNG states reproduce it. On other devices
it is ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _keep_mask(shape: torch.Size, threshold: int, device: torch.device) -> Tensor:
    """Boolean mask, True with probability 1 - threshold / 65536."""
    n = shape.numel()
    # Words uniform over (almost) all 64-bit patterns (the one pattern left out costs a 2^-64 bias), so each
    # of the four 16-bit lanes is a uniform int16 whatever the byte order; the lanes are read in place.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(_INT64_MIN, _INT64_MAX)
    return (words.view(torch.int16)[:n] >= threshold - 32768).view(shape)


class _MaskAndScale(torch.autograd.Function):
    """x * keep * scale in one pass, and the same for the gradient; saves only the boolean mask."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


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
        return _MaskAndScale.apply(x, keep, 65536 / (65536 - threshold))
