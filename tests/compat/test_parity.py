"""transformer_xl.compat against transformers 4.37.2's TransfoXL classes on the same saved files.

Random checkpoints of several shapes are written by transformers' own save_pretrained (weights re-drawn
with std 0.3 so positions, biases and memories matter); the compat classes load them from the folder
and every output is compared over three consecutive calls that carry the memories: prediction scores,
losses, mems, all hidden states and attentions (within 1e-5 plus 1e-6 of the value: a log-probability
near -30 carries float32 rounding of ~4e-6 per operation), greedy and seeded sampled generations, and tokenizer ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import randomize_
from transformer_xl import compat
from transformer_xl.config import TransformerXLError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

BATCH, SEG, VOCAB, TOL, RTOL = 2, 5, 60, 1e-5, 1e-6
BASE = dict(vocab_size=VOCAB, d_model=16, n_head=2, d_head=8, d_inner=32, n_layer=2, mem_len=7, dropout=0.0,
            dropatt=0.0)
SHAPES: dict[str, dict[str, Any]] = {
    "plain": dict(cutoffs=[], div_val=1, d_embed=16, untie_r=False, same_length=False, clamp_len=-1),
    "div1-untied-uv-same-length-clamp": dict(cutoffs=[10, 30], div_val=1, d_embed=24, untie_r=True,
                                             same_length=True, clamp_len=4),
    "div4-prenorm": dict(cutoffs=[10, 30], div_val=4, d_embed=32, untie_r=False, same_length=False,
                         clamp_len=-1, pre_lnorm=True, proj_share_all_but_first=False),
    "div4-untied-uv-same-length-clamp": dict(cutoffs=[10, 30], div_val=4, d_embed=32, untie_r=True,
                                             same_length=True, clamp_len=3, tie_word_embeddings=False),
}


def _pair(name: str, tmp_path: Path) -> tuple[Any, Any, Path]:
    hf = transformers.TransfoXLLMHeadModel(transformers.TransfoXLConfig(**BASE, **SHAPES[name])).eval()
    randomize_(hf, std=0.3, seed=len(name))
    folder = tmp_path / name
    hf.save_pretrained(folder)
    return hf, compat.TransfoXLLMHeadModel.from_pretrained(folder), folder


def _close(a: Any, b: Any, what: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, (what, getattr(b, "shape", b), a.shape)
        excess = ((a - b).abs() - TOL - RTOL * a.abs()).max().item()  # float32 rounding of log-probs near -30
        assert excess < 0, (what, (a - b).abs().max().item())
    else:
        assert type(a) in (tuple, list) and len(a) == len(b), (what, type(a), type(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{what}[{i}]")


def _tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(SHAPES))
@torch.no_grad()
def test_three_calls_with_memories_attentions_and_hidden_states_match(name: str, tmp_path: Path) -> None:
    hf, ours, _ = _pair(name, tmp_path)
    tokens = _tokens(3 * SEG, 1)
    hf_mems = our_mems = None
    for s in range(3):
        seg = tokens[:, s * SEG:(s + 1) * SEG]
        h = hf(seg, mems=hf_mems, output_attentions=True, output_hidden_states=True)
        o = ours(seg, mems=our_mems, output_attentions=True, output_hidden_states=True)
        assert list(o.keys()) == list(h.keys()) == ["prediction_scores", "mems", "hidden_states", "attentions"]
        for field in h.keys():
            _close(h[field], o[field], f"{field} of call {s}")
        assert len(o.mems) == 2 and o.mems[0].shape == (min(7, SEG * (s + 1) + 7), BATCH, 16)
        hf_mems, our_mems = h.mems, o.mems


@pytest.mark.parametrize("name", ["plain", "div4-untied-uv-same-length-clamp"])
@torch.no_grad()
def test_losses_loss_and_tuple_order_with_labels_match(name: str, tmp_path: Path) -> None:
    hf, ours, _ = _pair(name, tmp_path)
    tokens = _tokens(3 * SEG, 2)
    hf_mems = our_mems = None
    for s in range(3):
        seg = tokens[:, s * SEG:(s + 1) * SEG]
        labels = seg.clone()
        labels[1, 2] = -100  # ignored position: loss 0, left out of the mean
        h = hf(seg, mems=hf_mems, labels=labels.clone(), return_dict=False)
        o = ours(seg, mems=our_mems, labels=labels, return_dict=False)
        # (losses, prediction_scores=(), mems, loss)
        assert len(o) == len(h) == 4 and o[1] == () and h[1] == ()
        if SHAPES[name]["cutoffs"]:
            # transformers' adaptive softmax returns `losses` grouped by cluster (its crit runs without
            # keep_order), not in input order; ours are in input order: the same values, placed correctly
            _close(h[0].flatten().sort().values, o[0].flatten().sort().values, "losses as a multiset")
        else:
            _close(h[0], o[0], "losses")
        scores = ours(seg, mems=our_mems).prediction_scores  # (B, T, V) log-probabilities
        expected = -scores[:, :-1].gather(-1, seg[:, 1:, None]).squeeze(-1)  # position t predicts t + 1
        expected[1, 1] = 0
        _close(expected, o[0], "losses in input order")
        assert o[0].shape == (BATCH, SEG - 1) and o[0][1, 1] == 0
        _close(h[2], o[2], "mems")
        _close(h[3], o[3], "loss")
        hf_mems, our_mems = h[2], o[2]


@pytest.mark.parametrize("name", ["plain", "div1-untied-uv-same-length-clamp"])
@torch.no_grad()
def test_base_model_outputs_and_reset_memory_length_match(name: str, tmp_path: Path) -> None:
    hf_head, _, folder = _pair(name, tmp_path)
    hf = transformers.TransfoXLModel.from_pretrained(folder).eval()
    ours = compat.TransfoXLModel.from_pretrained(folder)
    before = ours.xl.config
    for model in (hf, ours):
        model.reset_memory_length(4)
    assert ours.xl.config is before and ours.xl.config.mem_len == 7  # the shared config is untouched
    tokens = _tokens(3 * SEG, 3)
    hf_mems = our_mems = None
    for s in range(3):
        seg = tokens[:, s * SEG:(s + 1) * SEG]
        h = hf(seg, mems=hf_mems, return_dict=False)
        o = ours(seg, mems=our_mems, return_dict=False)
        assert len(o) == 2 and o[1][0].shape == (4, BATCH, 16)
        _close(h, o, f"call {s}")
        hf_mems, our_mems = h[1], o[1]
    _close(hf.init_mems(3), ours.init_mems(3), "init_mems")


@pytest.mark.parametrize("name", ["div1-untied-uv-same-length-clamp", "div4-prenorm"])
@torch.no_grad()
def test_greedy_and_seeded_sampled_generations_match(name: str, tmp_path: Path) -> None:
    hf, ours, _ = _pair(name, tmp_path)
    prompt = _tokens(4, 4)
    runs = [dict(max_length=20), dict(max_new_tokens=12, eos_token_id=9),
            dict(do_sample=True, max_new_tokens=12, eos_token_id=59),
            dict(do_sample=True, max_new_tokens=12, top_k=5, temperature=0.7),
            dict(do_sample=True, max_new_tokens=12, top_k=0, top_p=0.8)]
    for kwargs in runs:
        torch.manual_seed(11)
        expected = hf.generate(prompt, pad_token_id=1, **kwargs)
        torch.manual_seed(11)
        got = ours.generate(prompt, pad_token_id=1, **kwargs)
        assert got.tolist() == expected.tolist(), kwargs
        assert got.shape[1] > 4


SENTENCES = [
    "Hello, world! The cat sat on the mat.", "It cost $1,234.56 -- or 1.5 million in 2019.",
    "  leading spaces and a tab\tinside  ", "She didn't know; they weren't sure.", "state-of-the-art models",
    "“Curly quotes” and ‘single ones’.", "Mr. Smith met Dr. Jones in St. Louis.", "UPPER lower MiXeD words",
    "an unknownword here <unk> and <eos> typed", "Numbers: 1.2.3, 4,5,6 and 7.8,9.", "",
    "first line,\nsecond line.\r\nthird", "A—B–C - D (x) [y] {z} 'quoted' \"double\"",
]


@pytest.mark.parametrize("lower", [False, True])
def test_tokenizer_ids_tokens_and_text_match(lower: bool, tmp_path: Path) -> None:
    words = sorted({w for s in SENTENCES[:6] for w in s.lower().split() + s.split()})
    (tmp_path / "vocab.txt").write_text("".join(w + "\n" for w in ["<eos>", "<unk>", ",", ".", "@,@", "@.@",
                                                                    "the", "The"] + words), encoding="utf-8")
    hf = transformers.TransfoXLTokenizer(vocab_file=str(tmp_path / "vocab.txt"), lower_case=lower)
    hf.save_pretrained(tmp_path / "saved")  # vocab.pkl, as the hub's folders hold it
    ours = compat.TransfoXLTokenizer.from_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "vocab.json").exists()  # read from the pickle, inertly
    assert ours.sym2idx == hf.sym2idx and ours.idx2sym == hf.idx2sym and ours.vocab_size == hf.vocab_size
    for text in SENTENCES:
        assert ours.tokenize(text) == hf.tokenize(text), text
        ids = hf.encode(text)
        assert ours.encode(text) == ids, text
        assert dict(ours(text)) == dict(hf(text))  # {"input_ids": [...]}: no attention mask, as upstream
        assert ours.decode(ids) == hf.decode(ids), text
        assert ours.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(["the", "nope"]) == hf.convert_tokens_to_ids(["the", "nope"])


WHY_SNIPPETS = """
{import_line}

