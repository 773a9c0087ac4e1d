"""Hugging Face TransfoXL vocabularies: vocab.pkl / vocab.bin read without running anything from them,
and the WikiText tokenization giving the same ids as transformers 4.37.2's TransfoXLTokenizer."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest
import torch

from transformer_xl.config import TransformerXLError
from transformer_xl.data.vocab import Vocabulary
from transformer_xl.interop.hf_vocab import (
    Inert,
    load_hf_vocabulary,
    read_vocab_pickle,
    vocabulary_from_hf_state,
    write_hf_vocabulary,
)

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

FRAGMENTS = [
    "Hello", "world", "the", "The", "cat", "sat", "on", "mat", "U.S.", "Mr.", "Dr.", "St.", "e.g.", "don't",
    "it's", "can't", "I'm", "they've", "rock-and-roll", "e-mail", "state-of-the-art", "1,000", "3.14",
    "1,234,567.89", "$5", "50%", "£3.50", "€20", "1990s", "10:30", "#1", "@user", "C++", "x/y", "a:b", "(", ")",
    "[", "]", "{", "}", '"', "'", "...", "—", "–", "-", "--", "é", "naïve", "café", "Zürich", "Ελληνικά", "東京",
    "&", ";", ":", "?", "!", ",", ".", "“", "”", "‘", "’", "«", "»", "<unk>", "<eos>", "1st", "2nd", "19th",
    "km/h", "O'Brien", "rock'n'roll", "A.D.", "No.", "vs.", "etc.", "3-4", "1-2-3", "0.5", ".5", "5.", "5,",
    "100,000,000", "-5", "+7", "=", "*", "^", "~", "|", "<", ">", "\\", "`", "``", "''", "_", "http://a.b/c",
]
SENTENCES = [
    "Hello, world!", "1,000 people came.", "The U.S. Army's 3rd Division (1,200 men) left at 10:30 a.m.",
    'He said, "It\'s over."', "Valkyria Chronicles III is a tactical role @-@ playing game.",
    "It was released in 2011 ; the sequel , in 2013 .", "state-of-the-art models -- and more...",
    "  leading and trailing spaces  ", "tabs\tand\tspaces", "Prices rose 3.5% to $1,234.56 in Q3.",
    "Mr. Smith met Dr. Jones in St. Louis.", "“Curly quotes” and ‘single ones’.", "A—B–C - D", "",
    "Numbers: 1.2.3, 4,5,6 and 7.8,9.", "She didn't know; they weren't sure.", "The year 1990s' music.",
]


def _sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = list(SENTENCES)
    while len(out) < n:
        words = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))]
        text = words[0]
        for word in words[1:]:
            text += rng.choice([" ", " ", " ", "", "  "]) + word
        out.append(text)
    return out


def _hf_tokenizer(tmp_path: Path, symbols: list[str], **kwargs):
    (tmp_path / "vocab.txt").write_text("".join(s + "\n" for s in symbols), encoding="utf-8")
    return transformers.TransfoXLTokenizer(vocab_file=str(tmp_path / "vocab.txt"), **kwargs)


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory):
    """A Hugging Face tokenizer whose vocabulary holds the tokens of half the sentences (the other half
    brings unknown words), its vocab.pkl as save_pretrained writes it, and the sentences."""
    tmp = tmp_path_factory.mktemp("parity")
    sentences = _sentences()
    counting = _hf_tokenizer(tmp, ["<eos>", "<unk>"])
    seen = ["<eos>", "<unk>"]
    for text in sentences[::2]:
        seen.extend(counting.tokenize(text))
    symbols = list(dict.fromkeys(seen))
    tokenizer = _hf_tokenizer(tmp, symbols)
    tokenizer.save_pretrained(str(tmp / "hf"))
    return tokenizer, tmp / "hf", sentences


def test_vocab_pkl_written_by_transformers_reads_as_the_same_vocabulary(parity) -> None:
    tokenizer, folder, _ = parity
    assert (folder / "vocab.pkl").exists() and not (folder / "vocab.json").exists()
    vocab = load_hf_vocabulary(folder)
    assert vocab.symbols == tokenizer.idx2sym and len(vocab) == tokenizer.vocab_size
    assert vocab.kind == "word" and vocab.normalization == "wikitext" and vocab.lines == "eos"
    assert vocab.unk_id == tokenizer.unk_idx and vocab.eos_id == tokenizer.sym2idx["<eos>"]
    # the state transformers pickled holds sacremoses, regex and tokenizers objects: all inert here
    state = read_vocab_pickle(folder / "vocab.pkl")
    assert isinstance(state["moses_tokenizer"], Inert) and isinstance(state["sym2idx"], dict)


def test_ids_equal_transformers_tokenizer_on_varied_sentences(parity) -> None:
    tokenizer, folder, sentences = parity
    vocab = load_hf_vocabulary(folder)
    unknown = 0
    for text in sentences:
        expected = tokenizer.encode(text)
        got = vocab.encode(text).tolist()
        if text.strip():
            assert got[-1] == vocab.eos_id, text  # the text ends its line
            got = got[:-1]
        assert got == expected, text
        unknown += expected.count(tokenizer.unk_idx)
    assert len(sentences) >= 300 and unknown > 20  # the half not counted brought unknown words


def test_wikitext_rules_split_and_join_punctuation_and_numbers(parity) -> None:
    _, folder, _ = parity
    vocab = load_hf_vocabulary(folder)
    assert vocab.tokenize("Hello, world!") == ["Hello", ",", "world", "!", "<eos>"]
    assert vocab.tokenize("1,000 and 3.14 rock-and-roll", final=False)[:3] == ["1", "@,@", "000"]
    assert vocab.tokenize("3.14 rock-and-roll")[:7] == ["3", "@.@", "14", "rock", "@-@", "and", "@-@"]
    for text in (SENTENCES[0], SENTENCES[10]):  # counted into the vocabulary: no unknown words
        assert vocab.decode(vocab.encode(text)) == text + "\n"
    two_lines = f"{SENTENCES[0]}\n{SENTENCES[10]}"
    assert vocab.decode(vocab.encode(two_lines)) == two_lines + "\n"


def test_decode_equals_transformers_detokenizer(parity) -> None:
    tokenizer, folder, sentences = parity
    vocab = load_hf_vocabulary(folder)
    for text in sentences:
        ids = tokenizer.encode(text)
        if vocab.eos_id in ids:
            continue  # ours reads <eos> as the line break it stands for; transformers prints the symbol
        assert vocab.decode(ids) == tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(ids)), text


def test_vocab_bin_in_both_torch_formats_and_vocab_txt(tmp_path: Path) -> None:
    symbols = ["<eos>", "<unk>", "the", ",", "@,@"]
    state = {"idx2sym": symbols, "sym2idx": {s: i for i, s in enumerate(symbols)}, "unk_idx": 1,
             "lower_case": True, "counter": __import__("collections").Counter({"the": 3})}
    for zipped in (True, False):
        folder = tmp_path / f"zip{zipped}"
        folder.mkdir()
        torch.save(state, folder / "vocab.bin", _use_new_zipfile_serialization=zipped)
        vocab = load_hf_vocabulary(folder)
        assert vocab.symbols == symbols and vocab.lower and vocab.unk_id == 1
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "vocab.txt").write_text("<eos> 5\n<UNK>\nthe 3\nthe\n", encoding="utf-8")
    vocab = load_hf_vocabulary(tmp_path / "txt")
    assert vocab.symbols == ["<eos>", "<UNK>", "the"] and vocab.unk_id == 1 and vocab.normalization == "wikitext"
    assert load_hf_vocabulary(tmp_path) is None


class _RunsCode:
    """A pickle payload that would run ``os.system(command)`` when unpickled by a plain unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _WritesFile:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("name", ["vocab.pkl", "vocab.bin"])
