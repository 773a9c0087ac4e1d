"""Inference export: the torch.export program carries memory and matches the eager model."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLError, TransformerXLLM
from transformer_xl.interop.export import StreamingSession, StreamingStep, export_streaming


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=60, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   seg_len=4, mem_len=10, cutoffs=(20,), div_val=2)
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options)).eval())


def eager_log_probs(model, tokens, seg_len):
    mems, outs = None, []
    with torch.no_grad():
        for start in range(0, tokens.shape[1], seg_len):
            out = model(tokens[:, start:start + seg_len], memory=mems, return_log_probs=True)
            mems = out.memory
            outs.append(out.log_probs)
    return outs


@pytest.mark.parametrize("same_length", [False, True])
def test_exported_program_matches_eager_from_an_empty_memory(same_length):
    model = make_model(same_length=same_length)
    tokens = torch.randint(0, 60, (2, 16))  # 4 segments: memory grows 0, 4, 8, then is capped at 10
    program = export_streaming(model, batch_size=2, seg_len=4)
    session = StreamingSession(program.module(), model.config, batch_size=2)
    expected = eager_log_probs(model, tokens, 4)
    for index, start in enumerate(range(0, 16, 4)):
        got = session.step(tokens[:, start:start + 4])
        torch.testing.assert_close(got, expected[index], atol=1e-5, rtol=0)
    assert session.padding.tolist() == [0, 0]


def test_padding_is_what_makes_it_exact():
    """Without the padding mask, the zero memory slots are attended to and the outputs differ."""
    model = make_model()
    tokens = torch.randint(0, 60, (1, 4))
    session = StreamingSession(StreamingStep(model), model.config, batch_size=1)
    session.padding.zero_()
    got = session.step(tokens)
    assert (got - eager_log_probs(model, tokens, 4)[0]).abs().max() > 1e-4


def test_saved_program_round_trips(tmp_path):
    model = make_model()
    program = export_streaming(model, batch_size=1, seg_len=4)
    torch.export.save(program, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2")
    tokens = torch.randint(0, 60, (1, 8))
    a = StreamingSession(loaded.module(), model.config, batch_size=1)
    b = StreamingSession(program.module(), model.config, batch_size=1)
    for start in (0, 4):
        torch.testing.assert_close(a.step(tokens[:, start:start + 4]), b.step(tokens[:, start:start + 4]))


def test_export_needs_a_memory():
    with pytest.raises(TransformerXLError, match="mem_len"):
        StreamingStep(make_model(mem_len=0))
