"""Vocabularies: encoding rules per kind, ordering, persistence as JSON or plain text (never pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_xl.config import TransformerXLError
from transformer_xl.data.vocab import DataError, Vocabulary, smallest_dtype

FAST = settings(max_examples=40, deadline=None)


def word_vocab(**kw) -> Vocabulary:
    return Vocabulary.from_counts("word", [("the", 5), ("cat", 2), ("sat", 2), ("<unk>", 1)],
                                  specials={"eos": "<eos>"}, lines="eos", **kw)


@FAST
@given(st.text())
def test_byte_vocab_round_trips_any_text(text: str) -> None:
    vocab = Vocabulary.byte_level()
    ids = vocab.encode(text)
    assert len(vocab) == 256 and ids.dtype == np.uint8
    assert bytes(ids.tolist()) == text.encode("utf-8")  # id = byte value
    assert vocab.decode(ids) == text


@FAST
@given(st.text(min_size=1))
def test_char_vocab_round_trips_the_text_it_was_built_from(text: str) -> None:
    text = text.replace("\r", "")  # line ends are normalised like Python's text mode
    vocab = Vocabulary.from_counts("char", [(c, text.count(c)) for c in sorted(set(text))])
    assert vocab.decode(vocab.encode(text)) == text


def test_word_order_specials_first_then_count_ties_by_first_seen() -> None:
    vocab = word_vocab()
    assert vocab.symbols == ["<eos>", "the", "cat", "sat", "<unk>"]
    assert (vocab.eos_id, vocab.unk_id, vocab.bos_id) == (0, 4, None)
    small = word_vocab(min_freq=2)
    assert "<unk>" not in small and small.unk_id is None
    assert len(word_vocab(max_size=3)) == 3


def test_word_encode_appends_eos_per_line_and_maps_unknown_to_unk() -> None:
    vocab = word_vocab()
    ids = vocab.encode("the cat\n\nsat dog")  # blank line: a lone <eos>; last line ends too
    assert vocab.decode(ids) == "the cat\n\nsat <unk>\n"
    assert ids.tolist() == [1, 2, 0, 0, 3, 4, 0]
    assert ids.dtype == np.uint8


def test_unknown_word_without_unk_names_the_symbol() -> None:
    vocab = word_vocab(min_freq=2)
    with pytest.raises(TransformerXLError, match="'dog'"):
        vocab.encode("the dog")


def test_unknown_char_without_unk_reports_byte_offset() -> None:
    vocab = Vocabulary.from_counts("char", [("a", 1), ("b", 1)])
    with pytest.raises(DataError, match="'é'.*byte offset 2"):
        vocab.encode("abéa")


def test_sentence_lines_wrap_each_line_in_markers() -> None:
    vocab = Vocabulary("word", ["<S>", "<UNK>", "a", "b"], specials={"bos": "<S>", "unk": "<UNK>"},
                       lines="sentence")
    assert [vocab.symbol(i) for i in vocab.encode("a b\nb z\n")] == ["<S>", "a", "b", "<S>", "<S>", "b", "<UNK>",
                                                                      "<S>"]


def test_json_round_trip_and_fingerprint(tmp_path) -> None:
    for vocab in (word_vocab(), Vocabulary.byte_level(), Vocabulary.from_counts("char", [("x", 3), ("\n", 1)])):
        path = tmp_path / f"{vocab.kind}.json"
        vocab.save(path)
        json.loads(path.read_text(encoding="utf-8"))  # plain JSON, nothing executable
        loaded = Vocabulary.load(path)
        assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    assert word_vocab().fingerprint() != word_vocab(min_freq=2).fingerprint()


def test_plain_text_vocabulary_with_counts(tmp_path) -> None:
    path = tmp_path / "1b_word_vocab.txt"
    path.write_text("<S> 30301028\n</S> 30301028\n<UNK> 8\nthe 41229869\n", encoding="utf-8")
    vocab = Vocabulary.load(path)
    assert vocab.symbols == ["<S>", "</S>", "<UNK>", "the"]
    assert (vocab.bos_id, vocab.unk_id, vocab.lines) == (0, 2, "sentence")


def test_bad_vocabulary_files(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        Vocabulary.load(tmp_path / "nope.json")
    good = tmp_path / "v.json"
    word_vocab().save(good)
    truncated = tmp_path / "t.json"
    truncated.write_text(good.read_text()[:40])
    with pytest.raises(DataError, match="not valid JSON"):
        Vocabulary.load(truncated)
    with pytest.raises(DataError, match="twice"):
        Vocabulary("word", ["a", "a"])


def test_smallest_dtype() -> None:
    assert [smallest_dtype(n) for n in (2, 256, 257, 65536, 65537)] == [
        np.uint8, np.uint8, np.uint16, np.uint16, np.uint32]


def test_normalization_is_saved_and_changes_only_vocabularies_that_have_one(tmp_path) -> None:
    plain = word_vocab()
    assert "normalization" not in plain.to_dict()  # vocabularies from before keep their fingerprint
    wiki = Vocabulary("word", plain.symbols, specials=plain.specials, lines="eos", normalization="wikitext")
    assert wiki.to_dict()["normalization"] == "wikitext" and wiki.fingerprint() != plain.fingerprint()
    wiki.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == wiki
    with pytest.raises(DataError, match="word vocabularies"):
        Vocabulary("char", ["a"], normalization="wikitext")
    with pytest.raises(DataError, match="normalization must be one of"):
        Vocabulary("word", ["a"], normalization="moses")


def test_wikitext_normalization_splits_raw_text_and_joins_it_back() -> None:
    pytest.importorskip("sacremoses")
    symbols = ["<eos>", "<unk>", "Hello", ",", "world", "!", "1", "@,@", "000", "@.@", "5", "foo", "@-@", "bar"]
    vocab = Vocabulary("word", symbols, specials={"eos": "<eos>", "unk": "<unk>"}, lines="eos",
                       normalization="wikitext")
    assert vocab.tokenize("Hello, world!") == ["Hello", ",", "world", "!", "<eos>"]
    assert vocab.tokenize("1,000 1.5 foo-bar\n\nHello") == ["1", "@,@", "000", "1", "@.@", "5", "foo", "@-@", "bar",
                                                            "<eos>", "<eos>", "Hello", "<eos>"]
    assert vocab.tokenize("Hello <unk>, world") == ["Hello", "<unk>", ",", "world", "<eos>"]  # specials stay whole
    assert vocab.decode(vocab.encode("Hello, world!\n1,000 foo-bar 1.5")) == "Hello, world!\n1,000 foo-bar 1.5\n"
    plain = Vocabulary("word", symbols, specials={"eos": "<eos>", "unk": "<unk>"}, lines="eos")
    assert plain.tokenize("Hello, world!") == ["Hello,", "world!", "<eos>"]  # no normalisation: whitespace only
    # prepared corpora are already tokenized: the corpus path (prepare_text + words) never re-normalises
    assert vocab.words(vocab.prepare_text("1 @,@ 000"), final=False) == ["1", "@,@", "000"]


def test_a_vocabulary_prepared_from_wikitext_reads_raw_text_the_wikitext_way(tmp_path, files) -> None:
    pytest.importorskip("sacremoses")
    from transformer_xl.data.cache import prepare_corpus

    files.write_wikitext(tmp_path / "wt")
    vocab = prepare_corpus("wikitext-2", tmp_path / "wt", tmp_path / "out", progress=False).vocab
    assert vocab.normalization == "wikitext"
    assert Vocabulary.load(tmp_path / "out" / "vocab.json").normalization == "wikitext"
    assert vocab.tokenize("Heading, Heading!", final=False) == ["Heading", ",", "Heading", "!"]
    text = prepare_corpus("text", tmp_path / "wt" / "wiki.train.tokens", tmp_path / "txt", level="word",
                          progress=False, valid_fraction=0.2, test_fraction=0.2).vocab
    assert text.normalization == "none"  # other corpora: whitespace only, as before
