"""The time-to-quality baseline: its evaluation scores every target once, with at least half a window."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gpt_baseline import GPT, GPTConfig, evaluate_gpt, train_gpt  # noqa: E402


def brute_force(model: GPT, tokens: np.ndarray) -> float:
    """Each target t (1-based) predicted from the window of `context` tokens ending at the first window
    end e >= t that evaluate_gpt uses; computed one target at a time."""
    data = torch.from_numpy(tokens.astype(np.int64))
    span, half, n = model.config.context, model.config.context // 2, len(tokens) - 1
    first = min(span, n)
    ends = [min(e, n) for e in range(first + half, n + half, half)]
    total = 0.0
    with torch.no_grad():
        for t in range(1, n + 1):
            e = first if t <= first else next(e for e in ends if e >= t)
            start = 0 if t <= first else e - span
            logits = model(data[None, start:e])[0]  # (e - start, V)
            total += float(F.cross_entropy(logits[t - 1 - start][None], data[t][None]))
    return total / n


def test_windows_score_every_target_once_as_the_brute_force_does():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab=20, context=8, n_layer=1, n_head=2, d_model=16)).eval()
    for n in (5, 9, 40, 41):
        tokens = np.random.default_rng(n).integers(0, 20, size=n)
        assert abs(evaluate_gpt(model, tokens, batch_size=3) - brute_force(model, tokens)) < 1e-5


def test_the_baseline_learns_a_cycle_in_seconds():
    tokens = np.arange(3000) % 17
    model, steps = train_gpt(GPTConfig(vocab=17, context=16, n_layer=1, n_head=2, d_model=32), tokens,
                             seconds=3.0, batch_size=8, lr=3e-3, warmup=10)
    assert steps > 10
    assert evaluate_gpt(model, tokens[:400]) < 0.5  # nats; ln(17) = 2.8 untrained
