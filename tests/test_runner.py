"""The segment runner: the one loop that carries memory across segments, and the span as a value."""

from __future__ import annotations

import threading

import pytest
import torch

from helpers import randomize_
from transformer_xl import ConfigError, ModelConfig, SegmentRunner, Span, TransformerXLLM, evaluate
from transformer_xl.runner import call_span, layout_streams, unwrap_model

V = 30


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   seg_len=5, mem_len=6)
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options)).double().eval())


def test_run_equals_stepping_by_hand_and_keeps_the_memory_capped():
    model = make_model()
    x = torch.randint(0, V, (2, 23))
    span = Span(seg_len=4, mem_len=7, clamp_len=3, same_length=True)
    runner = SegmentRunner(model, span=span, use_kv_cache=False)
    got = [(start, stop, out.loss) for start, stop, out in runner.run(x[:, :-1], x[:, 1:])]
    assert [(a, b) for a, b, _ in got] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 22)]
    assert runner.memory_length == 7
    memory, expected = None, []
    inputs, targets = x[:, :-1], x[:, 1:]
    for start in range(0, 22, 4):
        out = model(inputs[:, start:start + 4], targets[:, start:start + 4], memory=memory, mem_len=7, clamp_len=3,
                    same_length=True)
        memory = out.memory
        expected.append(out.loss)
    for (_, _, loss), want in zip(got, expected):
        torch.testing.assert_close(loss, want, atol=0, rtol=0)
    runner.reset()
    assert runner.memory is None and runner.memory_length == 0


def test_the_kv_cache_is_used_only_without_gradients_and_changes_nothing():
    model = make_model()
    x = torch.randint(0, V, (3, 21))
    plain = SegmentRunner(model, span=Span(seg_len=5, mem_len=8), use_kv_cache=False)
    auto = SegmentRunner(model, span=Span(seg_len=5, mem_len=8))
    with torch.no_grad():
        for (_, _, a), (_, _, b) in zip(plain.run(x[:, :-1], x[:, 1:]), auto.run(x[:, :-1], x[:, 1:])):
            torch.testing.assert_close(b.loss, a.loss, atol=1e-10, rtol=0)
            assert b.memory.keys_values is not None and a.memory.keys_values is None
    training = SegmentRunner(model.train(), span=Span(seg_len=5, mem_len=8))
    out = training.step(x[:, :5], x[:, 1:6])
    assert out.memory.keys_values is None  # gradients on: memory keys are recomputed, never cached
    model.eval()


def test_ext_len_leaves_the_extended_context_out_of_the_memory():
    model = make_model(ext_len=2)
    runner = SegmentRunner(model, ext_len=2)
    runner.step(torch.randint(0, V, (1, 7)))
    assert runner.memory_length == 5  # 7 fed, the last 2 are fed again next time


def test_the_runner_unwraps_ddp_like_and_compiled_wrappers():
    model = make_model()

    class Wrapper(torch.nn.Module):  # DDP exposes .module, torch.compile ._orig_mod
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    assert unwrap_model(Wrapper(model)) is model
    runner = SegmentRunner(Wrapper(model))
    assert runner.span == model.config.train_span
    assert runner.step(torch.randint(0, V, (1, 5))).memory.length == 5


def test_call_span_fields_replace_the_default_and_are_validated():
    model = make_model(clamp_len=4, same_length=True)
    assert call_span(model) == Span(seg_len=5, mem_len=6, clamp_len=4, same_length=True)
    assert call_span(model, mem_len=50) == Span(seg_len=5, mem_len=50, clamp_len=4, same_length=True)
    given = Span(seg_len=2, mem_len=3)
    assert call_span(model, given, same_length=True) == Span(seg_len=2, mem_len=3, same_length=True)
    with pytest.raises(ConfigError, match="seg_len"):
        call_span(model, seg_len=0)


@pytest.mark.parametrize("n,batch,warmup", [(20, 1, 0), (20, 3, 0), (20, 3, 4), (5, 8, 2), (2, 4, 0)])
def test_stream_layout_scores_every_target_exactly_once(n, batch, warmup):
    tokens = torch.arange(n)
    seen = []
    for rank in range(2):
        layout = layout_streams(tokens, batch_size=batch, warmup=warmup, rank=rank, world_size=2)
        if layout is None:
            continue
        assert torch.equal(layout.y[layout.scored], tokens[layout.target_index[layout.scored]])
        assert torch.equal(layout.x[layout.scored], tokens[layout.target_index[layout.scored] - 1])
        seen += layout.target_index[layout.scored].tolist()
    assert sorted(seen) == list(range(1, n))


def test_two_threads_evaluating_one_model_at_different_spans_do_not_interfere():
    """The span is an argument, not model state: concurrent calls get the results of sequential ones."""
    model = make_model()
    tokens = torch.randint(0, V, (200,))
    spans = [Span(seg_len=4, mem_len=0), Span(seg_len=7, mem_len=30, clamp_len=5, same_length=True)]
    sequential = [evaluate(model, tokens, span=span).loss for span in spans]
    results: dict[int, list[float]] = {0: [], 1: []}

    def work(i: int) -> None:
        for _ in range(5):
            results[i].append(evaluate(model, tokens, span=spans[i]).loss)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sequential[0] != pytest.approx(sequential[1])
    for i in range(2):
        assert results[i] == [pytest.approx(sequential[i], abs=1e-12)] * 5
    assert model.config.mem_len == 6 and model.config.seg_len == 5
