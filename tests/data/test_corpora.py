"""Readers of every corpus format, the cache, and the error paths, on files the tests write."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_xl.data import cache as cache_mod
from transformer_xl.data.cache import load_prepared, prepare_corpus
from transformer_xl.data.corpora import Source, _split_fixed, pystdlib_files, resolve_corpus
from transformer_xl.data.vocab import DataError, Vocabulary

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def words_with_eos(text_lines: list[str]) -> list[str]:
    return [w for line in text_lines for w in line.split() + ["<eos>"]]


def test_wikitext_counts_eos_per_line_and_builds_vocab_from_train(tmp_path: Path, files) -> None:
    text = files.write_wikitext(tmp_path / "wt")
    prepared = prepare_corpus("wikitext-2", tmp_path / "wt", tmp_path / "out", progress=False)
    vocab = prepared.vocab
    for split in ("train", "valid", "test"):
        expected = words_with_eos(text[split])
        ids = prepared.split(split)
        assert prepared.tokens[split] == len(expected) == len(ids)
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint8
        assert [vocab.symbol(i) for i in ids] == [w if w in vocab else "<unk>" for w in expected]
    train_words = set(words_with_eos(text["train"]))
    assert set(vocab.symbols) == train_words and vocab.symbol(0) == "<eos>"
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["vocab"]["sha256"] == vocab.fingerprint() and len(meta["splits"]["train"]["sha256"]) == 64


def test_wikitext_from_zip_and_case_kept(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path / "wikitext-2")
    train = tmp_path / "wikitext-2" / "wiki.train.tokens"
    train.write_text("The the THE\n" + train.read_text(encoding="utf-8"), encoding="utf-8")
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "wikitext-2").iterdir():
            z.write(f, f"wikitext-2/{f.name}")
    prepared = prepare_corpus("wikitext-2", archive, tmp_path / "out", progress=False)
    assert prepared.vocab.symbols[:1] == ["<eos>"] and {"The", "the", "THE"} <= set(prepared.vocab.symbols)


def test_ptb_is_lower_cased(tmp_path: Path) -> None:
    d = tmp_path / "simple-examples" / "data"
    d.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (d / f"ptb.{split}.txt").write_text(" The Cat <unk> \n the cat\n", encoding="utf-8")
    prepared = prepare_corpus("ptb", tmp_path / "simple-examples", tmp_path / "out", progress=False)
    assert sorted(prepared.vocab.symbols) == ["<eos>", "<unk>", "cat", "the"]
    assert prepared.tokens == {"train": 7, "valid": 7, "test": 7}


def test_enwik8_standard_split_is_90m_5m_5m() -> None:
    splits = _split_fixed("enwik8", Source(Path("enwik8")), 100_000_000, notes := [])
    assert [(s[0].start, s[0].end) for s in splits.values()] == [
        (0, 90_000_000), (90_000_000, 95_000_000), (95_000_000, 100_000_000)]
    assert notes == []


def test_enwik8_bytes_from_zip_proportional_split(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40 + "é\n<page>".encode()  # any bytes, newlines included
    archive = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("enwik8", data)
    prepared = prepare_corpus("enwik8", tmp_path, tmp_path / "out", progress=False)
    joined = b"".join(bytes(prepared.split(s).tolist()) for s in ("train", "valid", "test"))
    assert joined == data and len(prepared.vocab) == 256
    assert prepared.tokens["valid"] == prepared.tokens["test"] == len(data) * 5 // 100
    assert "not the standard" in prepared.meta["notes"][0]


def test_text8_is_character_level_with_space(tmp_path: Path) -> None:
    text = "anarchism originated as a term of abuse first used " * 50
    (tmp_path / "text8").write_text(text, encoding="ascii")
    prepared = prepare_corpus("text8", tmp_path / "text8", tmp_path / "out", progress=False)
    assert prepared.vocab.kind == "char" and " " in prepared.vocab and len(prepared.vocab) == len(set(text))
    assert "".join(prepared.vocab.decode(prepared.split(s)) for s in ("train", "valid", "test")) == text


def make_lm1b(root: Path, files) -> list[str]:
    top = root / "1-billion-word-language-modeling-benchmark-r13output"
    train, held = top / "training-monolingual.tokenized.shuffled", top / "heldout-monolingual.tokenized.shuffled"
    train.mkdir(parents=True)
    held.mkdir(parents=True)
    sentences = [line.replace("<unk>", "it") or "a" for line in files.lines(30)]  # lm1b has no <unk>
    (train / "news.en-00001-of-00100").write_text("\n".join(sentences[:20]) + "\n", encoding="utf-8")
    (train / "news.en-00002-of-00100").write_text("\n".join(sentences[20:]), encoding="utf-8")  # no final \n
    (held / "news.en.heldout-00000-of-00050").write_text("the zebra\n", encoding="utf-8")
    (root / "1b_word_vocab.txt").write_text("<S> 9\n</S> 9\n<UNK> 1\n" + "".join(
        f"{w} 1\n" for w in sorted({w for s in sentences for w in s.split()})), encoding="utf-8")
    return sentences


def test_lm1b_sentences_with_markers_and_offsets(tmp_path: Path, files) -> None:
    sentences = make_lm1b(tmp_path, files)
    prepared = prepare_corpus("lm1b", tmp_path, tmp_path / "out", progress=False)
    vocab, ids, starts = prepared.vocab, prepared.split("train"), prepared.sentences("train")
    assert len(starts) == len(sentences)
    bounds = list(starts) + [len(ids)]
    for i, sentence in enumerate(sentences):
        got = [vocab.symbol(t) for t in ids[bounds[i]:bounds[i + 1]]]
        assert got == ["<S>"] + sentence.split() + ["<S>"]
    assert [vocab.symbol(t) for t in prepared.split("test")] == ["<S>", "the", "<UNK>", "<S>"]
    assert prepared.meta["splits"]["test"]["oov"] == 1


@FAST
@given(body=st.lists(st.text(alphabet="ab é\t", max_size=12), min_size=3, max_size=30),
       block=st.integers(1, 9), level=st.sampled_from(["word", "char", "byte"]))
def test_streamed_encoding_equals_whole_text_encoding(tmp_path_factory, monkeypatch, body, block, level) -> None:
    """Blocks of any size, cut anywhere, give exactly the ids of encoding the whole text at once."""
    monkeypatch.setattr(cache_mod, "_BLOCK", block)
    d = tmp_path_factory.mktemp("t")
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("\n".join(body), encoding="utf-8")
    try:
        prepared = prepare_corpus("text", d, d / "out", level=level, progress=False)
    except DataError as exc:
        assert "empty" in str(exc)  # only whitespace: no words
        return
    whole = "\n".join(body)
    assert prepared.split("train").tolist() == prepared.vocab.encode(whole).tolist()


@FAST
@given(st.lists(st.text(alphabet="xy z", max_size=8), min_size=20, max_size=60))
def test_fraction_split_cuts_at_line_ends_and_loses_nothing(tmp_path_factory, body) -> None:
    d = tmp_path_factory.mktemp("f")
    raw = "\n".join(body) + "\n"
    (d / "mine.txt").write_text(raw, encoding="utf-8")
    spec = resolve_corpus("text", d / "mine.txt", level="char", valid_fraction=0.1, test_fraction=0.1)
    parts = [b"".join(s.read() for s in spec.splits[k]) for k in ("train", "valid", "test")]
    assert b"".join(parts) == raw.encode()
    assert all(p.endswith(b"\n") for p in parts if p)


def test_text_folder_glob_and_separate_files(tmp_path: Path, files) -> None:
    (tmp_path / "a").mkdir()
    for i in range(5):
        (tmp_path / "a" / f"{i}.md").write_text("\n".join(files.lines(40, seed=i)) + "\n", encoding="utf-8")
    (tmp_path / "a" / ".hidden").write_text("secret\n")
    by_folder = resolve_corpus("text", tmp_path / "a", level="word")
    by_glob = resolve_corpus("text", str(tmp_path / "a" / "*.md"), level="word")
    assert by_folder.splits == by_glob.splits
    assert all(".hidden" not in s.label for v in by_folder.splits.values() for s in v)
    prepared = prepare_corpus("text", tmp_path / "a", tmp_path / "out", level="word", min_freq=3, progress=False)
    assert prepared.vocab.unk_id is not None and prepared.vocab.symbols[:2] == ["<eos>", "<unk>"]


def test_pystdlib_is_deterministic_and_small() -> None:
    chosen = pystdlib_files()
    assert chosen == pystdlib_files() and len(chosen) > 20
    assert 2_000_000 < sum(p.stat().st_size for _, p in chosen) < 5_000_000
    a, b = resolve_corpus("pystdlib", None, level="byte"), resolve_corpus("pystdlib", None, level="byte")
    assert a.splits == b.splits and all(a.splits[s] for s in ("train", "valid", "test"))
    assert not {s.path for s in a.splits["train"]} & {s.path for s in a.splits["test"]}


def test_pystdlib_prepares_at_byte_level(tmp_path: Path) -> None:
    prepared = prepare_corpus("pystdlib", None, tmp_path / "out", level="byte", progress=False)
    assert prepared.tokens["train"] > 1_000_000 and prepared.split("train").dtype == np.uint8


# -- errors ----------------------------------------------------------------------------------------
def test_missing_files_name_what_and_where_and_the_source(tmp_path: Path) -> None:
    (tmp_path / "wiki.train.tokens").write_text("a\n")
    with pytest.raises(DataError) as info:
        prepare_corpus("wikitext-103", tmp_path, tmp_path / "out")
    msg = str(info.value)
    assert "wiki.valid.tokens" in msg and str(tmp_path) in msg and "wikitext-103-v1.zip" in msg
    with pytest.raises(DataError, match="enwik8.zip"):
        prepare_corpus("enwik8", tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="1b_word_vocab.txt"):
        prepare_corpus("lm1b", tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="needs --path"):
        prepare_corpus("ptb", None, tmp_path / "out")


def test_empty_split_is_an_error(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path)
    (tmp_path / "wiki.valid.tokens").write_text("")
    with pytest.raises(DataError, match="valid split is empty"):
        prepare_corpus("wikitext-2", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "train.npy").exists()  # nothing half-written left behind
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_binary_file_at_word_level(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"abc\n" * 100 + b"\x00\x01")
    with pytest.raises(DataError, match="NUL byte at byte offset 400.*--level byte"):
        prepare_corpus("text", tmp_path / "blob.bin", tmp_path / "out", level="word")


def test_invalid_utf8_reports_offset_or_is_replaced(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path)
    data = (tmp_path / "wiki.test.tokens").read_bytes()
    (tmp_path / "wiki.test.tokens").write_bytes(data[:50] + b"\xff" + data[50:])
    with pytest.raises(DataError, match=r"wiki.test.tokens: invalid UTF-8 at byte offset 50 .*--errors replace"):
        prepare_corpus("wikitext-2", tmp_path, tmp_path / "out")
    prepared = prepare_corpus("wikitext-2", tmp_path, tmp_path / "out", errors="replace", progress=False)
    assert prepared.meta["splits"]["test"]["oov"] >= 1


def test_cache_is_reused_and_rebuilt_when_sources_change(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path / "src")
    out = tmp_path / "out"
    first = prepare_corpus("wikitext-2", tmp_path / "src", out, progress=False)
    stamp = (out / "train.npy").stat().st_mtime_ns
    again = prepare_corpus("wikitext-2", tmp_path / "src", out, progress=False)
    assert (out / "train.npy").stat().st_mtime_ns == stamp and again.vocab == first.vocab
    (tmp_path / "src" / "wiki.train.tokens").write_text("brand new words <unk>\n")
    changed = prepare_corpus("wikitext-2", tmp_path / "src", out, progress=False)
    assert changed.tokens["train"] == 5 and "brand" in changed.vocab and changed.meta["splits"]["valid"]["oov"] > 0
    other = prepare_corpus("wikitext-2", tmp_path / "src", out, min_freq=2, progress=False)
    assert other.meta["request"]["min_freq"] == 2


def test_cache_with_other_vocabulary_or_truncated_file_is_rejected(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path / "src")
    out = tmp_path / "out"
    prepare_corpus("wikitext-2", tmp_path / "src", out, progress=False)
    Vocabulary.from_counts("word", [("x", 1)]).save(out / "vocab.json")
    with pytest.raises(DataError, match="not the vocabulary the cached splits were encoded with"):
        load_prepared(out)
    prepare_corpus("wikitext-2", tmp_path / "src", out, progress=False)  # invalid cache: rebuilt
    data = (out / "train.npy").read_bytes()
    (out / "train.npy").write_bytes(data[:-10])
    with pytest.raises(DataError, match="train.npy is truncated"):
        load_prepared(out)
    with pytest.raises(DataError, match="no prepared corpus"):
        load_prepared(tmp_path / "nothing")


def test_given_vocabulary_is_used(tmp_path: Path, files) -> None:
    files.write_wikitext(tmp_path / "src")
    vocab = Vocabulary("word", ["<eos>", "<unk>", "the"], specials={"eos": "<eos>", "unk": "<unk>"}, lines="eos")
    vocab.save(tmp_path / "v.json")
    prepared = prepare_corpus("wikitext-2", tmp_path / "src", tmp_path / "out", vocab_file=tmp_path / "v.json",
                              progress=False)
    assert prepared.vocab == vocab and prepared.meta["splits"]["train"]["oov"] > 0
