"""Loss by context length (memory and window methods, the vanilla cap, the disk cache) and by position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.analysis import context as context_module
from transformer_xl.analysis.context import context_losses, context_method, fingerprint_model, loss_by_position
from transformer_xl.config import Span, TransformerXLError


def _model(**overrides) -> TransformerXLLM:
    fields = dict(n_token=23, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0, seg_len=8,
                  mem_len=8)
    fields.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**fields)).double(), std=0.2).eval()


def _tokens(n: int = 80, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 23, size=n)


def test_one_layer_memory_method_equals_a_window_of_c_tokens() -> None:
    # With one layer the memory holds embeddings only, so "same_length with mem_len = c" must give every
    # token exactly the loss of a fresh window of its c predecessors: the definition of l(c, t).
    model, tokens = _model(n_layer=1), _tokens()
    memory = context_losses(model, tokens, [3, 5, 12], method="memory", batch_size=3)
    window = context_losses(model, tokens, [3, 5, 12], method="window", batch_size=4)
    assert memory.losses.shape == (3, len(tokens) - 1)
    np.testing.assert_allclose(memory.losses, window.losses, rtol=1e-5, atol=1e-6)
    # and longer context changes the losses (the model really sees different context)
    assert not np.allclose(memory.at(3), memory.at(12))


def test_multi_layer_memory_reaches_beyond_c() -> None:
    # With two layers the cached states carry information from further back than c tokens (XL's point).
    model, tokens = _model(), _tokens()
    memory = context_losses(model, tokens, [4], method="memory", batch_size=1)
    window = context_losses(model, tokens, [4], method="window")
    assert not np.allclose(memory.losses[0][10:], window.losses[0][10:], rtol=1e-4)


def test_vanilla_model_uses_windows_capped_at_its_table() -> None:
    model = _model(attn_type="al-rfou", mem_len=0)
    assert context_method(model) == "window" and context_method(_model()) == "memory"
    result = context_losses(model, _tokens(), [4, 8, 16])
    assert result.method == "window" and result.effective == [4, 8, 8]
    np.testing.assert_array_equal(result.at(8), result.at(16))


def test_cache_reuses_one_pass_and_keys_on_weights_and_context(tmp_path, monkeypatch) -> None:
    model, tokens = _model(), _tokens()
    first = context_losses(model, tokens, [2, 6], cache_dir=tmp_path, name="xl")
    assert len(list(tmp_path.glob("*.npy"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached context")

    monkeypatch.setattr(context_module, "_one_context", fail)
    again = context_losses(model, tokens, [6, 2], cache_dir=tmp_path)
    np.testing.assert_array_equal(again.at(2), first.at(2))
    monkeypatch.undo()
    other = _model()
    with torch.no_grad():
        other.word_emb.emb_layers[0].weight.add_(0.1)
    assert fingerprint_model(other) != fingerprint_model(model)
    context_losses(other, tokens, [2], cache_dir=tmp_path)
    context_losses(model, tokens[:-1], [2], cache_dir=tmp_path)  # other data
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_context_errors() -> None:
    with pytest.raises(TransformerXLError):
        context_losses(_model(), _tokens(), [4], method="nope")
    with pytest.raises(TransformerXLError):
        context_losses(_model(), _tokens(), [-1])


def test_loss_by_position_without_memory_restarts_each_segment() -> None:
    model, tokens = _model(), _tokens(n=8 * 3 * 2 + 1)
    result = loss_by_position(model, tokens, span=Span(seg_len=8, mem_len=8), batch_size=2)
    assert result.with_memory.shape == result.without_memory.shape == (8,) and result.n_segments == 6
    # position 0 without memory is a forward on that single token
    data = torch.as_tensor(tokens)
    expected = [model(data[None, s:s + 1], targets=data[None, s + 1:s + 2]).loss.item()
                for s in range(0, 48, 8)]
    assert result.without_memory[0] == pytest.approx(np.mean(expected), rel=1e-6)
    assert abs(result.with_memory[0] - result.without_memory[0]) > 1e-6  # memory changes the first token
    same = loss_by_position(model, tokens, span=Span(seg_len=8, mem_len=0), batch_size=2)
    np.testing.assert_allclose(same.with_memory, same.without_memory)
    assert result.to_csv().count("\n") == 9 and len(result.to_dict()["with_memory"]) == 8
    with pytest.raises(TransformerXLError):
        loss_by_position(model, tokens[:5], span=model.config.train_span, batch_size=2)
