"""Encode a corpus once into ``.npy`` files that training memory-maps.

A prepared directory holds ``vocab.json``, ``train.npy``, ``valid.npy``, ``test.npy`` (1-D arrays of the
smallest unsigned dtype that fits the vocabulary), ``{split}.sentences.npy`` for sentence-level corpora
(start of every sentence), and ``meta.json`` (written last: token counts, source sizes, times and
sha256, the vocabulary hash, the options). ``prepare_corpus`` reuses a directory whose meta matches
the request and whose sources are unchanged.

Speed: text is read in blocks of a few MB cut at line ends, split by ``str.split`` and looked up with
``map(dict.__getitem__)`` into ``np.fromiter``: one C-level pass per block and no Python loop per token.
The training split is encoded in a single pass with provisional ids (first occurrence order); the final
frequency-ordered vocabulary is then applied with one vectorised table lookup.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import struct
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .corpora import SPLITS, CorpusSpec, Source, resolve_corpus
from .vocab import DataError, Vocabulary, read_regular_file

__all__ = ["PreparedCorpus", "prepare_corpus", "load_prepared", "CACHE_VERSION"]

CACHE_VERSION = 1
_BLOCK = 1 << 23  # 8 MiB of text per step: ~1.5M words, a few hundred MB of transient Python strings
_HEADER = 128  # bytes reserved for the .npy header, written once the token count is known


# --------------------------------------------------------------------------------------------------
class _NpyWriter:
    """Appends arrays to a 1-D ``.npy`` file of unknown final length; the header is written on close.

    Writing to ``path.tmp`` and renaming on success means an interrupted run never leaves a
    plausible-looking but short cache file.
    """

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self.tmp = path.with_name(path.name + ".tmp")
        self.handle = open(self.tmp, "wb")
        self.handle.write(b"\0" * _HEADER)

    def write(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self.handle.write(memoryview(array).cast("B"))
        self.count += len(array)

    def finish(self) -> None:
        """Write the header and close; the file keeps its temporary name until :meth:`commit`."""
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (descr, self.count)
        text += " " * (_HEADER - 10 - len(text) - 1) + "\n"  # pad so the data starts 64-byte aligned
        header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")
        assert len(header) == _HEADER
        self.handle.seek(0)
        self.handle.write(header)
        self.handle.close()

    def commit(self) -> None:
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.tmp.unlink(missing_ok=True)


class _Progress:
    """A tqdm bar over bytes read, shown only on a terminal (quiet in CI logs and pipes)."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class _SplitReport:
    tokens: int = 0
    oov: int = 0
    sha256: str = ""
    sentences: int | None = None


class _Reader:
    """Streams a split's sources: hashes every byte, rejects binary data, decodes UTF-8 with the byte
    offset of any error, and yields text pieces that end at a line end (or other safe cut)."""

    def __init__(self, sources: list[Source], *, level: str, lines: str, errors: str, progress: _Progress,
                 split: str) -> None:
        self.sources, self.level, self.lines, self.errors = sources, level, lines, errors
        self.progress, self.split = progress, split
        self.sha = hashlib.sha256()

    def blocks(self) -> Iterator[bytes]:
        for src in self.sources:
            for block in src.iter_blocks(_BLOCK):
                self.sha.update(block)
                self.progress.update(len(block))
                yield block

    def _cut(self, data: bytes) -> int:
        cut = data.rfind(b"\n") + 1
        if cut or self.lines == "sentence":
            return cut
        if self.level == "word":
            return max(data.rfind(b" "), data.rfind(b"\t")) + 1  # between words, never inside one
        i = len(data) - 1
        while i > 0 and data[i] & 0xC0 == 0x80:  # back to the first byte of a UTF-8 character
            i -= 1
        return i

    def _decode(self, data: bytes, src: Source, offset: int) -> str:
        nul = data.find(b"\x00")
        if nul >= 0:
            raise DataError(f"{src.label} is not text: NUL byte at byte offset {offset + nul}; "
                            "for binary data prepare it with --level byte")
        try:
            return data.decode("utf-8", errors=self.errors)
        except UnicodeDecodeError as exc:
            raise DataError(f"{src.label}: invalid UTF-8 at byte offset {offset + exc.start} "
                            f"(byte 0x{data[exc.start]:02x}); fix the file, or pass --errors replace "
                            "to substitute U+FFFD") from None

    def texts(self) -> Iterator[tuple[str, bool]]:
        """(text, ends_document) pieces; ``ends_document`` marks the last piece of each source, whose
        unterminated last line (word level) has already been given its line end."""
        for src in self.sources:
            carry, offset = b"", src.start  # offset: position of carry[0] in the file
            last = b""
            for block in src.iter_blocks(_BLOCK):
                self.sha.update(block)
                self.progress.update(len(block))
                last = block[-1:]
                data = carry + block if carry else block
                cut = self._cut(data)
                if cut <= 0:
                    carry = data
                    continue
                yield self._decode(data[:cut], src, offset), False
                offset += cut
                carry = data[cut:]
            text = self._decode(carry, src, offset) if carry else ""
            if self.level == "word" and self.lines != "none" and last not in (b"", b"\n", b"\r"):
                text += "\n"  # an unterminated last line still ends, as when a file is read line by line
            yield text, True


