"""Generation with memory: equal to full recomputation when the memory covers the text, memory capped
at mem_len, sampling controls (temperature, top-k, top-p, seed), batches of prompts equal to each alone."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import TransformerXLError
from transformer_xl.generation import Generator, _read_prompts, generate, generate_batch, sample_next


def _model(**overrides) -> TransformerXLLM:
    config = ModelConfig(n_token=31, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, dropout=0.0,
                         seg_len=4, mem_len=4, **overrides)
    return randomize_(TransformerXLLM(config).double(), std=0.3).eval()


def _greedy_by_recompute(model: TransformerXLLM, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            out = model(torch.tensor([tokens]), return_log_probs=True)  # whole context, no memory
            tokens.append(int(out.log_probs[0, -1].argmax()))
    return tokens[len(prompt):]


def test_greedy_with_memory_equals_full_recompute() -> None:
    model = _model()
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # longer than seg_len: read in segments into memory
    expected = _greedy_by_recompute(model, prompt, 20)
    got = list(generate(model, prompt, max_new_tokens=20, temperature=0, mem_len=64))
    assert got == expected
    assert model.config.mem_len == 4  # the model's own lengths are untouched


def test_memory_never_exceeds_mem_len_and_one_token_per_step() -> None:
    model = _model()
    state = Generator(model, mem_len=5)
    lengths = []
    for _ in generate(model, list(range(12)), max_new_tokens=15, seed=0, generator=state):
        lengths.append(state.memory_length)
        assert all(m.shape[1] <= 5 for m in state.runner.memory.states)
    assert max(lengths) == 5 and len(lengths) == 15


def test_memory_zero_uses_a_sliding_window() -> None:
    model = _model()
    got = list(generate(model, [1, 2, 3], max_new_tokens=6, temperature=0, mem_len=0))
    assert len(got) == 6 and all(0 <= t < 31 for t in got)


def test_seed_top_k_top_p_and_temperature() -> None:
    model = _model()
    prompt = [7, 8, 9]
    a = list(generate(model, prompt, max_new_tokens=12, seed=123))
    b = list(generate(model, prompt, max_new_tokens=12, seed=123))
    assert a == b
    greedy = list(generate(model, prompt, max_new_tokens=8, temperature=0))
    assert list(generate(model, prompt, max_new_tokens=8, top_k=1, seed=5)) == greedy
    assert list(generate(model, prompt, max_new_tokens=8, top_p=1e-6, seed=5)) == greedy
    assert list(generate(model, prompt, max_new_tokens=30, stop_id=greedy[0], temperature=0)) == greedy[:1]


def test_sample_next_respects_top_k_and_top_p() -> None:
    log_probs = torch.log(torch.tensor([0.05, 0.5, 0.3, 0.1, 0.05]))
    gen = torch.Generator().manual_seed(0)
    top2 = {sample_next(log_probs, top_k=2, generator=gen) for _ in range(200)}
    assert top2 == {1, 2}
    nucleus = {sample_next(log_probs, top_p=0.85, generator=gen) for _ in range(300)}
    assert nucleus == {1, 2, 3}  # 0.5 + 0.3 < 0.85 needs the third token; the 0.05 tails are cut
    assert sample_next(log_probs, temperature=0) == 1


def test_bad_arguments_are_user_errors() -> None:
    model = _model()
    with pytest.raises(TransformerXLError):
        list(generate(model, [], max_new_tokens=3))
    with pytest.raises(TransformerXLError):
        list(generate(model, [99], max_new_tokens=3))
    with pytest.raises(TransformerXLError):
        list(generate(model, [1], max_new_tokens=3, top_p=0))
    with pytest.raises(TransformerXLError):
        list(generate(model, [1], max_new_tokens=3, mem_len=-1))


def test_prompt_as_list_tensor_array_batch_of_one_or_text() -> None:
    import numpy as np

    from transformer_xl.data.vocab import Vocabulary
    from transformer_xl.generation import generate_text

    model = _model()
    expected = list(generate(model, [3, 1, 4], max_new_tokens=5, temperature=0))
    for prompt in (torch.tensor([3, 1, 4]), torch.tensor([[3, 1, 4]]), np.array([3, 1, 4], dtype=np.int32), (3, 1, 4)):
        assert list(generate(model, prompt, max_new_tokens=5, temperature=0)) == expected
    vocab = Vocabulary("char", [chr(ord("a") + i) for i in range(26)] + list(" .,\n") + ["<unk>"],
                       specials={"unk": "<unk>"})
    text_ids = [int(t) for t in vocab.encode("dba")]
    assert list(generate(model, "dba", max_new_tokens=5, temperature=0, tokenizer=vocab)) == \
        list(generate(model, text_ids, max_new_tokens=5, temperature=0))
    out = generate_text(model, vocab, "dba", max_new_tokens=5, temperature=0)
    assert out.prompt_ids == text_ids and len(out.ids) == 5
    assert out.text == vocab.decode(out.ids) and out.full_text == "dba" + out.text and out.all_ids == text_ids + out.ids
    assert generate_text(model, vocab, torch.tensor(text_ids), max_new_tokens=5, temperature=0).ids == out.ids
    with pytest.raises(TransformerXLError, match="tokenizer"):
        generate(model, "dba", max_new_tokens=3)
    with pytest.raises(TransformerXLError, match="empty"):
        generate(model, "", max_new_tokens=3, tokenizer=vocab)
    with pytest.raises(TransformerXLError, match="integers"):
        generate(model, torch.tensor([1.0, 2.0]), max_new_tokens=3)
    with pytest.raises(TransformerXLError, match="one sequence"):
        generate(model, torch.ones(2, 3, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(TransformerXLError, match="unexpected"):
        generate_text(model, vocab, "dba", max_new_tokens=3, mems=None)


def test_extreme_temperatures_sample_or_say_why() -> None:
    model = _model()
    greedy = list(generate(model, [7, 8, 9], max_new_tokens=8, temperature=0))
    # so small that log_probs / temperature overflows: still a valid distribution (the greedy token)
    assert list(generate(model, [7, 8, 9], max_new_tokens=8, temperature=1e-45, seed=0)) == greedy
    assert len(list(generate(model, [7, 8, 9], max_new_tokens=8, temperature=1e30, seed=0))) == 8
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(TransformerXLError, match="temperature"):
            generate(model, [7, 8, 9], max_new_tokens=3, temperature=bad)
    with pytest.raises(TransformerXLError, match="top_p"):
        generate(model, [7], max_new_tokens=3, top_p=float("nan"))
    with pytest.raises(TransformerXLError, match="no finite probabilities"):
        sample_next(torch.full((5,), float("nan")), temperature=1.0)


# --- batched generation: each row equals the prompt generated alone ---------------------------------

def _prompts(*lengths: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, 31, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("attn_type", ["xl", "vaswani"])  # with and without the kv cache
def test_greedy_batch_equals_each_prompt_alone(dtype: torch.dtype, attn_type: str) -> None:
    model = _model(attn_type=attn_type).to(dtype)
    prompts = _prompts(3, 17, 40, 3, 1)  # memories of 3, 6 (full), 6, 3 and 1 positions after the prompt
    for span in ({}, {"mem_len": 64, "same_length": True, "clamp_len": 5}):
        batch = generate_batch(model, prompts, max_new_tokens=20, temperature=0, **span)
        alone = [list(generate(model, p, max_new_tokens=20, temperature=0, **span)) for p in prompts]
        assert batch == alone and all(len(row) == 20 for row in batch)
        assert len({tuple(row) for row in batch}) > 1  # the rows really differ


def test_sampled_batch_is_reproducible_and_equals_seeded_rows() -> None:
    model = _model()
    prompts = _prompts(3, 17, 40)
    kwargs = dict(max_new_tokens=15, temperature=1.0, top_k=10, top_p=0.95)
    a = generate_batch(model, prompts, seed=7, **kwargs)
    assert a == generate_batch(model, prompts, seed=7, **kwargs)
    assert a == [list(generate(model, p, seed=7 + i, **kwargs)) for i, p in enumerate(prompts)]
    per_row = generate_batch(model, prompts, seed=[9, 8, 7], **kwargs)  # one seed per row
    assert per_row[1] == a[1] and per_row[2] == list(generate(model, prompts[2], seed=7, **kwargs)) != a[2]
    assert generate_batch(model, prompts, seed=8, **kwargs) != a


def test_rows_stop_at_stop_id_independently() -> None:
    model = _model()
    prompts = _prompts(3, 17, 40, 9)
    free = generate_batch(model, prompts, max_new_tokens=25, temperature=0)
    stop = free[1][4]  # row 1 stops after 5 tokens (or earlier); other rows when they meet it, if ever
    batch = generate_batch(model, prompts, max_new_tokens=25, temperature=0, stop_id=stop)
    assert batch == [list(generate(model, p, max_new_tokens=25, temperature=0, stop_id=stop)) for p in prompts]
    assert batch[1][-1] == stop and len(batch[1]) <= 5 and any(len(row) == 25 for row in batch)


def test_padding_is_what_makes_the_batch_exact() -> None:
    model = _model()
    prompts = _prompts(2, 9, 3)
    span = model.config.train_span
    with torch.no_grad():
        log_probs, memory = _read_prompts(model, prompts, span, torch.device("cpu"))
        assert memory.length == 4 and memory.padding.tolist() == [2, 0, 1]  # mem_len 4; 2 and 3 tokens
        for i, p in enumerate(prompts):
            assert torch.allclose(log_probs[i], Generator(model).feed(p), atol=1e-12)
        x = torch.tensor([[1], [2], [3]])
        masked = model(x, memory=memory, return_log_probs=True).log_probs
        unmasked = model(x, memory=type(memory)(memory.states, memory.keys_values), return_log_probs=True).log_probs
        assert not torch.allclose(masked[0], unmasked[0]) and torch.equal(masked[1], unmasked[1])


def test_batch_edge_cases_and_errors() -> None:
    model = _model()
    prompts = _prompts(3, 6)
    assert generate_batch(model, prompts, max_new_tokens=0) == [[], []]
    assert generate_batch(model, [], max_new_tokens=4) == []
    # mem_len 0: no memory to pad, rows one after the other, still each row's own result
    assert generate_batch(model, prompts, max_new_tokens=5, temperature=0, mem_len=0) == \
        [list(generate(model, p, max_new_tokens=5, temperature=0, mem_len=0)) for p in prompts]
    # a (B, T) tensor is B prompts of equal length
    same = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert generate_batch(model, same, max_new_tokens=4, temperature=0) == \
        generate_batch(model, same.tolist(), max_new_tokens=4, temperature=0)
    with pytest.raises(TransformerXLError, match="list of prompts"):
        generate_batch(model, [1, 2, 3], max_new_tokens=3)
    with pytest.raises(TransformerXLError, match="one integer per prompt"):
        generate_batch(model, prompts, max_new_tokens=3, seed=[1])
    with pytest.raises(TransformerXLError, match=r"\[0, 31\)"):
        generate_batch(model, [[1], [99]], max_new_tokens=3)
