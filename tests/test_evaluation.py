"""Evaluation: every token scored exactly once, in corpus order, equal to one full forward when the
memory covers everything; streaming scores equal the batch evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import TransformerXLError
from transformer_xl.evaluation import evaluate, score_tokens, sliding_window_evaluate


def _model(**overrides) -> TransformerXLLM:
    config = ModelConfig(n_token=23, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                         seg_len=8, mem_len=8, **overrides)
    return randomize_(TransformerXLLM(config).double(), std=0.2).eval()


def _tokens(n: int = 61, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 23, size=n)


def _full_forward(model: TransformerXLLM, tokens: np.ndarray) -> np.ndarray:
    data = torch.as_tensor(tokens)[None]
    with torch.no_grad():
        return model(data[:, :-1], targets=data[:, 1:]).loss[0].numpy()


@pytest.mark.parametrize("seg_len,batch_size", [(1, 1), (7, 1), (16, 1), (5, 3), (64, 2)])
def test_segmented_eval_with_covering_memory_equals_full_forward(seg_len: int, batch_size: int) -> None:
    model, tokens = _model(), _tokens()
    full = _full_forward(model, tokens)
    # warmup covers the whole prefix so every stream (not only the first) sees all earlier tokens
    result = evaluate(model, tokens, seg_len=seg_len, mem_len=len(tokens), batch_size=batch_size,
                      warmup=len(tokens), return_per_token=True)
    assert result.n_tokens == len(tokens) - 1
    np.testing.assert_allclose(result.per_token, full, rtol=1e-6, atol=1e-9)
    assert result.loss == pytest.approx(full.mean(), rel=1e-9)
    assert model.config.mem_len == 8  # the model's own lengths are restored


@pytest.mark.parametrize("seg_len,mem_len,batch_size", [(4, 0, 1), (3, 5, 4), (8, 2, 7), (5, 5, 60)])
def test_every_token_scored_once_in_order(seg_len: int, mem_len: int, batch_size: int) -> None:
    model, tokens = _model(), _tokens()
    result = evaluate(model, tokens, seg_len=seg_len, mem_len=mem_len, batch_size=batch_size,
                      return_per_token=True)
    assert result.n_tokens == len(tokens) - 1
    assert np.all(result.per_token > 0)  # no slot left unwritten (every NLL of a real token is > 0)
    # the first stream's first segment has no memory: its losses equal a fresh forward on that window
    first = min(seg_len, -(-(len(tokens) - 1) // batch_size))  # the first stream may be shorter
    head = _full_forward(model, tokens[: first + 1])
    np.testing.assert_allclose(result.per_token[:first], head, rtol=1e-6)


def test_longer_memory_changes_the_result_and_bits_per_character() -> None:
    model, tokens = _model(), _tokens(80)
    short = evaluate(model, tokens, seg_len=4, mem_len=0, level="char")
    long = evaluate(model, tokens, seg_len=4, mem_len=40, level="char")
    assert short.loss != pytest.approx(long.loss)
    assert long.bpc == pytest.approx(long.loss / math.log(2))
    assert evaluate(model, tokens, level="word").bpc is None
    assert long.to_dict()["mem_len"] == 40


def test_max_tokens_and_errors() -> None:
    model, tokens = _model(), _tokens()
    result = evaluate(model, tokens, max_tokens=10, return_per_token=True)
    assert result.n_tokens == 10
    with pytest.raises(TransformerXLError):
        evaluate(model, tokens[:1])
    with pytest.raises(TransformerXLError):
        evaluate(model, tokens, seg_len=0)
    with pytest.raises(TransformerXLError):
        evaluate(model, tokens, mem_len=-1)


def test_sliding_window_equals_full_forward_when_window_covers_everything() -> None:
    model, tokens = _model(), _tokens(30)
    result = sliding_window_evaluate(model, tokens, window=64, return_per_token=True)
    np.testing.assert_allclose(result.per_token, _full_forward(model, tokens), rtol=1e-6)
    # a short window: each late token is predicted from exactly the `window` tokens before it
    result = sliding_window_evaluate(model, tokens, window=5, batch_size=4, return_per_token=True)
    t = 20
    expected = _full_forward(model, tokens[t - 5:t + 1])[-1]
    assert result.per_token[t - 1] == pytest.approx(expected, rel=1e-6)


def test_score_tokens_streams_in_chunks_like_evaluate() -> None:
    model, tokens = _model(), _tokens(50)
    reference = evaluate(model, tokens, seg_len=6, mem_len=12, return_per_token=True).per_token
    chunks = [tokens[:1], tokens[1:9], tokens[9:10], tokens[10:]]
    scored = list(score_tokens(model, chunks, seg_len=6, mem_len=12))
    assert [t for t, _ in scored] == tokens[1:].tolist()
    np.testing.assert_allclose([-lp for _, lp in scored], reference, rtol=1e-6)


@pytest.mark.parametrize("stride", [2, 3])
def test_sliding_window_stride_scores_every_token_once_with_its_window(stride: int) -> None:
    model, tokens = _model(), _tokens(32)  # 31 targets: the last chunk is shorter than the stride
    window = 6
    result = sliding_window_evaluate(model, tokens, window=window, stride=stride, batch_size=3,
                                     return_per_token=True)
    assert result.n_tokens == 31 and np.isfinite(result.per_token).all()
    starts = list(range(window + 1, 32, stride))
    assert starts[-1] + stride - 1 > 31  # the partial chunk is exercised
    for first in starts:
        last = min(first + stride - 1, 31)
        inputs = tokens[last - window:last + 1]  # the window and the chunk's final target
        expected = _full_forward(model, inputs)[-(last - first + 1):]
        np.testing.assert_allclose(result.per_token[first - 1:last], expected, rtol=1e-5)
    stride_one = sliding_window_evaluate(model, tokens, window=window, return_per_token=True)
    np.testing.assert_allclose(result.per_token[:window], stride_one.per_token[:window], rtol=1e-6)
    with pytest.raises(TransformerXLError, match="stride"):
        sliding_window_evaluate(model, tokens, window=window, stride=window + 1)
