"""Reusing the memory's keys and values across segments gives exactly the same outputs."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_
from transformer_xl import Memory, ModelConfig, TransformerXLError, TransformerXLLM

V = 40


def make_model(**overrides) -> TransformerXLLM:
    options = dict(n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                   seg_len=5, mem_len=7, cutoffs=(10,), div_val=2)
    options.update(overrides)
    return randomize_(TransformerXLLM(ModelConfig(**options)).double().eval())


def run(model, x, seg_len, *, cached):
    memory = None
    losses, log_probs = [], []
    for start in range(0, x.shape[1] - 1, seg_len):
        out = model(x[:, start:start + seg_len], x[:, start + 1:start + seg_len + 1], memory=memory,
                    use_kv_cache=cached, return_log_probs=True)
        memory = out.memory
        assert (memory.keys_values is not None) == cached
        if cached:
            assert all(k.shape[2] == m.shape[1] == v.shape[2] for (k, v), m in zip(memory.keys_values, memory.states))
        losses.append(out.loss)
        log_probs.append(out.log_probs)
    return torch.cat(losses, 1), torch.cat(log_probs, 1)


@pytest.mark.parametrize("attn_type", ["xl", "shaw"])
@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("same_length", [False, True])
def test_cached_keys_and_values_give_the_same_outputs(attn_type, pre_norm, same_length):
    model = make_model(attn_type=attn_type, pre_norm=pre_norm, same_length=same_length)
    x = torch.randint(0, V, (3, 26))  # 5 segments: the memory fills, then slides
    plain = run(model, x, 5, cached=False)
    cached = run(model, x, 5, cached=True)
    torch.testing.assert_close(cached[0], plain[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(cached[1], plain[1], atol=1e-10, rtol=0)


def test_one_token_at_a_time_with_the_cache():
    model = make_model(mem_len=6)
    x = torch.randint(0, V, (2, 13))
    torch.testing.assert_close(run(model, x, 1, cached=True)[1], run(model, x, 1, cached=False)[1],
                               atol=1e-10, rtol=0)


def test_absolute_variants_and_mismatched_caches_are_refused():
    with pytest.raises(TransformerXLError, match="cannot be cached"):
        make_model(attn_type="vaswani")(torch.randint(0, V, (1, 5)), use_kv_cache=True)
    absolute = make_model(attn_type="al-rfou")
    first = absolute(torch.randint(0, V, (1, 5)))
    fake = tuple((torch.zeros(1, 2, 5, 8, dtype=torch.float64),) * 2 for _ in range(2))
    with pytest.raises(TransformerXLError, match="cannot be cached"):
        absolute(torch.randint(0, V, (1, 5)), memory=Memory(first.memory.states, keys_values=fake))
    model = make_model()
    out = model(torch.randint(0, V, (1, 5)), use_kv_cache=True)
    shorter = tuple((k[:, :, 1:], v[:, :, 1:]) for k, v in out.memory.keys_values)
    with pytest.raises(TransformerXLError, match="kv_cache"):
        model(torch.randint(0, V, (1, 5)), memory=Memory(out.memory.states, keys_values=shorter))
