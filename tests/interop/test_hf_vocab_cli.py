"""A Hugging Face TransfoXL directory as transformers 4.37.2 writes it (config.json, model.safetensors or
pytorch_model.bin, vocab.pkl), converted from a folder or a hub id (offline, from a hub cache built here),
then scoring raw text with the token ids of Hugging Face's tokenizer and generating detokenized text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from transformer_xl import Tokenizer, generate_text, load_model_and_tokenizer, load_tokenizer
from transformer_xl.cli import main
from transformer_xl.config import TransformerXLError
from transformer_xl.pretrained import load_vocabulary

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

TRAIN_TEXT = [
    "Hello, world! The cat sat on the mat.",
    "It cost $1,000 in 1990, or 3.5% more than the state-of-the-art model.",
    '"Quoted," he said; the dog\'s bone (a big one) was 2.5 m long.',
    "Valkyria Chronicles III is a tactical role-playing game: it sold 1,234,567 copies!",
]
SCORED = "Hello, world! It cost 1,000 more.\nThe dog sat on a state-of-the-art mat (3.5 m) -- unknown words?\n"
HUB_ID = "transfo-xl/transfo-xl-wt103"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A small random TransfoXLLMHeadModel and its tokenizer saved by transformers 4.37.2."""
    tmp = tmp_path_factory.mktemp("hf")
    (tmp / "vocab.txt").write_text("<eos>\n<unk>\n", encoding="utf-8")
    counting = transformers.TransfoXLTokenizer(vocab_file=str(tmp / "vocab.txt"))
    symbols = list(dict.fromkeys(["<eos>", "<unk>"] + [s for line in TRAIN_TEXT for s in counting.tokenize(line)]))
    (tmp / "vocab.txt").write_text("".join(s + "\n" for s in symbols), encoding="utf-8")
    tokenizer = transformers.TransfoXLTokenizer(vocab_file=str(tmp / "vocab.txt"))
    config = transformers.TransfoXLConfig(vocab_size=len(symbols), cutoffs=[20, 40], div_val=2, d_model=16,
                                          d_embed=16, n_head=2, d_head=8, d_inner=32, n_layer=2, mem_len=8,
                                          clamp_len=6, same_length=True, dropout=0.0, dropatt=0.0)
    torch.manual_seed(0)
    model = transformers.TransfoXLLMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    folder = tmp / "transfo-xl-small"
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    (folder / "vocab.txt").unlink(missing_ok=True)  # only vocab.pkl, as on the hub
    assert (folder / "vocab.pkl").exists() and (folder / "model.safetensors").exists()
    return folder, tokenizer


