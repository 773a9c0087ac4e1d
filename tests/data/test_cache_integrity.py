"""The prepare cache keeps data intact (issue 12): its key covers the content of every input, it never
reads its own output as text, and bad inputs are one-line errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from transformer_xl.data.cache import load_prepared, prepare_corpus
from transformer_xl.data.vocab import DataError


def _corpus(folder: Path, lines: int = 200) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("".join(f"the cat number {i % 17} sat on mat {i % 5}\n" for i in range(lines)),
                                  encoding="utf-8")
    return folder


def test_out_inside_path_is_never_read_back(tmp_path: Path) -> None:
    """txl prepare with --out inside --path: the second run must not read the first run's cache as text."""
    src = _corpus(tmp_path / "corpus")
    first = prepare_corpus("text", src, src / "prepared", level="word", progress=False).tokens
    second = prepare_corpus("text", src, src / "prepared", level="word", progress=False, force=True).tokens
    third = prepare_corpus("text", src, src / "prepared", level="char", progress=False).tokens
    assert first == second
    assert sum(third.values()) == (src / "a.txt").stat().st_size  # char level: exactly the one text file
    # a glob that also matches the output folder
    globbed = prepare_corpus("text", str(src / "**" / "*"), src / "prepared", level="word", progress=False,
                             force=True).tokens
    assert globbed == first


def test_named_corpus_files_inside_out_are_refused(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text("a b c\n" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="lies inside --out"):
        prepare_corpus("text", tmp_path, tmp_path, level="word", progress=False)


def test_an_edited_vocab_file_is_not_served_from_the_stale_cache(tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("<eos>\n<unk>\nthe\ncat\n", encoding="utf-8")
    first = prepare_corpus("text", src, tmp_path / "out", level="word", vocab_file=vocab, progress=False)
    assert len(first.vocab) == 4
    stat = vocab.stat()
    vocab.write_text("<eos>\n<unk>\nthe\ncat\nsat\n", encoding="utf-8")
    os.utime(vocab, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    second = prepare_corpus("text", src, tmp_path / "out", level="word", vocab_file=vocab, progress=False)
    assert len(second.vocab) == 5 and second.meta["created"] and second.meta["request"]["vocab_sha256"]
    assert second.meta["request"]["vocab_sha256"] != first.meta["request"]["vocab_sha256"]


def test_a_corpus_edited_behind_an_unchanged_mtime_is_encoded_again(tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    first = prepare_corpus("text", src, tmp_path / "out", level="char", progress=False)
    before = first.tokens
    path = src / "a.txt"
    stat = path.stat()
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("cat", "dog"), encoding="utf-8")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = prepare_corpus("text", src, tmp_path / "out", level="char", progress=False)
    assert second.tokens == before and "d" in second.vocab  # re-encoded: the new symbol is there


def test_a_touched_but_unchanged_corpus_is_reused(tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    first = prepare_corpus("text", src, tmp_path / "out", level="word", progress=False)
    os.utime(src / "a.txt")  # touched, same bytes: sha256 matches, no re-encoding
    again = prepare_corpus("text", src, tmp_path / "out", level="word", progress=False)
    assert again.meta["created"] == first.meta["created"]


def test_a_one_line_word_corpus_says_there_is_no_line_end_to_cut_at(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("word " * 2000, encoding="utf-8")  # no line end at all
    with pytest.raises(DataError, match="no line end .* to cut the valid split at") as info:
        prepare_corpus("text", tmp_path / "one.txt", tmp_path / "out", level="word", progress=False)
    assert "\n" not in str(info.value)
    # char level cuts anywhere between characters (never inside one): it works, and nothing is lost
    (tmp_path / "one.txt").write_text("é" * 3001, encoding="utf-8")
    prepared = prepare_corpus("text", tmp_path / "one.txt", tmp_path / "out", level="char", progress=False)
    assert sum(prepared.tokens.values()) == 3001 and all(n > 0 for n in prepared.tokens.values())


@pytest.mark.parametrize("name", ["meta.json", "vocab.json", "test.npy"])
def test_prepared_files_that_are_fifos_do_not_hang(name: str, tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    prepare_corpus("text", src, tmp_path / "out", level="word", progress=False)
    (tmp_path / "out" / name).unlink()
    os.mkfifo(tmp_path / "out" / name)
    signal.alarm(20)
    try:
        with pytest.raises(DataError, match="not a regular file"):
            load_prepared(tmp_path / "out")
    finally:
        signal.alarm(0)


@pytest.mark.parametrize("change", [
    {"splits": {"train": {"file": "train.npy", "tokens": "many", "dtype": "uint8"}}},
    {"splits": {"train": {"file": "../../etc/passwd", "tokens": 3, "dtype": "uint8"}}},
    {"splits": []}, {"vocab": None}, {"level": 3}, {"notes": "x"},
    {"splits": {"train": {"file": "train.npy", "tokens": 3, "dtype": "object"}}}])
def test_meta_json_with_wrong_fields_is_a_one_line_error(change: dict, tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    prepare_corpus("text", src, tmp_path / "out", level="word", progress=False)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    meta.update(change)
    (tmp_path / "out" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="meta.json is damaged") as info:
        load_prepared(tmp_path / "out")
    assert "\n" not in str(info.value)


def test_train_on_a_file_instead_of_a_prepared_directory(tmp_path: Path) -> None:
    src = _corpus(tmp_path / "corpus")
    with pytest.raises(DataError, match="is a file, not a prepared corpus directory"):
        load_prepared(src / "a.txt")
    assert np.asarray(prepare_corpus("text", src, tmp_path / "out", progress=False).split("train")).size > 0
