"""Synthetic long-range tasks: the answers sit where the task says, and Transformer-XL with memory
recalls a token further back than its segment length while the same model without memory cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transformer_xl import ModelConfig, SegmentRunner, TransformerXLLM
from transformer_xl.analysis.synthetic import accuracy_by_distance, kv_recall_task, lag_copy_task, recall_accuracy
from transformer_xl.config import TransformerXLError


def test_lag_copy_targets_repeat_the_token_lag_back() -> None:
    task = lag_copy_task(lag=5, n_tokens=103, vocab=7, seed=3)
    assert len(task.tokens) == 103 and task.tokens.max() < 7 and task.distance == 5
    t = task.targets
    assert np.all(task.tokens[t] == task.tokens[t - 5]) and t.max() < 103
    assert len(t) > 60  # three of every four positions of a 20-token document


def test_kv_recall_value_follows_the_repeated_key() -> None:
    task = kv_recall_task(distance=9, n_tokens=200, seed=1)
    t = task.targets
    assert np.all(task.tokens[t - 1] == task.tokens[t - 1 - 9])  # the key again
    assert np.all(task.tokens[t] == task.tokens[t - 9])  # its value
    assert np.all(task.tokens[t] >= 16) and task.n_token == 24
    with pytest.raises(TransformerXLError):
        kv_recall_task(distance=1, n_tokens=200)


def test_xl_memory_recalls_beyond_the_segment_length() -> None:
    lag, seg, mem, vocab, batch = 24, 16, 32, 8, 16  # the answer is 24 back; a segment holds only 16
    torch.manual_seed(0)
    config = ModelConfig(n_token=vocab, n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64, dropout=0.0,
                         seg_len=seg, mem_len=mem)
    model = TransformerXLLM(config)
    data = torch.as_tensor(lag_copy_task(lag=lag, n_tokens=batch * seg * 40 + 1, vocab=vocab, seed=1).tokens)
    n = (len(data) - 1) // (batch * seg) * seg
    x = torch.stack([data[b * n:(b + 1) * n] for b in range(batch)])  # (B, n)
    y = torch.stack([data[b * n + 1:(b + 1) * n + 1] for b in range(batch)])  # (B, n)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    runner = SegmentRunner(model)  # the training span: segments of 16, memory 32
    for _ in range(3):  # three passes, memory carried across segments as in training
        runner.reset()
        for _, _, out in runner.run(x, targets=y):
            optimizer.zero_grad()
            out.loss.mean().backward()
            optimizer.step()
    test = lag_copy_task(lag=lag, n_tokens=2000, vocab=vocab, seed=7)
    with_memory = recall_accuracy(model, test, span=config.train_span.replace(mem_len=mem))
    without_memory = recall_accuracy(model, test, span=config.train_span.replace(mem_len=0))
    assert with_memory > 0.6, with_memory
    assert without_memory < 0.3, without_memory  # chance is 1/8: a segment cannot see 24 tokens back
    curve = accuracy_by_distance(model, [lag], n_tokens=1000, span=config.train_span, vocab=vocab)
    assert set(curve) == {lag} and curve[lag] > 0.6
