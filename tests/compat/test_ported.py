"""The model-specific checks of transformers 4.37.2's own TransfoXL tests, run against transformer_xl.compat.

Rewritten here from what those tests check (tests/models/transfo_xl/test_modeling_transfo_xl.py and
test_tokenization_transfo_xl.py): output and memory shapes of the base model and the LM head with and
without memories, loss shapes with labels, both tuple layouts, attentions and hidden states with memories,
save/load round trips, tracing, and the tokenizer's lower-casing, punctuation and number rules. They need
no transformers install. The README lists the upstream tests that do not apply.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from transformer_xl.compat import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel, TransfoXLTokenizer
from transformer_xl.config import TransformerXLError
from transformer_xl.data.vocab import Vocabulary

BATCH, SEQ, MEM, VOCAB, HIDDEN, LAYERS, HEADS = 14, 7, 30, 99, 32, 2, 4


def _config(**overrides) -> TransfoXLConfig:
    values = dict(vocab_size=VOCAB, mem_len=MEM, clamp_len=15, cutoffs=[10, 50, 80], d_model=HIDDEN, d_embed=HIDDEN,
                  n_head=HEADS, d_head=8, d_inner=128, div_val=2, n_layer=LAYERS, eos_token_id=0)
    values.update(overrides)
    return TransfoXLConfig(**values)


def _ids(seed: int, length: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(seed))


def _mem_shapes(mems) -> list[tuple[int, ...]]:
    return [tuple(m.shape) for m in mems]


@torch.no_grad()
def test_base_model_hidden_states_and_memories_with_and_without_mems() -> None:
    model = TransfoXLModel(_config()).eval()
    hidden_1, mems_1 = model(_ids(0)).to_tuple()
    hidden_2, mems_2 = model(_ids(1), mems=mems_1).to_tuple()
    assert hidden_1.shape == hidden_2.shape == (BATCH, SEQ, HIDDEN)
    assert _mem_shapes(mems_1) == _mem_shapes(mems_2) == [(MEM, BATCH, HIDDEN)] * LAYERS
    assert not torch.equal(mems_1[0], mems_2[0])  # the memory moved on by one segment
    assert torch.equal(mems_2[0][:MEM - SEQ], mems_1[0][SEQ:])


@torch.no_grad()
def test_lm_head_scores_losses_and_memories_with_and_without_mems() -> None:
    model = TransfoXLLMHeadModel(_config()).eval()
    ids_1, ids_2 = _ids(2), _ids(3)
    out_1 = model(ids_1)
    out_2 = model(ids_2, mems=out_1.mems)
    for out in (out_1, out_2):
        assert out.prediction_scores.shape == out.logits.shape == (BATCH, SEQ, VOCAB)
        assert _mem_shapes(out.mems) == [(MEM, BATCH, HIDDEN)] * LAYERS
        assert out.loss is None and out.losses is None
        sums = out.prediction_scores.exp().sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)  # log-probabilities
    with_labels = model(ids_1, labels=ids_1)
    assert with_labels.losses.shape == (BATCH, SEQ - 1) and with_labels.loss.shape == ()
    assert with_labels.prediction_scores == ()
    second = model(ids_2, labels=ids_2, mems=with_labels.mems)
    assert second.losses.shape == (BATCH, SEQ - 1) and _mem_shapes(second.mems) == [(MEM, BATCH, HIDDEN)] * LAYERS
    assert torch.isclose(with_labels.loss, with_labels.losses.mean())


@torch.no_grad()
def test_lm_head_tuple_layouts_trainer_compatible_or_not() -> None:
    ids = _ids(4)
    incompatible = TransfoXLLMHeadModel(_config()).eval()
    losses, scores, mems, loss = incompatible(ids, labels=ids, return_dict=False)
    assert losses.shape == (BATCH, SEQ - 1) and scores == () and len(mems) == LAYERS and loss.shape == ()
    compatible = TransfoXLLMHeadModel(_config(trainer_compatible=True)).eval()
    compatible.load_state_dict(incompatible.state_dict())
    loss_2, scores_2, losses_2, mems_2 = compatible(ids, labels=ids, return_dict=False)
    assert torch.equal(loss_2, loss) and scores_2 == () and torch.equal(losses_2, losses)
    scores_3, mems_3 = compatible(ids, return_dict=False)
    assert scores_3.shape == (BATCH, SEQ, VOCAB) and len(mems_3) == LAYERS


@torch.no_grad()
def test_ignored_labels_count_nothing_and_all_ignored_still_gives_a_finite_loss() -> None:
    model = TransfoXLLMHeadModel(_config()).eval()
    ids = _ids(5)
    labels = ids.clone()
    labels[:, 3:] = -100
    out = model(ids, labels=labels)
    assert (out.losses[:, 2:] == 0).all() and (out.losses[:, :2] > 0).all()
    assert torch.isclose(out.loss, out.losses[:, :2].mean())
    all_ignored = torch.full_like(ids, -100)
    out = model(ids, labels=all_ignored)
    assert torch.isfinite(out.loss) and (all_ignored == -100).all()  # the caller's labels are not modified


@torch.no_grad()
def test_attentions_and_hidden_states_with_memories() -> None:
    model = TransfoXLModel(_config(output_attentions=True, output_hidden_states=True)).eval()
    out = model(_ids(6))
    assert len(out.attentions) == LAYERS and len(out.hidden_states) == LAYERS + 1
    assert out.attentions[0].shape == (BATCH, HEADS, SEQ, SEQ + MEM)  # zero-filled memory on the first call
    assert all(h.shape == (BATCH, SEQ, HIDDEN) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    probs = out.attentions[1]
    assert torch.allclose(probs.sum(-1), torch.ones(BATCH, HEADS, SEQ), atol=1e-5)
    future = torch.ones(SEQ, SEQ + MEM, dtype=torch.bool).triu(1 + MEM)
    assert (probs[..., future] == 0).all()  # causal over [memory ; segment]
    plain = model(_ids(6), output_attentions=False, output_hidden_states=False)
    assert list(plain.keys()) == ["last_hidden_state", "mems"]


@torch.no_grad()
def test_reset_memory_length_and_a_model_without_memory() -> None:
    model = TransfoXLLMHeadModel(_config()).eval()
    model.reset_memory_length(5)
    assert _mem_shapes(model(_ids(7)).mems) == [(5, BATCH, HIDDEN)] * LAYERS
    assert model.xl.config.mem_len == MEM  # the model's own config is not changed
    model.reset_memory_length(0)
    assert model.init_mems(BATCH) is None
    out = model(_ids(7), return_dict=False)
    assert len(out) == 1 and out[0].shape == (BATCH, SEQ, VOCAB)  # no mems in the tuple, as upstream
    with pytest.raises(TransformerXLError, match="mem_len"):
        model.reset_memory_length(-1)


@torch.no_grad()
def test_save_and_load_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    model = TransfoXLLMHeadModel(_config()).eval()
    ids = _ids(8)
    model.save_pretrained(tmp_path / "lm")
    assert {p.name for p in (tmp_path / "lm").iterdir()} == {"config.json", "model.safetensors"}
    reloaded = TransfoXLLMHeadModel.from_pretrained(tmp_path / "lm")
    assert torch.equal(model(ids).prediction_scores, reloaded(ids).prediction_scores)
    base = TransfoXLModel.from_pretrained(tmp_path / "lm")  # a base model from an LM-head checkpoint
    assert torch.equal(base(ids).last_hidden_state, model.transformer(ids).last_hidden_state)
    assert TransfoXLModel.from_pretrained(tmp_path / "lm", mem_len=4)(ids).mems[0].shape[0] == 4
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(TransformerXLError, match="unexpected keyword|does not support|got config"):
        TransfoXLModel.from_pretrained(tmp_path / "lm", config=_config(), mem_len=4)


@pytest.mark.filterwarnings("ignore")  # torch's deprecation of jit.trace and its tracer warnings
@pytest.mark.parametrize("grad", [False, True])
def test_tracing_gives_the_tuple_outputs(grad: bool) -> None:
    """With or without gradients: under tracing the attention takes one fixed path, so torch's trace check
    (which runs the model again) sees the same graph."""
    model = TransfoXLLMHeadModel(_config(torchscript=True)).eval()
    ids = _ids(9)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, (ids,))
        scores, mems = traced(ids)
        expected = model(ids)
    assert torch.allclose(scores, expected[0], atol=1e-5) and len(mems) == LAYERS


@torch.no_grad()
def test_generate_extends_the_prompt_and_stops_at_eos() -> None:
    model = TransfoXLLMHeadModel(_config()).eval()
    prompt = _ids(10, 3)[:2]
    out = model.generate(prompt, max_new_tokens=6, eos_token_id=VOCAB + 5)  # an id never produced
    assert out.shape == (2, 9) and torch.equal(out[:, :3], prompt)
    first = model.generate(prompt, max_new_tokens=1)
    stopped = model.generate(prompt, max_new_tokens=6, eos_token_id=int(first[0, -1]), pad_token_id=7)
    assert stopped[0, 3] == first[0, -1] and (stopped[0, 4:] == 7).all()


# Tokenizer ------------------------------------------------------------------------------------------
SYMBOLS = ["<unk>", "[CLS]", "[SEP]", "want", "unwanted", "wa", "un", "running", ",", "low", "l"]


def _tokenizer(lower: bool) -> TransfoXLTokenizer:
    return TransfoXLTokenizer(Vocabulary("word", SYMBOLS, specials={"unk": "<unk>"}, lower=lower,
                                         normalization="wikitext"))


def test_tokenizer_lower_case_with_unknown_token() -> None:
    tokenizer = _tokenizer(lower=True)
    tokens = tokenizer.tokenize("<unk> UNwanted , running")
    assert tokens == ["<unk>", "unwanted", ",", "running"]
    assert tokenizer.convert_tokens_to_ids(tokens) == [0, 4, 8, 7]


def test_tokenizer_lower_and_cased_punctuation() -> None:
    text = " \tHeLLo ! how  \n Are yoU ?  "
    assert _tokenizer(lower=True).tokenize(text) == ["hello", "!", "how", "are", "you", "?"]
    assert _tokenizer(lower=False).tokenize(text) == ["HeLLo", "!", "how", "Are", "yoU", "?"]


def test_tokenizer_moses_rules_and_numbers_round_trip() -> None:
    tokenizer = _tokenizer(lower=False)
    text = "Hello (bracket) and side-scrolled [and] Henry's $5,000 with 3.34 m. What's up!?"
    tokens = ["Hello", "(", "bracket", ")", "and", "side", "@-@", "scrolled", "[", "and", "]", "Henry", "'s",
              "$", "5", "@,@", "000", "with", "3", "@.@", "34", "m", ".", "What", "'s", "up", "!", "?"]
    assert tokenizer.tokenize(text) == tokens
    assert tokenizer.convert_tokens_to_string(tokens) == text


def test_tokenizer_save_and_load_round_trip_writes_no_pickle(tmp_path: Path) -> None:
    tokenizer = _tokenizer(lower=True)
    written = tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and any(name.endswith("vocab.json") for name in written)
    reloaded = TransfoXLTokenizer.from_pretrained(tmp_path)
    text = "UNwanted , running low"
    assert reloaded.encode(text) == tokenizer.encode(text) == [4, 8, 7, 9]
    assert reloaded.sym2idx == tokenizer.sym2idx and reloaded.lower_case
    batch = reloaded(["want low", "running l"], return_tensors="pt")
    assert batch.input_ids.tolist() == [[3, 9], [7, 10]]
    assert reloaded.decode(batch.input_ids[0]) == "want low"


@torch.no_grad()
def test_return_attentions_and_layer_outputs_leave_the_results_unchanged() -> None:
    """The model-level switches the compat classes use: the same log-probs and memory as the default path."""
    from transformer_xl.model import TransformerXLLM

    xl = TransfoXLLMHeadModel(_config(dropout=0.0)).xl.eval()
    first = xl(_ids(11))
    default = xl(_ids(12), memory=first.memory, return_log_probs=True)
    inspected = xl(_ids(12), memory=first.memory, return_log_probs=True, return_attentions=True,
                   return_layer_outputs=True)
    assert default.attentions is None and default.layer_outputs is None
    assert torch.allclose(default.log_probs, inspected.log_probs, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(default.memory.states, inspected.memory.states))
    assert [tuple(a.shape) for a in inspected.attentions] == [(BATCH, HEADS, SEQ, SEQ + SEQ)] * LAYERS
    assert len(inspected.layer_outputs) == LAYERS + 1 and isinstance(xl, TransformerXLLM)
    assert torch.equal(inspected.layer_outputs[0][:, -1], inspected.memory.states[0][:, -1])
