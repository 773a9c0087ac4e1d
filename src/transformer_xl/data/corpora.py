"""Corpus readers: where each corpus's train / valid / test text lies, and how the paper's setup reads it.

A reader only resolves files and byte ranges (:class:`Source`) and the tokenisation rules
(:class:`CorpusSpec`); :mod:`.cache` streams the bytes, builds the vocabulary and encodes. Nothing here
downloads: each standard corpus names its official source in the error raised when its files are missing.
"""

from __future__ import annotations

import glob as globlib
import os
import sysconfig
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .vocab import DataError

__all__ = ["CORPORA", "CorpusInfo", "CorpusSpec", "Source", "SPLITS", "resolve_corpus", "PYSTDLIB_BYTES"]

SPLITS = ("train", "valid", "test")
PYSTDLIB_BYTES = 4_000_000  # size of the demo corpus: a few MB, prepared in about a second
ENWIK8_BYTES = 100_000_000
_STANDARD_HELD_OUT = 5_000_000  # enwik8 / text8: last 2 x 5M for valid and test (paper, Sec. 4)


@dataclass(frozen=True)
class CorpusInfo:
    levels: tuple[str, ...]  # allowed levels, the first is the default
    expects: str  # what --path must point at
    source: str  # official download, printed when files are missing


CORPORA: dict[str, CorpusInfo] = {
    "wikitext-103": CorpusInfo(("word",), "a folder (or the zip) with wiki.train.tokens, wiki.valid.tokens, "
                               "wiki.test.tokens", "https://s3.amazonaws.com/research.metamind.io/wikitext/"
                               "wikitext-103-v1.zip (also the Hugging Face dataset Salesforce/wikitext)"),
    "wikitext-2": CorpusInfo(("word",), "a folder (or the zip) with wiki.train.tokens, wiki.valid.tokens, "
                             "wiki.test.tokens", "https://s3.amazonaws.com/research.metamind.io/wikitext/"
                             "wikitext-2-v1.zip (also the Hugging Face dataset Salesforce/wikitext)"),
    "ptb": CorpusInfo(("word",), "a folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt",
                      "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz (folder data/)"),
    "enwik8": CorpusInfo(("byte",), "the enwik8 file (100,000,000 bytes), enwik8.zip, or a folder holding one",
                         "http://mattmahoney.net/dc/enwik8.zip"),
    "text8": CorpusInfo(("char",), "the text8 file (100,000,000 characters), text8.zip, or a folder holding one",
                        "http://mattmahoney.net/dc/text8.zip"),
    "lm1b": CorpusInfo(("word",), "the extracted 1-billion-word-language-modeling-benchmark-r13output folder "
                       "(or its parent) with 1b_word_vocab.txt beside it or inside it",
                       "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output"
                       ".tar.gz and https://github.com/rafaljozefowicz/lm/raw/master/1b_word_vocab.txt"),
    "text": CorpusInfo(("byte", "char", "word"), "your text file, a folder of text files, or a glob pattern "
                       "(a folder with train.txt, valid.txt and test.txt is read as those three splits)", ""),
    "pystdlib": CorpusInfo(("byte", "char", "word"), "nothing (it reads the running Python's standard library)", ""),
}


@dataclass(frozen=True)
class Source:
    """Bytes [start, end) of a file, or of a member of a zip archive."""

    path: Path
    member: str | None = None
    start: int = 0
    end: int | None = None  # None: to the end

    @property
    def label(self) -> str:
        where = f"{self.path}:{self.member}" if self.member else str(self.path)
        if self.start or self.end is not None:
            where += f"[{self.start}:{'' if self.end is None else self.end}]"
        return where

    def full_size(self) -> int:
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size

    def size(self) -> int:
        end = self.full_size() if self.end is None else self.end
        return max(0, end - self.start)

    def stat_key(self) -> dict[str, object]:
        """Identifies the bytes cheaply: size, modification and status-change times (any write moves the
        change time, which no tool sets back). When the key differs the cache compares the sha256 of the
        content, so a copied or touched but unchanged file is still reused."""
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "member": self.member, "start": self.start, "end": self.end,
                "file_size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "inode": st.st_ino}

    def iter_blocks(self, block: int = 1 << 23) -> Iterator[bytes]:
        remaining = None if self.end is None else self.end - self.start
        if self.member is None:
            handle = open(self.path, "rb")
        else:
            archive = zipfile.ZipFile(self.path)
            handle = archive.open(self.member)
        with handle:
            if self.start:
                handle.seek(self.start)
            while remaining is None or remaining > 0:
                data = handle.read(block if remaining is None else min(block, remaining))
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data

    def read(self) -> bytes:
        return b"".join(self.iter_blocks())