def _write_ids(writer: _NpyWriter, ids: np.ndarray, report: _SplitReport, bos: int | None,
               starts: list[np.ndarray] | None) -> None:
    if starts is not None and bos is not None:
        # Sentences are "<S> w1 .. wn <S>": every other marker opens one.
        marks = np.flatnonzero(ids == bos)
        starts.append(marks[0::2] + report.tokens)
    writer.write(ids)
    report.tokens += len(ids)


class _Growing(dict):
    """symbol -> provisional id, assigning the next id to every new symbol (first-occurrence order)."""

    def __missing__(self, key: str) -> int:
        value = self[key] = len(self)
        return value


# --------------------------------------------------------------------------------------------------
def _encode_bytes(reader: _Reader, writer: _NpyWriter, report: _SplitReport) -> None:
    for block in reader.blocks():
        writer.write(np.frombuffer(block, dtype=np.uint8))
        report.tokens += len(block)


def _encode_with(vocab: Vocabulary, reader: _Reader, writer: _NpyWriter, report: _SplitReport,
                 starts: list[np.ndarray] | None) -> None:
    """Encode one split with a known vocabulary (word or char level)."""
    if vocab.kind == "char":
        table, misses = vocab.char_table(), [0]
        for text, _ in reader.texts():
            ids = vocab.encode_chars(vocab.prepare_text(text), table=table, where=reader.split, counter=misses)
            _write_ids(writer, ids, report, None, None)
        report.oov = misses[0]
        return
    lookup = vocab.lookup(f"in the {reader.split} split")
    dtype, bos = vocab.dtype, vocab.bos_id
    for text, _ in reader.texts():
        words = vocab.words(vocab.prepare_text(text), final=False)
        ids = np.fromiter(map(lookup.__getitem__, words), dtype=dtype, count=len(words))
        _write_ids(writer, ids, report, bos, starts)
    report.oov = lookup.misses


