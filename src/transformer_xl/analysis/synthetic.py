"""Synthetic long-range tasks whose answer lies at a known distance d back in the stream.

* ``lag_copy_task``: documents made of one random block of ``lag`` tokens repeated; from the second
  repetition on, every token equals the token ``lag`` positions earlier. A model predicts those tokens
  only if it can look ``lag`` tokens back.
* ``kv_recall_task``: filler tokens with (key, value) pairs; the key comes back ``distance`` tokens later
  and the value must follow it again.

Accuracy (argmax of the next-token distribution at the positions whose answer lies d back) as a function
of d shows where a model's effective context ends: a vanilla model trained on T-token segments fails for
d >= T; Transformer-XL with memory succeeds beyond T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import Span, TransformerXLError
from ..model import TransformerXLLM
from ..runner import SegmentRunner

__all__ = ["SyntheticTask", "accuracy_by_distance", "kv_recall_task", "lag_copy_task", "recall_accuracy"]


@dataclass
class SyntheticTask:
    """A token stream and the positions whose next token is recallable from ``distance`` tokens back."""

    tokens: np.ndarray  # (N,) int64
    targets: np.ndarray  # indices i in [1, N): tokens[i] is determined by a token `distance` back
    distance: int
    n_token: int  # vocabulary size the task needs


def lag_copy_task(*, lag: int, n_tokens: int, vocab: int = 16, doc_len: int | None = None,
                  seed: int = 0) -> SyntheticTask:
    """Documents of ``doc_len`` tokens (default 4 * lag), each a random ``lag``-token block repeated."""
    if lag < 1 or vocab < 2 or n_tokens < 2 * lag:
        raise TransformerXLError(f"need lag >= 1, vocab >= 2 and n_tokens >= 2 * lag; got {lag}, {vocab}, {n_tokens}")
    doc_len = doc_len or 4 * lag
    if doc_len <= lag:
        raise TransformerXLError(f"doc_len={doc_len} must exceed lag={lag} for anything to be recallable")
    rng = np.random.default_rng(seed)
    pieces, targets, offset = [], [], 0
    while offset < n_tokens:
        block = rng.integers(0, vocab, size=lag)
        doc = np.resize(block, doc_len)  # block, block, ... cut at doc_len
        pieces.append(doc)
        targets.append(offset + np.arange(lag, doc_len))
        offset += doc_len
    tokens = np.concatenate(pieces)[:n_tokens].astype(np.int64)
    target = np.concatenate(targets)
    return SyntheticTask(tokens=tokens, targets=target[target < n_tokens], distance=lag, n_token=vocab)


def kv_recall_task(*, distance: int, n_tokens: int, n_keys: int = 8, n_values: int = 8, n_filler: int = 8,
                   seed: int = 0) -> SyntheticTask:
    """Filler, then ``key value``; ``distance`` tokens after the key, the key again: its value must follow.

    Ids: filler [0, n_filler), keys after them, values after the keys.
    """
    period = distance + 2
    if distance < 2 or n_tokens < period + 1:
        raise TransformerXLError(f"need distance >= 2 and n_tokens > distance + 2; got {distance}, {n_tokens}")
    rng = np.random.default_rng(seed)
    vocab = n_filler + n_keys + n_values
    tokens = rng.integers(0, n_filler, size=n_tokens).astype(np.int64)
    targets = []
    for start in range(0, n_tokens - period, period):
        key = n_filler + rng.integers(0, n_keys)
        value = n_filler + n_keys + rng.integers(0, n_values)
        tokens[start], tokens[start + 1] = key, value
        tokens[start + distance], tokens[start + distance + 1] = key, value
        targets.append(start + distance + 1)  # predicted from the key `distance` back and its value
    return SyntheticTask(tokens=tokens, targets=np.asarray(targets), distance=distance, n_token=vocab)


@torch.no_grad()
def recall_accuracy(model: TransformerXLLM, task: SyntheticTask, *, span: Span | None = None,
                    batch_size: int = 1) -> float:
    """Fraction of the task's target positions where the model's argmax prediction is right, reading the
    stream in segments of ``span.seg_len`` with ``span.mem_len`` of memory (0: every segment on its own).
    ``span`` defaults to the model's training span."""
    if task.n_token > model.config.n_token:
        raise TransformerXLError(f"the task uses {task.n_token} token ids, the model has {model.config.n_token}")
    span = span if span is not None else model.config.train_span
    seg = span.seg_len
    n = (len(task.tokens) - 1) // (batch_size * seg) * seg  # whole segments per stream
    if n < seg:
        raise TransformerXLError(f"{len(task.tokens)} tokens are too few for {batch_size} stream(s) of {seg}")
    data = torch.as_tensor(task.tokens)
    device = next(model.parameters()).device
    x = torch.stack([data[b * n:(b + 1) * n] for b in range(batch_size)]).to(device)  # (B, n)
    predicted = torch.zeros(batch_size, n, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        for start, stop, out in SegmentRunner(model, span=span).run(x, return_log_probs=True):
            predicted[:, start:stop] = out.log_probs.argmax(-1).cpu()  # (B, T)
    finally:
        model.train(was_training)
    # predicted[b, j] is the guess for tokens[b * n + j + 1]
    flat_index = (torch.arange(batch_size)[:, None] * n + torch.arange(n)[None, :] + 1).reshape(-1)
    guess = dict(zip(flat_index.tolist(), predicted.reshape(-1).tolist()))
    hits = [guess[t] == int(task.tokens[t]) for t in task.targets.tolist() if t in guess]
    if not hits:
        raise TransformerXLError("no target position of the task was scored; use a longer stream")
    return float(np.mean(hits))


def accuracy_by_distance(model: TransformerXLLM, distances: Sequence[int], *, task: str = "lag_copy",
                         n_tokens: int = 4096, span: Span | None = None, seed: int = 0,
                         **task_options: int) -> dict[int, float]:
    """Recall accuracy for each distance d, read with ``span`` (default: the model's training span): the
    curve that shows where the effective context ends."""
    makers = {"lag_copy": lambda d: lag_copy_task(lag=d, n_tokens=n_tokens, seed=seed, **task_options),
              "kv_recall": lambda d: kv_recall_task(distance=d, n_tokens=n_tokens, seed=seed, **task_options)}
    if task not in makers:
        raise TransformerXLError(f"task must be one of {sorted(makers)}, got {task!r}")
    return {int(d): recall_accuracy(model, makers[task](int(d)), span=span) for d in distances}
