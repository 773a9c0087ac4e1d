"""Input noising (data noising as smoothing, Xie et al. 2017): during training, each input token is
replaced with probability p by a token drawn from the training split's unigram distribution. The targets
stay the true next tokens, so the model learns to predict from a context it cannot copy exactly; a
regulariser that costs no extra forward or backward work, for corpora small enough to be read many times."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["unigram_distribution", "noise_inputs"]


def unigram_distribution(tokens: np.ndarray, n_token: int, device: torch.device) -> Tensor:
    """Frequency of every token id in ``tokens`` (float32, sums to 1, length ``n_token``)."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=n_token)[:n_token]
    total = counts.sum()
    if total == 0:  # nothing to draw from: uniform
        return torch.full((n_token,), 1.0 / n_token, device=device)
    return torch.from_numpy(counts / total).to(device=device, dtype=torch.float32)


def noise_inputs(x: Tensor, p: float, unigram: Tensor) -> Tensor:
    """``x`` with each token replaced, independently with probability ``p``, by a unigram draw (the global
    RNG of x's device, which checkpoints save: a resumed run draws the same replacements)."""
    if p <= 0:
        return x
    replace = torch.rand(x.shape, device=x.device) < p
    draws = torch.multinomial(unigram, x.numel(), replacement=True).view(x.shape).to(x.dtype)
    return torch.where(replace, draws, x)