def _build_words(spec: CorpusSpec, reader: _Reader, *, min_freq: int, max_vocab: int | None
                 ) -> tuple[Vocabulary, list[np.ndarray], np.ndarray, int]:
    """One pass over train: provisional ids, counts, then the frequency-ordered vocabulary and the
    table mapping provisional ids to final ids (dropped words to <unk>)."""
    shell = Vocabulary("word", list(spec.specials.values()), specials=spec.specials, lines=spec.lines,
                       lower=spec.lower)
    table: _Growing = _Growing()
    chunks: list[np.ndarray] = []
    for text, _ in reader.texts():
        words = shell.words(shell.prepare_text(text), final=False)
        chunks.append(np.fromiter(map(table.__getitem__, words), dtype=np.uint32, count=len(words)))
    counts = np.zeros(len(table), dtype=np.int64)
    for chunk in chunks:
        counts += np.bincount(chunk, minlength=len(table))
    symbols = list(table)  # provisional id order = first occurrence, the tie order of most_common
    pairs = list(zip(symbols, counts.tolist()))
    specials = dict(spec.specials)
    vocab = Vocabulary.from_counts("word", pairs, specials=specials, lines=spec.lines, lower=spec.lower,
                                   min_freq=min_freq, max_size=max_vocab, normalization=spec.normalization)
    if len(vocab) - len(specials) < len(set(symbols) - set(specials.values())) and vocab.unk_id is None:
        specials["unk"] = "<unk>"  # some words were dropped: they need somewhere to go
        vocab = Vocabulary.from_counts("word", pairs, specials=specials, lines=spec.lines, lower=spec.lower,
                                       min_freq=min_freq, max_size=max_vocab, normalization=spec.normalization)
    unk = vocab.unk_id
    index = {s: i for i, s in enumerate(vocab.symbols)}
    lut = np.array([index.get(s, -1 if unk is None else unk) for s in symbols], dtype=np.int64)
    dropped = np.array([s not in index for s in symbols], dtype=bool)
    oov = int(counts[dropped].sum()) if len(symbols) else 0
    return vocab, chunks, lut, oov


def _build_chars(spec: CorpusSpec, reader: _Reader, *, min_freq: int, max_vocab: int | None) -> Vocabulary:
    counts = np.zeros(0, dtype=np.int64)
    for text, _ in reader.texts():
        if spec.lower:
            text = text.lower()
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if len(cps):
            here = np.bincount(cps)
            if len(here) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(here) - len(counts), dtype=np.int64)])
            counts[: len(here)] += here
    present = np.flatnonzero(counts)
    pairs = [(chr(c), int(counts[c])) for c in present]  # ties broken by codepoint
    specials = {"unk": "<unk>"} if spec.char_unk else {}
    return Vocabulary.from_counts("char", pairs, specials=specials, lower=spec.lower, min_freq=min_freq,
                                  max_size=max_vocab)


# --------------------------------------------------------------------------------------------------
# What numpy raises for a damaged .npy header: its parser goes through Python's tokenizer and literal_eval.
_DAMAGED_NPY = (ValueError, SyntaxError, tokenize.TokenError)


@dataclass
class PreparedCorpus:
    """A prepared directory: vocabulary, memory-mapped splits, metadata."""

    path: Path
    vocab: Vocabulary
    meta: dict[str, Any]
    splits: dict[str, np.ndarray] = field(default_factory=dict)

    def split(self, name: str) -> np.ndarray:
        """The token ids of split ``name`` (memory-mapped, read-only)."""
        if name not in self.splits:
            raise DataError(f"split {name!r} not in {self.path}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def sentences(self, name: str) -> np.ndarray | None:
        """Start offset of every sentence of ``name`` (sentence-level corpora), else None."""
        file = self.path / f"{name}.sentences.npy"
        if not self.meta["splits"].get(name, {}).get("sentences"):
            return None
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, EOFError, *_DAMAGED_NPY) as exc:
            raise DataError(f"{file} is missing or damaged ({exc}); run txl prepare again") from None

    @property
    def corpus(self) -> str:
        return self.meta["corpus"]

    @property
    def level(self) -> str:
        return self.meta["level"]

    @property
    def tokens(self) -> dict[str, int]:
        return {s: int(self.meta["splits"][s]["tokens"]) for s in self.meta["splits"]}

    def summary(self) -> str:
        rows = [f"{self.corpus} ({self.level} level) in {self.path}"]
        for name, info in self.meta["splits"].items():
            rate = info["oov"] / info["tokens"] if info["tokens"] else 0.0
            rows.append(f"  {name:<5} {info['tokens']:>13,} tokens   out-of-vocabulary {rate:.2%}")
        rows.append(f"  vocabulary {len(self.vocab):,} symbols ({self.vocab.kind})")
        rows.extend(f"  note: {n}" for n in self.meta.get("notes", []))
        return "\n".join(rows)


