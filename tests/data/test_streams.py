"""Stream iterators: contiguity across segments, sharding, exact resume, variable lengths, sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_xl.config import TransformerXLError
from transformer_xl.data import (
    OrderedStreams,
    RolledStreams,
    ShuffledSentenceStreams,
    VariableLengthStreams,
    make_train_streams,
)

FAST = settings(max_examples=30, deadline=None)


@FAST
@given(n=st.integers(8, 400), batch=st.sampled_from([1, 2, 4]), seg=st.integers(1, 20), world=st.sampled_from([1, 2]))
def test_ordered_streams_continue_and_shards_cover_the_batch_once(n, batch, seg, world) -> None:
    if batch % world or n // batch < 2:
        return
    tokens = np.arange(n)
    full = torch.cat([s.y for s in OrderedStreams(tokens, batch_size=batch, seg_len=seg)], dim=1)  # (B, S-1)
    S = n // batch
    assert torch.equal(full, torch.from_numpy(tokens[: S * batch].reshape(batch, S)[:, 1:]))
    shards = [torch.cat([s.y for s in OrderedStreams(tokens, batch_size=batch, seg_len=seg, rank=r,
                                                     world_size=world)], dim=1) for r in range(world)]
    assert torch.equal(torch.cat(shards, dim=0), full)


@FAST
@given(n=st.integers(50, 2000), seg=st.integers(6, 40), seed=st.integers(0, 5))
def test_variable_lengths_are_contiguous_bounded_and_reproducible(n, seg, seed) -> None:
    tokens = np.arange(n)
    streams = VariableLengthStreams(tokens, batch_size=2, seg_len=seg, std=3, min_len=4, max_deviation=2,
                                    seed=seed)
    segments = list(streams)
    lengths = [s.y.shape[1] for s in segments]
    assert all(n <= seg + 6 for n in lengths) and all(n >= 4 for n in lengths[:-1])  # last may be cut short
    ys = torch.cat([s.y for s in segments], dim=1)
    xs = torch.cat([s.x for s in segments], dim=1)
    S = n // 2
    data = torch.from_numpy(tokens[: 2 * S].reshape(2, S))
    assert torch.equal(ys, data[:, 1:]) and torch.equal(xs, data[:, :-1])
    again = VariableLengthStreams(tokens, batch_size=2, seg_len=seg, std=3, min_len=4, max_deviation=2, seed=seed)
    assert [s.y.shape[1] for s in again] == lengths


def assert_resumes_exactly(make, *, skip_epochs: int, skip_segments: int) -> dict:
    """Read ``skip_epochs`` epochs and ``skip_segments`` segments, save the state, load it into a fresh
    iterator: both yield the same remaining segments (inputs and targets). Returns the state."""
    b = make()
    for _ in range(skip_epochs):
        list(b)
    it = iter(b)
    for _ in range(skip_segments):
        next(it)
    state = b.state_dict()
    c = make()
    c.load_state_dict(state)
    rest_b, rest_c = list(it), list(c)
    assert len(rest_b) == len(rest_c) > 0
    assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(rest_b, rest_c))
    return state


def test_variable_lengths_vary_per_epoch_and_resume_exactly() -> None:
    tokens = np.arange(5000)
    make = lambda: VariableLengthStreams(tokens, batch_size=4, seg_len=30, seed=1)  # noqa: E731
    a = make()
    first = [s.y.shape[1] for s in a]
    second = [s.y.shape[1] for s in a]
    assert first != second and len(set(first)) > 3
    state = assert_resumes_exactly(make, skip_epochs=0, skip_segments=5)
    with pytest.raises(TransformerXLError, match="seed"):
        VariableLengthStreams(tokens, batch_size=4, seg_len=30, seed=2).load_state_dict(state)


@FAST
@given(n=st.integers(8, 400), batch=st.sampled_from([1, 2, 4]), seg=st.integers(1, 20), world=st.sampled_from([1, 2]),
       seed=st.integers(0, 3))
def test_rolled_streams_read_the_rotated_corpus_each_epoch(n, batch, seg, world, seed) -> None:
    """Epoch 0 is the ordered streams; epoch e reads the corpus rotated by offset(e), wrapping at its end,
    and the ranks' shards together are that epoch's global batch."""
    if batch % world or n // batch < 2:
        return
    tokens = np.arange(n)
    S = n // batch
    streams = RolledStreams(tokens, batch_size=batch, seg_len=seg, seed=seed)
    epochs = [torch.cat([s.y for s in streams], dim=1) for _ in range(3)]
    assert torch.equal(epochs[0], torch.cat([s.y for s in OrderedStreams(tokens, batch_size=batch, seg_len=seg)], 1))
    for e, ys in enumerate(epochs):
        rotated = np.roll(tokens, -streams.offset(e))[: S * batch].reshape(batch, S)
        assert torch.equal(ys, torch.from_numpy(rotated[:, 1:]))
        shards = []
        for r in range(world):
            shard = RolledStreams(tokens, batch_size=batch, seg_len=seg, seed=seed, rank=r, world_size=world)
            for _ in range(e):
                list(shard)
            shards.append(torch.cat([s.y for s in shard], dim=1))
        assert torch.equal(torch.cat(shards, dim=0), ys)


def test_rolled_streams_change_contexts_across_epochs_and_resume_exactly() -> None:
    tokens = np.arange(5000)
    make = lambda seed=1: RolledStreams(tokens, batch_size=4, seg_len=30, seed=seed)  # noqa: E731
    a = make()
    offsets = [a.offset(e) for e in range(1, 6)]
    assert len(set(offsets)) == 5 and a.offset(0) == 0 and offsets != [make(2).offset(e) for e in range(1, 6)]
    first, second = [s.x for s in a], [s.x for s in a]
    assert len(first) == len(second) and not any(torch.equal(p, q) for p, q in zip(first, second))
    state = assert_resumes_exactly(make, skip_epochs=1, skip_segments=7)  # epoch 1: the rotation matters
    with pytest.raises(TransformerXLError, match="seed"):
        make(2).load_state_dict(state)
    with pytest.raises(TransformerXLError, match="trained on rolled streams, now ordered"):
        OrderedStreams(tokens, batch_size=4, seg_len=30).load_state_dict(state)


def sentences_corpus(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sentence i is [1000*i, 1000*i + 1, ...]: every token says which sentence it came from."""
    tokens = np.concatenate([1000 * i + np.arange(k) for i, k in enumerate(lengths)])
    starts = np.cumsum([0] + lengths[:-1])
    return tokens, starts


