"""Sampled softmax for training over very large vocabularies (``ModelConfig.sample_softmax``).

Training with a full softmax multiplies every hidden state by every output embedding: over One Billion
Word's 793,471 words that product dominates the step. The sampled softmax (Jean et al. 2015, as the
original release trains with ``--sample_softmax``) scores each target against the true class and a set
of sampled negative classes only.

Sampler: a log-uniform (Zipfian) distribution over token ids, which assumes the ids are sorted by
decreasing frequency (the vocabularies ``txl prepare`` builds are):

    q(k) = (log(k + 2) - log(k + 1)) / log(V + 1),   k = 0 .. V-1   (the sum telescopes to 1).

Each training step draws N ids *with replacement* (one ``torch.multinomial`` call) and keeps the distinct
ones; they are shared by every position of the batch. A class k is then among the negatives with
probability pi(k) = 1 - (1 - q(k))^N, its expected count in the distinct set. Every logit (the true
class's and the negatives') is corrected by subtracting log pi(k); sum_k exp(s_k) / pi(k) over the
distinct sample is then an unbiased (Horvitz-Thompson) estimate of the softmax normaliser. The original
release does the same with 2N tries; here ``sample_softmax N`` is the number of tries, so at most N
distinct negatives are scored. Negatives that hit the position's own target are masked out, and the
loss is the cross entropy with the true class in column 0. The estimate is biased (the log of an
unbiased sum), but its gradient points the way the full softmax's does, and it approaches the full
softmax as N grows.

It is a training-time surrogate: the model's evaluation, and any call without gradients, uses the full
softmax (``TransformerXLLM.forward`` decides). It uses the output layer's own weight and bias, so with
``tie_weight`` the gradient reaches the shared embedding.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LogUniformSampler", "sampled_softmax_nll"]


class LogUniformSampler:
    """Log-uniform sampling of negative classes over ``n_token`` ids (frequent ids first).

    A plain object (no parameters, nothing in a state dict); its distribution is computed once per device.
    """

    def __init__(self, n_token: int) -> None:
        if not isinstance(n_token, int) or n_token < 1:
            raise ValueError(f"n_token must be a positive integer, got {n_token!r}")
        self.n_token = n_token
        self._probs: dict[torch.device, Tensor] = {}

    def probs(self, device: torch.device | str | None = None) -> Tensor:
        """q(k) for every id, float64 (V,)."""
        device = torch.device("cpu" if device is None else device)
        probs = self._probs.get(device)
        if probs is None:
            k = torch.arange(self.n_token, dtype=torch.float64, device=device)
            # log(k+2) - log(k+1) = log1p(1 / (k+1)): accurate for the rare (large) ids too
            probs = torch.log1p(1.0 / (k + 1.0)) / math.log(self.n_token + 1)
            self._probs[device] = probs
        return probs

    def log_expected_count(self, ids: Tensor, n_tries: int) -> Tensor:
        """log pi(k) = log(1 - (1 - q(k))^n_tries) for each id: the chance that k is among n_tries draws."""
        q = self.probs(ids.device)[ids]
        return torch.log(-torch.expm1(n_tries * torch.log1p(-q)))

    def sample(self, n_tries: int, device: torch.device | str | None = None, *,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n_tries`` ids with replacement; return the distinct ones (S,) sorted, S <= n_tries, and
        their log expected count (S,) float64."""
        if not isinstance(n_tries, int) or n_tries < 1:
            raise ValueError(f"n_tries must be a positive integer, got {n_tries!r}")
        probs = self.probs(device)
        draws = torch.multinomial(probs, n_tries, replacement=True, generator=generator)  # (n_tries,)
        ids = torch.unique(draws)  # (S,)
        return ids, self.log_expected_count(ids, n_tries)


def sampled_softmax_nll(hidden: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None,
                        sampler: LogUniformSampler, n_tries: int, *, proj: Tensor | None = None,
                        dense: Callable[..., Tensor] = F.linear,
                        generator: torch.Generator | None = None) -> Tensor:
    """Per-position sampled-softmax negative log-likelihood: hidden (N, C), targets (N,) -> (N,).

    ``weight`` (V, d) / ``bias`` (V,) are the output layer's (the ones the full softmax uses); ``proj``
    (C, d) maps the hidden states to d first when the output embedding is smaller than the model.
    """
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
    if proj is not None:
        hidden = dense(hidden, proj.t())  # (N, C) @ (C, d) -> (N, d)
    neg_ids, neg_log_pi = sampler.sample(n_tries, hidden.device, generator=generator)  # (S,), (S,)
    true_log_pi = sampler.log_expected_count(targets, n_tries)  # (N,)

    # one gather of the rows used, so that backward builds one (V, d) weight gradient, not two
    ids = torch.cat([targets, neg_ids])  # (N + S,)
    rows = weight[ids]  # (N + S, d)
    row_bias = None if bias is None else bias[ids]
    n = targets.shape[0]
    neg_logits = dense(hidden, rows[n:], None if row_bias is None else row_bias[n:])  # (N, S)
    true_logits = (hidden * rows[:n]).sum(-1)  # (N,)
    if row_bias is not None:
        true_logits = true_logits + row_bias[:n]
    # autocast may hand us bf16/fp16 products: correct and normalise in at least float32
    dtype = torch.promote_types(neg_logits.dtype, torch.float32)
    neg_logits = neg_logits.to(dtype) - neg_log_pi.to(dtype)
    true_logits = true_logits.to(dtype) - true_log_pi.to(dtype)
    neg_logits = neg_logits.masked_fill(targets[:, None] == neg_ids[None, :], float("-inf"))  # accidental hits
    logits = torch.cat([true_logits[:, None], neg_logits], dim=1)  # (N, 1 + S), the true class in column 0
    return torch.logsumexp(logits, dim=1) - true_logits