def _read_meta(out: Path) -> dict[str, Any]:
    file = out / "meta.json"
    if not os.path.lexists(file):
        if out.is_file():
            raise DataError(f"{out} is a file, not a prepared corpus directory; run `txl prepare --corpus text "
                            f"--path {out} --out DIR` and pass DIR")
        raise DataError(f"no prepared corpus in {out} (looked for meta.json, vocab.json, train.npy, valid.npy, "
                        "test.npy); run `txl prepare --corpus NAME --path SRC --out DIR` first")
    raw = read_regular_file(file, what="prepared-corpus metadata", limit=64 << 20)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise DataError(f"{file} is damaged (not valid JSON); run txl prepare again") from None
    if not isinstance(meta, dict):
        raise DataError(f"{file} is damaged (not a JSON object); run txl prepare again")
    if meta.get("format") != "transformer-xl-prepared" or meta.get("version") != CACHE_VERSION:
        raise DataError(f"{file} is not a prepared corpus of this version (format {meta.get('format')!r:.40}, "
                        f"version {meta.get('version')!r:.20}); run txl prepare again")
    _check_meta(meta, file)
    return meta


def _check_meta(meta: dict[str, Any], file: Path) -> None:
    """One-line errors for a meta.json whose fields are missing or of the wrong type."""
    def damaged(what: str) -> DataError:
        return DataError(f"{file} is damaged ({what}); run txl prepare again")

    for key in ("corpus", "level"):
        if not isinstance(meta.get(key), str):
            raise damaged(f"{key!r} is not a string")
    vocab = meta.get("vocab")
    if not isinstance(vocab, dict) or not isinstance(vocab.get("sha256"), str):
        raise damaged("no vocabulary hash")
    splits = meta.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise damaged("no table of splits")
    for name, info in splits.items():
        if not isinstance(info, dict):
            raise damaged(f"split {name!r} is not an object")
        tokens, oov = info.get("tokens"), info.get("oov", 0)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise damaged(f"split {name!r} has no token count")
        if isinstance(oov, bool) or not isinstance(oov, int) or oov < 0:
            raise damaged(f"split {name!r} has a bad out-of-vocabulary count")
        file_name = info.get("file")
        if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in ("", ".", ".."):
            raise damaged(f"split {name!r} names no file of the directory")
        if info.get("dtype") not in ("uint8", "uint16", "uint32", "uint64"):
            raise damaged(f"split {name!r} has dtype {info.get('dtype')!r:.20}")
        if info.get("sentences") is not None and (isinstance(info["sentences"], bool)
                                                  or not isinstance(info["sentences"], int)):
            raise damaged(f"split {name!r} has a bad sentence count")
    if not isinstance(meta.get("notes", []), list):
        raise damaged("'notes' is not a list")


def load_prepared(out: str | Path) -> PreparedCorpus:
    """Open a prepared directory, checking the vocabulary hash and every split's length and dtype."""
    out = Path(out)
    meta = _read_meta(out)
    vocab = Vocabulary.load(out / "vocab.json")
    if vocab.fingerprint() != meta["vocab"]["sha256"]:
        raise DataError(f"{out}/vocab.json is not the vocabulary the cached splits were encoded with "
                        f"(hash {vocab.fingerprint()[:12]} vs {meta['vocab']['sha256'][:12]}); "
                        "run txl prepare again to rebuild the cache")
    splits: dict[str, np.ndarray] = {}
    for name, info in meta["splits"].items():
        file = out / info["file"]
        if info["tokens"] and os.path.exists(file) and not file.is_file():
            raise DataError(f"{file} is not a regular file (a folder, device or FIFO); run txl prepare again")
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False) if info["tokens"] else \
                np.zeros(0, dtype=info["dtype"])
        except FileNotFoundError:
            raise DataError(f"{file} is missing from the prepared corpus; run txl prepare again") from None
        except (OSError, EOFError, *_DAMAGED_NPY) as exc:
            raise DataError(f"{file} is truncated or damaged ({exc}); expected {info['tokens']:,} tokens; "
                            "run txl prepare again") from None
        if arr.ndim != 1 or len(arr) != info["tokens"] or str(arr.dtype) != info["dtype"]:
            raise DataError(f"{file} holds {arr.shape} {arr.dtype}, meta.json says {info['tokens']:,} "
                            f"{info['dtype']}; run txl prepare again")
        splits[name] = arr
    return PreparedCorpus(out, vocab, meta, splits)