@FAST
@given(lengths=st.lists(st.integers(1, 30), min_size=4, max_size=80), batch=st.sampled_from([1, 2, 4]),
       seg=st.integers(1, 12), seed=st.integers(0, 3))
def test_sentence_streams_pair_tokens_within_sentences_once(lengths, batch, seg, seed) -> None:
    tokens, starts = sentences_corpus(lengths)
    streams = ShuffledSentenceStreams(tokens, starts, batch_size=batch, seg_len=seg, seed=seed)
    segments = list(streams)
    if not segments:
        return
    x = torch.cat([s.x for s in segments], dim=1).numpy()  # (B, n*T)
    y = torch.cat([s.y for s in segments], dim=1).numpy()
    assert x.shape == (batch, len(segments) * seg)
    assert np.all(y == x + 1) and np.all(x // 1000 == y // 1000)  # next token of the same sentence
    seen = x.reshape(-1)
    assert len(np.unique(seen)) == len(seen)  # no (input, target) pair twice in an epoch
    sharded = [torch.cat([s.y for s in ShuffledSentenceStreams(tokens, starts, batch_size=batch, seg_len=seg,
                                                                seed=seed, rank=r, world_size=2)], dim=1)
               for r in range(2)] if batch % 2 == 0 else None
    if sharded is not None:
        assert np.array_equal(torch.cat(sharded, dim=0).numpy(), y)


def test_sentence_streams_shuffle_per_epoch_not_in_eval_and_resume() -> None:
    tokens, starts = sentences_corpus([5 + (i % 7) for i in range(200)])
    streams = ShuffledSentenceStreams(tokens, starts, batch_size=4, seg_len=8, seed=3)
    e0 = torch.cat([s.x for s in streams], dim=1)
    e1 = torch.cat([s.x for s in streams], dim=1)
    assert not torch.equal(e0[:, :20], e1[:, :20])
    ordered = ShuffledSentenceStreams(tokens, starts, batch_size=1, seg_len=8, shuffle=False)
    assert next(iter(ordered)).x[0].tolist() == [0, 1, 2, 3, 1000, 1001, 1002, 1003]  # in order; 4 is only a target
    a = ShuffledSentenceStreams(tokens, starts, batch_size=4, seg_len=8, seed=3)
    it = iter(a)
    next(it), next(it)
    b = ShuffledSentenceStreams(tokens, starts, batch_size=4, seg_len=8, seed=3)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(p.x, q.x) for p, q in zip(it, b))