@dataclass
class CorpusSpec:
    """Everything :mod:`.cache` needs to build the vocabulary and encode one corpus."""

    name: str
    level: str
    splits: dict[str, list[Source]]
    lines: str = "none"  # word level: "eos" per line, "sentence" (<S> ... <S>), or "none"
    lower: bool = False
    specials: dict[str, str] = field(default_factory=dict)  # special tokens of a vocabulary built here
    vocab_file: Path | None = None  # a given vocabulary (lm1b's 1b_word_vocab.txt, or --vocab)
    char_unk: bool = False  # char level: reserve <unk> for characters unseen in train
    sentences: bool = False  # store sentence starts (lm1b: shuffled per epoch)
    normalization: str = "none"  # word level: how raw text is read later (recorded in a vocabulary built here)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
def _missing(name: str, path: Path, wanted: list[str], looked: list[Path]) -> DataError:
    info = CORPORA[name]
    places = ", ".join(str(p) for p in looked)
    msg = f"{name}: expected {', '.join(wanted)} in {places}, not found; --path must be {info.expects}"
    if info.source:
        msg += f". Official source: {info.source}"
    return DataError(msg)


def _need_path(name: str, path: str | Path | None) -> Path:
    info = CORPORA[name]
    if path is None:
        raise DataError(f"{name} needs --path: {info.expects}"
                        + (f". Official source: {info.source}" if info.source else ""))
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{name}: path {p} does not exist; --path must be {info.expects}"
                        + (f". Official source: {info.source}" if info.source else ""))
    return p


def _zip_members(archive: Path) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as z:
            return z.namelist()
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a valid zip archive (truncated download?)") from None


def _named_files(name: str, path: Path, names: dict[str, str], subdirs: list[str]) -> dict[str, list[Source]]:
    """Split files with fixed names, in ``path``, one of its ``subdirs``, or inside a zip at ``path``."""
    if path.is_file() and zipfile.is_zipfile(path):
        members = _zip_members(path)
        found = {}
        for split, fname in names.items():
            hits = [m for m in members if m.rsplit("/", 1)[-1] == fname]
            if hits:
                found[split] = [Source(path, member=sorted(hits, key=len)[0])]
        if len(found) == len(names):
            return found
        raise _missing(name, path, [f for s, f in names.items() if s not in found], [path])
    if not path.is_dir():
        raise _missing(name, path, list(names.values()), [path])
    looked = [path] + [path / s for s in subdirs]
    for folder in looked:
        if all((folder / f).is_file() for f in names.values()):
            return {split: [Source(folder / f)] for split, f in names.items()}
    missing = [f for f in names.values() if not (path / f).is_file()]
    if name.startswith("wikitext") and any(path.glob("wiki.*.raw")):
        missing.append("(found wiki.*.raw: the paper uses the tokenised 'tokens' version, not 'raw')")
    raise _missing(name, path, missing, looked)


def _single_file(name: str, path: Path, fname: str) -> Source:
    """enwik8 / text8: the raw file (any name), the zip with it, or a folder holding either."""
    if path.is_dir():
        for cand in (path / fname, path / f"{fname}.zip"):
            if cand.is_file():
                path = cand
                break
        else:
            raise _missing(name, path, [fname, f"{fname}.zip"], [path])
    if zipfile.is_zipfile(path):
        members = [m for m in _zip_members(path) if not m.endswith("/")]
        if fname in members:
            return Source(path, member=fname)
        if len(members) == 1:
            return Source(path, member=members[0])
        raise _missing(name, path, [f"member {fname}"], [path])
    return Source(path)


def _split_fixed(name: str, source: Source, total: int, notes: list[str]) -> dict[str, list[Source]]:
    """First 90M / next 5M / last 5M of the full 100M file; a file of another size splits 90/5/5 percent."""
    if total == ENWIK8_BYTES:
        held = _STANDARD_HELD_OUT
    else:
        held = total * 5 // 100
        notes.append(f"{name}: file has {total:,} bytes, not the standard {ENWIK8_BYTES:,}; "
                     f"split 90/5/5 percent instead of 90M/5M/5M (numbers not comparable to the paper)")
    a, b = total - 2 * held, total - held
    return {"train": [Source(source.path, source.member, 0, a)],
            "valid": [Source(source.path, source.member, a, b)],
            "test": [Source(source.path, source.member, b, total)]}


