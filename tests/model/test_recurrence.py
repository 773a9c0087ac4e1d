"""The defining property of Transformer-XL: segment-level recurrence is exact.

Processing a sequence segment by segment, with a memory that covers every earlier token, must give the
same per-token losses and log-probabilities as one forward over the whole sequence.
"""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM
from transformer_xl.data import OrderedStreams
from transformer_xl.model import attention as attention_module
from transformer_xl.runner import SegmentRunner

V = 40
SOFTMAX = {
    "plain": dict(),
    "adaptive-div1-proj": dict(cutoffs=(8, 20), div_val=1, d_embed=12),
    "adaptive-div2": dict(cutoffs=(8, 20), div_val=2),
}


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=3, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   seg_len=6, mem_len=64)
    options.update(overrides)
    model = TransformerXLLM(ModelConfig(**options)).double().eval()
    return randomize_(model)


def run_segments(model: TransformerXLLM, x: torch.Tensor, y: torch.Tensor, seg_len: int):
    """Through the one segment runner every command uses, at the model's training memory length."""
    runner = SegmentRunner(model, span=model.config.train_span.replace(seg_len=seg_len))
    losses, log_probs = [], []
    for _, _, out in runner.run(x, y, return_log_probs=True):
        losses.append(out.loss)
        log_probs.append(out.log_probs)
    return torch.cat(losses, 1), torch.cat(log_probs, 1), runner.memory


@pytest.mark.parametrize("softmax", sorted(SOFTMAX))
@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("attn_type", ["xl", "shaw"])
@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
def test_segmented_with_full_memory_equals_one_pass(attn_type, pre_norm, softmax, attn_impl):
    model = make_model(attn_type=attn_type, pre_norm=pre_norm, attn_impl=attn_impl, **SOFTMAX[softmax])
    tokens = torch.randint(0, V, (3, 25))
    x, y = tokens[:, :-1], tokens[:, 1:]  # 24 positions = 4 segments of 6
    full = model(x, y, return_log_probs=True)
    seg_loss, seg_lp, mems = run_segments(model, x, y, seg_len=6)
    torch.testing.assert_close(seg_loss, full.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(seg_lp, full.log_probs, atol=1e-5, rtol=0)
    assert mems.states[0].shape == (3, 24, 16)


def test_untied_biases_and_clamp_len_keep_recurrence_exact():
    model = make_model(untie_rel_bias=True, clamp_len=5)
    tokens = torch.randint(0, V, (2, 19))
    full = model(tokens[:, :-1], tokens[:, 1:])
    seg_loss, _, _ = run_segments(model, tokens[:, :-1], tokens[:, 1:], seg_len=6)
    torch.testing.assert_close(seg_loss, full.loss, atol=1e-5, rtol=0)


def test_the_equivalence_test_detects_a_missing_rel_shift(monkeypatch):
    """Guard against a vacuous test: a wrong positional alignment must break the equivalence."""
    model = make_model()
    tokens = torch.randint(0, V, (2, 19))
    x, y = tokens[:, :-1], tokens[:, 1:]
    monkeypatch.setattr(attention_module, "rel_shift", lambda scores: scores)
    full = model(x, y)
    seg_loss, _, _ = run_segments(model, x, y, seg_len=6)
    assert (seg_loss - full.loss).abs().max() > 1e-3


def test_short_memory_differs_from_full_context():
    """With mem_len shorter than the history the segmented pass must see less: losses differ."""
    model = make_model(mem_len=3)
    tokens = torch.randint(0, V, (2, 19))
    full = model(tokens[:, :-1], tokens[:, 1:])
    seg_loss, _, mems = run_segments(model, tokens[:, :-1], tokens[:, 1:], seg_len=6)
    torch.testing.assert_close(seg_loss[:, :6], full.loss[:, :6], atol=1e-5, rtol=0)  # first segment: same
    assert (seg_loss[:, 6:] - full.loss[:, 6:]).abs().max() > 1e-3
    assert all(m.shape[1] == 3 for m in mems.states)


def test_extended_context_with_streams_equals_one_pass():
    """ext_len: the last tokens of a segment are fed again as context of the next, not kept in memory."""
    model = make_model(ext_len=2, seg_len=5)
    tokens = torch.randint(0, V, (3 * 21,))
    streams = OrderedStreams(tokens.numpy(), batch_size=3, seg_len=5, ext_len=2)
    data = streams.data  # (3, 21)
    full = model(data[:, :-1], data[:, 1:])
    runner = SegmentRunner(model, ext_len=2)
    losses = [runner.step(segment.x, segment.y).loss for segment in streams]
    torch.testing.assert_close(torch.cat(losses, 1), full.loss, atol=1e-5, rtol=0)


def test_memory_is_detached_and_capped():
    model = make_model(mem_len=7).float().train()
    mems = None
    for _ in range(4):
        x = torch.randint(0, V, (2, 6))
        out = model(x, x, memory=mems)
        out.loss.mean().backward()  # would fail on a second backward through a non-detached memory
        mems = out.memory
        assert len(mems.states) == model.config.n_layer
        assert all(m.shape[1] <= 7 and not m.requires_grad and m.grad_fn is None for m in mems.states)
    assert mems.states[0].shape == (2, 7, 16)


def test_memory_starts_empty_not_zero_filled():
    model = make_model()
    x = torch.randint(0, V, (2, 6))
    empty = model(x, x).loss
    zeros = model(x, x, memory=tuple(torch.zeros(2, 4, 16, dtype=torch.float64) for _ in range(3))).loss
    assert (empty - zeros).abs().max() > 1e-4  # zero-filled memory is not "no memory"
    torch.testing.assert_close(model(x, x, memory=None).loss, model(x, x, memory=()).loss)


def test_mem_len_zero_keeps_no_memory():
    model = make_model(mem_len=0)
    out = model(torch.randint(0, V, (2, 6)))
    assert out.memory is None
    again = model(torch.randint(0, V, (2, 6)), memory=out.memory)
    assert again.memory is None


def test_the_span_is_an_argument_of_the_call_not_state():
    """A call at other lengths changes nothing for the next call: the config is what was trained."""
    model = make_model(mem_len=4, clamp_len=-1)
    trained = model.config
    x = torch.randint(0, V, (2, 6))
    first = model(x, x, mem_len=100, clamp_len=3, same_length=True)
    assert model.config is trained
    assert first.memory.length == 6  # kept up to the call's mem_len
    default = model(x, x, memory=first.memory)
    assert default.memory.length == 4  # the next call without a span uses the training mem_len again
    clamped = model(x, x, memory=first.memory, clamp_len=2).loss
    assert (clamped - default.loss).abs().max() > 1e-6  # the call's clamp_len is used
    with pytest.raises(TransformerXLError, match="mem_len"):
        model(x, mem_len=-1)