def test_sentence_streams_reject_bad_starts() -> None:
    with pytest.raises(TransformerXLError, match="sentence starts"):
        ShuffledSentenceStreams(np.arange(10), np.array([0, 5, 5]), batch_size=1, seg_len=2)


def test_variable_lengths_follow_the_original_distribution() -> None:
    # the original's get_varlen_iter: around seg_len with p = 0.95, else around seg_len / 2; N(., std),
    # truncated to an integer, clipped to [min_len, seg_len + max_deviation * std]
    streams = VariableLengthStreams(np.arange(400_000), batch_size=1, seg_len=70, seed=0)
    lengths = np.array([s.y.shape[1] for s in streams][:-1])  # the last one is cut by the end of the text
    assert len(lengths) > 4000 and lengths.min() >= 5 and lengths.max() <= 70 + 3 * 5
    short = lengths < 52  # 35 + 3.4 std and 70 - 3.6 std: which mode each length came from
    assert 0.04 < short.mean() < 0.06
    assert abs(lengths[~short].mean() - 69.5) < 0.3 and abs(lengths[~short].std() - 5) < 0.3
    assert abs(lengths[short].mean() - 34.5) < 1.0


def test_make_train_streams_picks_the_kind() -> None:
    tokens, starts = sentences_corpus([5 + (i % 7) for i in range(60)])
    common = dict(batch_size=2, seg_len=4)
    assert type(make_train_streams("auto", tokens, **common)) is OrderedStreams
    assert type(make_train_streams("auto", tokens, sentences=starts, **common)) is ShuffledSentenceStreams
    assert type(make_train_streams("ordered", tokens, sentences=starts, **common)) is OrderedStreams
    assert type(make_train_streams("varlen", tokens, **common)) is VariableLengthStreams
    assert type(make_train_streams("rolled", tokens, **common)) is RolledStreams
    with pytest.raises(TransformerXLError, match="sentence-level corpus"):
        make_train_streams("sentences", tokens, **common)
    with pytest.raises(TransformerXLError, match="ext_len"):
        make_train_streams("sentences", tokens, sentences=starts, ext_len=2, **common)
    with pytest.raises(TransformerXLError, match="train.streams must be one of"):
        make_train_streams("shuffled", tokens, **common)
    # the seed reaches the stream: another seed, other lengths
    a = [s.y.shape[1] for s in make_train_streams("varlen", np.arange(3000), batch_size=2, seg_len=20, seed=1)]
    b = [s.y.shape[1] for s in make_train_streams("varlen", np.arange(3000), batch_size=2, seg_len=20, seed=2)]
    assert a != b


def test_a_stream_state_resumes_only_the_same_kind() -> None:
    tokens = np.arange(400)
    ordered = OrderedStreams(tokens, batch_size=2, seg_len=8)
    next(iter(ordered))
    state = ordered.state_dict()
    assert state["kind"] == "ordered"
    with pytest.raises(TransformerXLError, match="trained on ordered streams, now varlen"):
        VariableLengthStreams(tokens, batch_size=2, seg_len=8).load_state_dict(state)
    legacy = {k: v for k, v in state.items() if k != "kind"}  # saved before the kind was recorded
    again = OrderedStreams(tokens, batch_size=2, seg_len=8)
    again.load_state_dict(legacy)
    assert again.position == 1