def test_converted_model_scores_raw_text_with_huggingface_token_ids(hf_dir, tmp_path: Path, capsys) -> None:
    folder, tokenizer = hf_dir
    assert main(["convert", "--from", "hf", "--to", "ours", str(folder), str(tmp_path / "ours")]) == 0
    assert "wikitext tokenization" in capsys.readouterr().out
    vocab = load_vocabulary(tmp_path / "ours")
    assert vocab.normalization == "wikitext" and vocab.symbols == tokenizer.idx2sym
    (tmp_path / "text.txt").write_text(SCORED, encoding="utf-8")
    assert main(["score", "--checkpoint", str(tmp_path / "ours"), str(tmp_path / "text.txt")]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    expected = []
    for line in SCORED.splitlines():  # Hugging Face's tokenizer, line by line, <eos> at each line end
        expected += tokenizer.convert_ids_to_tokens(tokenizer.encode(line)) + ["<eos>"]
    assert "<unk>" in expected  # the text has words the vocabulary lacks
    assert [json.loads(f'"{row[1]}"') for row in rows] == expected[1:]  # the first token has no context


def test_converted_model_generates_detokenized_text(hf_dir, tmp_path: Path, capsys) -> None:
    folder, tokenizer = hf_dir
    assert main(["convert", "--from", "hf", "--to", "ours", str(folder), str(tmp_path / "ours")]) == 0
    prompt = "Hello, world! It cost 1,000"
    assert main(["generate", "--checkpoint", str(tmp_path / "ours"), "--prompt", prompt, "--max-new-tokens", "60",
                 "--seed", "1", "--temperature", "1.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["prompt_ids"] == tokenizer.encode(prompt)
    vocab = load_vocabulary(tmp_path / "ours")
    generated = [vocab.symbol(i) for i in result["ids"]]
    assert {",", "@,@", "."} & set(generated)  # there was punctuation or a number split to undo
    text = result["text"]
    assert "@,@" not in text and "@.@" not in text and "@-@" not in text and " ," not in text
    assert prompt + text == vocab.decode(result["prompt_ids"] + result["ids"])


def _hub_cache(root: Path, folder: Path) -> Path:
    """The layout huggingface_hub keeps: models--OWNER--NAME/{refs/main, snapshots/COMMIT/FILES}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return root


def test_convert_from_a_hub_id_offline_reads_the_cache(hf_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    folder, tokenizer = hf_dir
    cache = _hub_cache(tmp_path / "cache", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["convert", "--from", "hf", "--to", "ours", HUB_ID, str(tmp_path / "ours"),
                 "--cache-dir", str(cache)]) == 0
    assert load_vocabulary(tmp_path / "ours").symbols == tokenizer.idx2sym
    capsys.readouterr()
    assert main(["convert", "--from", "hf", "--to", "ours", "transfo-xl/not-cached", str(tmp_path / "x"),
                 "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HF_HUB_OFFLINE" in err and not (tmp_path / "x").exists()


def test_load_model_and_tokenizer_from_a_hugging_face_folder_and_a_run(hf_dir, tmp_path: Path) -> None:
    folder, tokenizer = hf_dir
    model, tok = load_model_and_tokenizer(folder)
    assert isinstance(tok, Tokenizer) and tok.encode("Hello, world!").tolist()[:-1] == tokenizer.encode("Hello, world!")
    out = generate_text(model, tok, "Hello, world!", max_new_tokens=8, seed=0, temperature=0)
    assert len(out.ids) == 8 and out.full_text == tok.decode(out.prompt_ids + out.ids)
    assert out.prompt_ids == tokenizer.encode("Hello, world!")
    assert main(["convert", "--from", "hf", "--to", "ours", str(folder), str(tmp_path / "run" / "last")]) == 0
    model2, tok2 = load_model_and_tokenizer(tmp_path / "run")  # a run directory: its best/, else last/
    assert tok2 == load_tokenizer(tmp_path / "run") and tok2.symbols == tok.symbols
    assert generate_text(model2, tok2, "Hello, world!", max_new_tokens=8, seed=0, temperature=0).ids == out.ids
    with pytest.raises(TransformerXLError, match="not found"):
        load_model_and_tokenizer(tmp_path / "missing")


def test_wikitext_evaluation_with_the_converted_vocabulary_and_the_papers_span(hf_dir, tmp_path: Path,
                                                                              capsys) -> None:
    """The README's WikiText-103 commands at small scale: prepare with the model's vocab.json, eval at a span."""
    folder, tokenizer = hf_dir
    assert main(["convert", "--from", "hf", "--to", "ours", str(folder), str(tmp_path / "ours")]) == 0
    corpus = tmp_path / "wikitext"
    corpus.mkdir()
    tokenized = "".join(" " + " ".join(tokenizer.tokenize(line)) + " \n" for line in TRAIN_TEXT)  # as wiki.*.tokens
    for split in ("train", "valid", "test"):
        (corpus / f"wiki.{split}.tokens").write_text(tokenized * 5, encoding="utf-8")
    assert main(["prepare", "--corpus", "wikitext-103", "--path", str(corpus), "--out", str(tmp_path / "data"),
                 "--vocab", str(tmp_path / "ours" / "vocab.json"), "--no-progress"]) == 0
    assert "out-of-vocabulary 0.00%" in capsys.readouterr().out  # tokenized text is split as it is
    assert main(["eval", "--checkpoint", str(tmp_path / "ours"), "--data", str(tmp_path / "data"), "--seg-len", "8",
                 "--mem-len", "32", "--clamp-len", "20", "--same-length"]) == 0
    out = capsys.readouterr().out
    assert "seg_len 8, mem_len 32, clamp_len 20, same_length on" in out and "ppl" in out