def _source_keys(spec: CorpusSpec) -> dict[str, list[dict[str, object]]]:
    return {s: [src.stat_key() for src in spec.splits[s]] for s in SPLITS}


def _reusable(out: Path, request: dict[str, Any], keys: dict[str, list[dict[str, object]]],
              spec: CorpusSpec) -> PreparedCorpus | None:
    try:
        meta = _read_meta(out)
        if meta.get("request") != request:
            return None
        if meta.get("sources") != keys:
            # Touched but maybe unchanged: compare contents before re-encoding everything.
            for split in SPLITS:
                sha = hashlib.sha256()
                for src in spec.splits[split]:
                    for block in src.iter_blocks():
                        sha.update(block)
                if sha.hexdigest() != meta["splits"][split]["sha256"]:
                    return None
        return load_prepared(out)
    except (DataError, KeyError, OSError):
        return None


def prepare_corpus(corpus: str, path: str | Path | None, out: str | Path, *, level: str | None = None,
                   min_freq: int = 1, max_vocab: int | None = None, lower: bool = False, errors: str = "strict",
                   progress: bool = True, valid_fraction: float = 0.05, test_fraction: float = 0.05,
                   vocab_file: str | Path | None = None, force: bool = False) -> PreparedCorpus:
    """Build (or reuse) the vocabulary and encoded splits of ``corpus`` at ``path`` in directory ``out``.

    ``min_freq`` / ``max_vocab`` (total size, special tokens included) apply to vocabularies built from
    the training split; ``vocab_file`` gives a vocabulary instead (JSON or one symbol a line).
    ``errors="replace"`` substitutes U+FFFD for invalid UTF-8 instead of stopping with its byte offset.
    """
    if errors not in ("strict", "replace"):
        raise DataError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if min_freq < 1 or (max_vocab is not None and max_vocab < 1):
        raise DataError(f"need min_freq >= 1 and max_vocab >= 1, got {min_freq}, {max_vocab}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a directory for the prepared corpus")
    spec = resolve_corpus(corpus, path, level=level, lower=lower, valid_fraction=valid_fraction,
                          test_fraction=test_fraction, vocab_file=vocab_file, exclude=out)
    # The cache key holds the content of every input: the options, the vocabulary file's sha256 (an edited
    # --vocab file re-encodes), and below the sources (size and times, then their sha256 when those differ).
    request = {"corpus": corpus, "level": spec.level, "min_freq": min_freq, "max_vocab": max_vocab,
               "lower": spec.lower, "errors": errors, "valid_fraction": valid_fraction,
               "test_fraction": test_fraction,
               "vocab_sha256": hashlib.sha256(read_regular_file(spec.vocab_file, what="vocabulary file")).hexdigest()
               if spec.vocab_file else None}
    if spec.normalization != "none":  # a cache from before vocabularies recorded it is rebuilt once
        request["normalization"] = spec.normalization
    keys = _source_keys(spec)
    if not force and (out / "meta.json").is_file():
        cached = _reusable(out, request, keys, spec)
        if cached is not None:
            return cached
    out.mkdir(parents=True, exist_ok=True)

    total = sum(src.size() for split in SPLITS for src in spec.splits[split])
    bar = _Progress(total, progress, f"{corpus}: encoding")
    reports = {s: _SplitReport() for s in SPLITS}
    starts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    writers: list[_NpyWriter] = []

    def reader(split: str) -> _Reader:
        return _Reader(spec.splits[split], level=spec.level, lines=spec.lines, errors=errors, progress=bar,
                       split=split)

    def writer(split: str, dtype: np.dtype) -> _NpyWriter:
        w = _NpyWriter(out / f"{split}.npy", dtype)
        writers.append(w)
        return w

    try:
        readers = {s: reader(s) for s in SPLITS}
        if spec.vocab_file is not None and spec.level != "byte":
            vocab = Vocabulary.load(spec.vocab_file, kind=spec.level)
            if vocab.kind != spec.level:
                raise DataError(f"vocabulary {spec.vocab_file} is {vocab.kind} level, the corpus is read at "
                                f"{spec.level} level; pass a matching vocabulary or --level {vocab.kind}")
            if spec.lower and not vocab.lower:  # PTB's rule holds whatever vocabulary is given
                vocab = Vocabulary(vocab.kind, vocab.symbols, specials=vocab.specials, lines=vocab.lines, lower=True)
        elif spec.level == "byte":
            vocab = Vocabulary.byte_level()
        elif spec.level == "char":
            counting = reader("train")
            counting.progress = _Progress(0, False, "")
            vocab = _build_chars(spec, counting, min_freq=min_freq, max_vocab=max_vocab)
        else:
            vocab, chunks, lut, oov = _build_words(spec, readers["train"], min_freq=min_freq, max_vocab=max_vocab)
            w = writer("train", vocab.dtype)
            for i, chunk in enumerate(chunks):
                _write_ids(w, lut[chunk].astype(vocab.dtype), reports["train"], vocab.bos_id,
                           starts["train"] if spec.sentences else None)
                chunks[i] = chunk[:0]  # free as we go: keeps the peak near one copy of the ids
            reports["train"].oov = oov
            w.finish()
        dtype = vocab.dtype
        for split in SPLITS:
            if split == "train" and spec.level == "word" and spec.vocab_file is None:
                continue
            w = writer(split, dtype)
            if spec.level == "byte":
                _encode_bytes(readers[split], w, reports[split])
            else:
                _encode_with(vocab, readers[split], w, reports[split], starts[split] if spec.sentences else None)
            w.finish()
        for split in SPLITS:
            if reports[split].tokens == 0:
                where = ", ".join(src.label for src in spec.splits[split]) or "no files"
                raise DataError(f"{corpus}: the {split} split is empty ({where}); give more text or separate "
                                "train/valid/test files")
    except BaseException:
        for w in writers:  # an earlier cache in `out` stays as it was
            w.abort()
        raise
    finally:
        bar.close()

    # Everything encoded: swap the new files in. meta.json goes first and comes back last, so a crash
    # in between leaves a directory that load_prepared rejects rather than a mixed one.
    (out / "meta.json").unlink(missing_ok=True)
    for w in writers:
        w.commit()
    for split in SPLITS:
        reports[split].sha256 = readers[split].sha.hexdigest()
        if spec.sentences:
            sent = np.concatenate(starts[split]) if starts[split] else np.zeros(0, dtype=np.int64)
            np.save(out / f"{split}.sentences.npy", sent.astype(np.int64), allow_pickle=False)
            reports[split].sentences = len(sent)

    vocab.save(out / "vocab.json")
    meta = {
        "format": "transformer-xl-prepared", "version": CACHE_VERSION, "corpus": corpus, "level": spec.level,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "request": request, "sources": keys, "notes": spec.notes,
        "vocab": {"file": "vocab.json", "size": len(vocab), "sha256": vocab.fingerprint(), "kind": vocab.kind},
        "splits": {s: {"file": f"{s}.npy", "tokens": r.tokens, "dtype": str(np.dtype(vocab.dtype)), "oov": r.oov,
                       "sha256": r.sha256, "sources": [src.label for src in spec.splits[s]],
                       **({"sentences": r.sentences} if r.sentences is not None else {})}
                   for s, r in reports.items()},
    }
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / "meta.json")
    return load_prepared(out)