def test_malicious_vocab_pickle_runs_nothing(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    payload = {"idx2sym": ["<eos>", "<unk>", "a"], "evil": _RunsCode(f"touch {marker}"),
               "more": [_WritesFile(marker), {"x": _RunsCode(f"echo pwned > {marker}")}]}
    folder = tmp_path / "hf"
    folder.mkdir()
    if name == "vocab.pkl":
        (folder / name).write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, folder / name)
    # a plain unpickler would run the payload (this is what the reader must never do) -- not called here
    vocab = load_hf_vocabulary(folder)
    assert vocab.symbols == ["<eos>", "<unk>", "a"]
    assert not marker.exists()
    # a pickle that is only a call, with no symbols: refused with one line, still nothing run
    (folder / name).write_bytes(pickle.dumps(_RunsCode(f"touch {marker}")))
    with pytest.raises(TransformerXLError, match="no symbol list|tokenizer dictionary"):
        load_hf_vocabulary(folder)
    assert not marker.exists()


def test_damaged_vocab_pickles_are_one_line_errors(tmp_path: Path) -> None:
    good = pickle.dumps({"idx2sym": ["<eos>", "a"], "sym2idx": {"<eos>": 0, "a": 1}})
    cases = {
        "truncated": good[: len(good) // 2],
        "not a pickle": b"hello",
        "disagree": pickle.dumps({"idx2sym": ["<eos>", "a"], "sym2idx": {"<eos>": 1, "a": 0}}),
        "not strings": pickle.dumps({"idx2sym": ["<eos>", 3]}),
        "duplicate": pickle.dumps({"idx2sym": ["a", "a"]}),
        "char level": pickle.dumps({"idx2sym": ["a", "b"], "delimiter": ""}),
    }
    for label, data in cases.items():
        (tmp_path / "vocab.pkl").write_bytes(data)
        with pytest.raises(TransformerXLError) as info:
            load_hf_vocabulary(tmp_path)
        assert "\n" not in str(info.value), label
    assert vocabulary_from_hf_state({"sym2idx": {"b": 1, "a": 0}}).symbols == ["a", "b"]


def test_our_vocab_json_in_a_hugging_face_folder_wins_and_round_trips(tmp_path: Path) -> None:
    char = Vocabulary("char", list("ab \n") + ["<unk>"], specials={"unk": "<unk>"})
    assert write_hf_vocabulary(char, tmp_path) == ["vocab.json"]  # whitespace symbols: no vocab.txt
    assert load_hf_vocabulary(tmp_path) == char
    word = Vocabulary("word", ["<eos>", "a", "b"], specials={"eos": "<eos>"}, lines="eos", normalization="wikitext")
    assert write_hf_vocabulary(word, tmp_path / "w") if (tmp_path / "w").mkdir() is None else False
    assert load_hf_vocabulary(tmp_path / "w") == word
    assert (tmp_path / "w" / "vocab.txt").read_text().split() == ["<eos>", "a", "b"]
