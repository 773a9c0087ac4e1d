"""`txl convert` end to end: formats, vocabulary carried along, user mistakes exit 2 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import randomize_
from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.cli import main
from transformer_xl.data.vocab import Vocabulary
from transformer_xl.interop import export_hf, import_hf
from transformer_xl.pretrained import load_pretrained, load_vocabulary, save_pretrained

CONFIG = ModelConfig(n_token=12, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, cutoffs=(4, 8),
                     div_val=2, d_embed=16, seg_len=6, mem_len=6)


def _equal(a: TransformerXLLM, b: TransformerXLLM) -> bool:
    return a.config == b.config and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))


def test_hf_to_ours_to_hf_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("transformer_xl.data.vocab")
    model = randomize_(TransformerXLLM(CONFIG), std=0.3)
    symbols = ["<eos>", "<unk>"] + [f"w{i}" for i in range(10)]
    export_hf(model, tmp_path / "hf", vocab_symbols=symbols)
    assert main(["convert", "--from", "hf", "--to", "ours", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _equal(model, load_pretrained(tmp_path / "ours"))
    assert load_vocabulary(tmp_path / "ours").symbols == symbols
    assert main(["convert", "--from", "ours", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "hf2")]) == 0
    assert _equal(model, import_hf(tmp_path / "hf2"))
    assert (tmp_path / "hf2" / "vocab.txt").read_text().split() == symbols


@pytest.mark.parametrize("argv, message", [
    (["--from", "hf", "--to", "ours", "{tmp}/missing", "{tmp}/out"], "not found"),
    (["--from", "original", "--to", "ours", "{tmp}/model.pt", "{tmp}/out"], "--unsafe-pickle"),
    (["--from", "ours", "--to", "hf", "{tmp}/ours", "{tmp}/ours"], "not an empty directory"),
    (["--from", "nvidia", "--to", "ours", "--unsafe-pickle", "{tmp}/missing.pt", "{tmp}/out"], "not found"),
])
def test_user_mistakes_exit_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    save_pretrained(TransformerXLLM(CONFIG), tmp_path / "ours")
    assert main(["convert"] + [a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("txl convert: error:") and message in err and err.count("\n") == 1


def _config_for(n_token: int) -> ModelConfig:
    return ModelConfig(n_token=n_token, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, cutoffs=(4, 8),
                       div_val=2, d_embed=16, seg_len=6, mem_len=6)


VOCABULARIES = {
    # 29 symbols, space and newline among them: once came back as a 27-symbol word vocabulary
    "char": lambda: Vocabulary("char", list("abcdefghijklmnopqrstuvw \n.,") + ["<unk>"], specials={"unk": "<unk>"}),
    "byte": Vocabulary.byte_level,
    "word-wikitext": lambda: Vocabulary("word", ["<eos>", "<unk>", "the", ",", "@,@", "1", "000", "Hello", "world",
                                                 "!", "cat", "sat"], specials={"eos": "<eos>", "unk": "<unk>"},
                                        lines="eos", normalization="wikitext"),
    "word-sentences": lambda: Vocabulary("word", ["<S>", "<UNK>", "a", "b", "c", "d", "e", "f", "g", "h"],
                                         specials={"bos": "<S>", "unk": "<UNK>"}, lines="sentence", lower=True),
}


@pytest.mark.parametrize("kind", sorted(VOCABULARIES))
def test_vocabulary_round_trips_exactly_through_hugging_face_format(kind: str, tmp_path: Path) -> None:
    vocab = VOCABULARIES[kind]()
    model = randomize_(TransformerXLLM(_config_for(len(vocab))), std=0.3)
    save_pretrained(model, tmp_path / "run" / "best", vocab=vocab)  # a run directory: its best/ is used
    assert main(["convert", "--from", "ours", "--to", "hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert main(["convert", "--from", "hf", "--to", "ours", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back = load_vocabulary(tmp_path / "back")
    assert back == vocab and back.symbols == vocab.symbols and back.kind == vocab.kind
    assert back.specials == vocab.specials and back.normalization == vocab.normalization
    assert _equal(model, load_pretrained(tmp_path / "back"))


def test_a_vocabulary_that_does_not_fit_n_token_is_refused_before_writing(tmp_path: Path, capsys) -> None:
    save_pretrained(TransformerXLLM(CONFIG), tmp_path / "ours", vocab=Vocabulary.byte_level())  # 256 != 12
    assert main(["convert", "--from", "ours", "--to", "hf", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "256 symbols" in err and "n_token 12" in err and not (tmp_path / "hf").exists()