def _boundary(sources: list[Source], sizes: list[int], offset: int, *, level: str, split: str) -> int:
    """``offset`` moved forward to just after the next line end so that a fraction split never cuts a line
    in two; with no line end before the end of the last file, char level cuts at the next UTF-8 character
    start and word level raises a DataError that says so. Byte level: unchanged."""
    if level == "byte":
        return offset
    base, total = 0, sum(sizes)
    for src, size in zip(sources, sizes):
        if offset < base + size:
            local = offset - base
            nl, pos = -1, src.start + local
            for block in Source(src.path, src.member, pos, src.start + size).iter_blocks(1 << 20):
                found = block.find(b"\n")
                if found >= 0:
                    nl = pos - src.start - local + found
                    break
                pos += len(block)
            if nl >= 0:
                return offset + nl + 1
            if base + size < total:
                return base + size  # no line end left in this file: cut at its end, the next file starts fresh
            if level == "char":
                data = Source(src.path, src.member, src.start + local, src.start + min(size, local + 8)).read()
                step = next((i for i, b in enumerate(data) if b & 0xC0 != 0x80), len(data))
                return offset + step
            raise DataError(f"text: no line end in the last {total - offset:,} bytes of {src.label} to cut the "
                            f"{split} split at (one long line?); add line breaks, give a folder with train.txt, "
                            "valid.txt and test.txt, or prepare it with --level char or --level byte")
        base += size
    return offset


def _split_fraction(sources: list[Source], valid: float, test: float, *, level: str) -> dict[str, list[Source]]:
    sizes = [s.size() for s in sources]
    total = sum(sizes)
    cut_a = _boundary(sources, sizes, int(total * (1.0 - valid - test)), level=level, split="valid")
    cut_b = max(cut_a, _boundary(sources, sizes, int(total * (1.0 - test)), level=level, split="test"))
    out: dict[str, list[Source]] = {s: [] for s in SPLITS}
    base = 0
    for src, size in zip(sources, sizes):
        for split, lo, hi in (("train", 0, cut_a), ("valid", cut_a, cut_b), ("test", cut_b, total)):
            a, b = max(lo, base), min(hi, base + size)
            if a < b:
                whole = a == base and b == base + size
                out[split].append(src if whole else Source(src.path, src.member, src.start + a - base,
                                                             src.start + b - base))
        base += size
    return out