tokenizer = TransfoXLTokenizer.from_pretrained(folder)
model = TransfoXLModel.from_pretrained(folder)
ids = torch.tensor([tokenizer.encode("The cat sat , the cat sat .")])
hidden_states, mems = model(ids)[:2]
lm = TransfoXLLMHeadModel.from_pretrained(folder)
prediction_scores = lm(ids).prediction_scores
losses = lm(ids, labels=ids).losses
words = tokenizer.tokenize("The cat, the cat.")
text = tokenizer.decode(tokenizer.encode("The cat sat."))
cat = tokenizer.sym2idx["cat"]
out = lm(ids[:, :3])
out = lm(ids[:, 3:], mems=out.mems)
carried = out.prediction_scores
generated = lm.generate(ids, max_length=12)
"""


@torch.no_grad()
def test_the_snippets_users_run_give_the_same_results_after_the_import_change(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hf, _, folder = _pair("div4-untied-uv-same-length-clamp", tmp_path)
    symbols = ["<eos>", "<unk>", "The", "cat", "sat", ",", ".", "the"] + [f"w{i}" for i in range(VOCAB - 8)]
    (tmp_path / "vocab.txt").write_text("".join(s + "\n" for s in symbols), encoding="utf-8")
    transformers.TransfoXLTokenizer(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(folder)
    results = []
    for import_line in ("from transformers import TransfoXLModel, TransfoXLLMHeadModel, TransfoXLTokenizer",
                        "from transformer_xl.compat import TransfoXLModel, TransfoXLLMHeadModel, TransfoXLTokenizer"):
        if import_line.startswith("from transformers"):  # transformers unpickles vocab.pkl only when told to
            monkeypatch.setenv("TRUST_REMOTE_CODE", "True")
        else:  # ours reads it inertly, without the switch
            monkeypatch.delenv("TRUST_REMOTE_CODE")
        scope: dict[str, Any] = {"torch": torch, "folder": folder}
        exec(WHY_SNIPPETS.format(import_line=import_line), scope)
        results.append(scope)
    theirs, ours = results
    for name in ("hidden_states", "mems", "prediction_scores", "losses", "carried"):
        _close(theirs[name], ours[name], name)
    for name in ("ids", "generated"):
        assert ours[name].tolist() == theirs[name].tolist(), name
    for name in ("words", "text", "cat"):
        assert ours[name] == theirs[name], name


def test_unsupported_arguments_are_refused_by_name(tmp_path: Path) -> None:
    _, ours, _ = _pair("plain", tmp_path)
    ids = _tokens(SEG, 5)
    with pytest.raises(TransformerXLError, match="head_mask"):
        ours(ids, head_mask=torch.ones(2, 2))
    with pytest.raises(TransformerXLError, match="inputs_embeds"):
        ours(inputs_embeds=torch.zeros(BATCH, SEG, 16))
    with pytest.raises(TransformerXLError, match="num_beams"):
        ours.generate(ids, num_beams=3)
    with pytest.raises(TransformerXLError, match="repetition_penalty"):
        ours.generate(ids, repetition_penalty=1.2)


@torch.no_grad()
def test_pytorch_model_bin_and_a_hub_id_from_the_cache_load_the_same_model(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    hf = transformers.TransfoXLLMHeadModel(transformers.TransfoXLConfig(**BASE, **SHAPES["div4-prenorm"])).eval()
    randomize_(hf, std=0.3, seed=3)
    hf.save_pretrained(tmp_path / "bin", safe_serialization=False)  # every tied alias stored, a zip pickle
    assert (tmp_path / "bin" / "pytorch_model.bin").exists()
    (tmp_path / "bin" / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(VOCAB)), encoding="utf-8")
    commit = "0123456789abcdef0123456789abcdef01234567"  # huggingface_hub's cache layout
    repo = tmp_path / "cache" / "models--transfo-xl--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tmp_path / "bin", repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ids = _tokens(SEG, 6)
    expected = hf(ids).prediction_scores
    for source, kwargs in ((tmp_path / "bin", {}), ("transfo-xl/tiny", {"cache_dir": tmp_path / "cache"})):
        model = compat.TransfoXLLMHeadModel.from_pretrained(source, **kwargs)
        _close(expected, model(ids).prediction_scores, str(source))
        assert compat.TransfoXLTokenizer.from_pretrained(source, **kwargs).encode("w3 w5 w9") == [3, 5, 9]
    with pytest.raises(TransformerXLError, match="not-cached"):
        compat.TransfoXLLMHeadModel.from_pretrained("transfo-xl/not-cached", cache_dir=tmp_path / "cache")