def _under(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    resolved = path.resolve()
    return resolved == folder or folder in resolved.parents


def _text_files(path: str | Path, exclude: Path | None = None) -> list[Source]:
    """A file, every non-hidden file under a folder (sorted), or the files a glob pattern matches (sorted);
    nothing under ``exclude`` (the prepared corpus's own --out, which may lie inside the corpus folder)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [Source(p)]
    if p.is_dir():
        files = []
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _under(Path(root) / d, exclude))
            files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
        files = [f for f in files if not _under(f, exclude)]
        if not files:
            raise DataError(f"text: folder {p} holds no files; put your .txt files there or pass a file")
        return [Source(f) for f in sorted(files)]
    matches = sorted(m for m in globlib.glob(str(p), recursive=True)
                     if Path(m).is_file() and not _under(Path(m), exclude))
    if not matches:
        raise DataError(f"text: {p} is neither a file, a folder, nor a glob pattern that matches files")
    return [Source(Path(m)) for m in matches]


def pystdlib_files(limit: int = PYSTDLIB_BYTES) -> list[tuple[str, Path]]:
    """A deterministic few-MB subset of the running Python's standard library sources.

    Files are ranked by a CRC of their relative path (a fixed pseudo-random order, so the subset mixes
    all of the library rather than the first modules alphabetically); tests and non-UTF-8 files are
    skipped. Returns (relative path, path) pairs sorted by relative path.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    cands: list[tuple[int, str, Path]] = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for n in names:
            if n.endswith(".py"):
                full = Path(dirpath) / n
                rel = full.relative_to(root).as_posix()
                cands.append((zlib.crc32(rel.encode()), rel, full))
    if not cands:
        raise DataError(f"pystdlib: no .py files under {root}; this Python ships no standard library sources, "
                        "use --corpus text with your own files")
    chosen, total = [], 0
    for _, rel, full in sorted(cands):
        if total >= limit:
            break
        data = full.read_bytes()
        if not data or b"\x00" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        chosen.append((rel, full))
        total += len(data)
    return sorted(chosen)


def _pystdlib_splits() -> dict[str, list[Source]]:
    out: dict[str, list[Source]] = {s: [] for s in SPLITS}
    for rel, full in pystdlib_files():
        bucket = zlib.crc32(b"split:" + rel.encode()) % 20  # 5% of files valid, 5% test, by name
        out["valid" if bucket == 0 else "test" if bucket == 1 else "train"].append(Source(full))
    return out


# --------------------------------------------------------------------------------------------------
def resolve_corpus(corpus: str, path: str | Path | None, *, level: str | None = None, lower: bool = False,
                   valid_fraction: float = 0.05, test_fraction: float = 0.05,
                   vocab_file: str | Path | None = None, exclude: str | Path | None = None) -> CorpusSpec:
    """The files and rules of ``corpus`` (one of :data:`CORPORA`) found at ``path``. ``exclude``: the output
    folder of the prepared corpus; nothing under it is ever read as text (it may lie inside ``path``)."""
    excluded = Path(exclude).expanduser().resolve() if exclude is not None else None
    spec = _resolve_corpus(corpus, path, level=level, lower=lower, valid_fraction=valid_fraction,
                           test_fraction=test_fraction, vocab_file=vocab_file, exclude=excluded)
    for split, sources in spec.splits.items():
        for src in sources:
            if _under(src.path, excluded):
                raise DataError(f"{corpus}: the {split} file {src.path} lies inside --out {exclude}, which the "
                                "prepared corpus is written to; choose an --out outside the corpus files")
    return spec


def _resolve_corpus(corpus: str, path: str | Path | None, *, level: str | None, lower: bool, valid_fraction: float,
                    test_fraction: float, vocab_file: str | Path | None, exclude: Path | None) -> CorpusSpec:
    if corpus not in CORPORA:
        raise DataError(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    info = CORPORA[corpus]
    level = level or info.levels[0]
    if level not in info.levels:
        raise DataError(f"{corpus} is read at {' or '.join(info.levels)} level, not {level!r}")
    notes: list[str] = []
    given_vocab = Path(vocab_file) if vocab_file else None

    if corpus in ("wikitext-103", "wikitext-2"):
        p = _need_path(corpus, path)
        names = {s: f"wiki.{s}.tokens" for s in SPLITS}
        splits = _named_files(corpus, p, names, [corpus, f"{corpus}-v1"])
        # Paper / original release: case kept, <eos> at every line end, vocabulary from train.
        # The corpus is already tokenized; raw text given to the model later is tokenized the same way.
        return CorpusSpec(corpus, "word", splits, lines="eos", lower=lower, specials={"eos": "<eos>"},
                          vocab_file=given_vocab, notes=notes, normalization="wikitext")
    if corpus == "ptb":
        p = _need_path(corpus, path)
        splits = _named_files(corpus, p, {s: f"ptb.{s}.txt" for s in SPLITS}, ["data", "simple-examples/data"])
        return CorpusSpec(corpus, "word", splits, lines="eos", lower=True, specials={"eos": "<eos>"},
                          vocab_file=given_vocab, notes=notes)
    if corpus in ("enwik8", "text8"):
        p = _need_path(corpus, path)
        src = _single_file(corpus, p, corpus)
        splits = _split_fixed(corpus, src, src.size(), notes)
        return CorpusSpec(corpus, level, splits, vocab_file=given_vocab, notes=notes)
    if corpus == "lm1b":
        p = _need_path(corpus, path)
        top = "1-billion-word-language-modeling-benchmark-r13output"
        root = p / top if (p / top).is_dir() else p
        train = sorted((root / "training-monolingual.tokenized.shuffled").glob("news.en-*-of-00100"))
        heldout = root / "heldout-monolingual.tokenized.shuffled" / "news.en.heldout-00000-of-00050"
        vocab = given_vocab or next((c for c in (root / "1b_word_vocab.txt", root.parent / "1b_word_vocab.txt")
                                     if c.is_file()), None)
        wanted = []
        if not train:
            wanted.append("training-monolingual.tokenized.shuffled/news.en-*-of-00100")
        if not heldout.is_file():
            wanted.append("heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050")
        if vocab is None:
            wanted.append("1b_word_vocab.txt")
        if wanted:
            raise _missing(corpus, p, wanted, [root] + ([root.parent] if vocab is None else []))
        # The original release evaluates on heldout shard 00000 and uses it for validation too.
        notes.append("lm1b: valid and test are both heldout shard 00000, as in the original release")
        return CorpusSpec(corpus, "word", {"train": [Source(f) for f in train], "valid": [Source(heldout)],
                                           "test": [Source(heldout)]},
                          lines="sentence", lower=lower, specials={"bos": "<S>"}, vocab_file=vocab,
                          sentences=True, notes=notes)

    for name, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 0.5:
            raise DataError(f"{name} must be in (0, 0.5), got {frac}")
    if corpus == "pystdlib":
        splits = _pystdlib_splits()
    else:
        if path is None:
            raise DataError(f"text needs --path: {info.expects}")
        p = Path(path).expanduser()
        named = {s: p / f"{s}.txt" for s in SPLITS}
        if p.is_dir() and all(f.is_file() for f in named.values()):
            splits = {s: [Source(f)] for s, f in named.items()}
            notes.append(f"text: splits from {p}/train.txt, valid.txt, test.txt")
        else:
            splits = _split_fraction(_text_files(p, exclude), valid_fraction, test_fraction, level=level)
    specials = {"eos": "<eos>", "unk": "<unk>"} if level == "word" else {}
    return CorpusSpec(corpus, level, splits, lines="eos" if level == "word" else "none", lower=lower,
                      specials=specials, vocab_file=given_vocab, char_unk=level == "char", notes=notes)
