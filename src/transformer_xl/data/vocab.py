"""Word, character and byte vocabularies.

A vocabulary is a list of symbols (id = position) plus named special tokens. It is saved as JSON, or
read from plain text with one symbol a line; never pickled (a pickle can run code when loaded, which
is why Hugging Face retired its TransfoXL vocabulary files).

How text becomes ids depends on ``kind`` and ``lines``:

* ``word``: whitespace split. ``lines="eos"`` appends ``<eos>`` at every line end (WikiText, PTB, the
  original release); ``lines="sentence"`` wraps every line as ``<S> ... <S>`` (One Billion Word, as the
  original's ``add_double_eos``); ``lines="none"`` ignores line breaks.
* ``char``: one id per Unicode character; a line break is an ordinary symbol.
* ``byte``: the UTF-8 bytes; 256 symbols, id = byte value, no special tokens.

A word vocabulary also records how raw text is normalised before the split (``normalization``):

* ``none``: the text is already split into words (PTB, One Billion Word, your own word lists).
* ``wikitext``: the WikiText corpora's rules, as Hugging Face's ``TransfoXLTokenizer`` applies them
  (sacremoses' punctuation normaliser and Moses tokenizer with aggressive dash splits, then numbers split
  at inner ``,`` and ``.``): ``"Hello, world!"`` reads as ``Hello , world !``, ``"1,000"`` as
  ``1 @,@ 000``, ``"foo-bar"`` as ``foo @-@ bar``; :meth:`Vocabulary.decode` undoes it. Only
  :meth:`Vocabulary.encode` / :meth:`Vocabulary.tokenize` (raw text) apply it: prepared corpora are
  already tokenized and are split as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import TransformerXLError

__all__ = ["DataError", "Vocabulary", "VOCAB_KINDS", "LINE_MODES", "NORMALIZATIONS", "check_vocab_size",
           "smallest_dtype"]

VOCAB_KINDS = ("word", "char", "byte")
LINE_MODES = ("eos", "sentence", "none")
NORMALIZATIONS = ("none", "wikitext")
_FORMAT = "transformer-xl-vocabulary"
# Roles a special token can play, with the symbol each has by default.
DEFAULT_SPECIALS = {"eos": "<eos>", "unk": "<unk>", "bos": "<S>"}


class DataError(TransformerXLError, ValueError):
    """A data problem the user can fix: missing or malformed file, unknown symbol, stale cache."""


def smallest_dtype(n_symbols: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids 0 .. n_symbols - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_symbols - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


MAX_TEXT_FILE_BYTES = 1 << 30  # vocabularies, configs, metadata: far above any real one (1b's vocab is 9 MB)


def read_regular_file(path: str | Path, *, what: str, limit: int = MAX_TEXT_FILE_BYTES) -> bytes:
    """The bytes of ``path``, read only from a regular file (following links) and at most ``limit`` of them.

    A FIFO, a device such as /dev/zero, a socket or a folder is refused at once instead of blocking or
    reading forever; every failure is a DataError that names the file."""
    import os
    import stat as stat_

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without waiting
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise DataError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat_.S_ISREG(mode):
        os.close(fd)
        if stat_.S_ISDIR(mode):
            raise DataError(f"{what} {path} is a folder, not a file")
        raise DataError(f"{what} {path} is not a regular file (a device, FIFO or socket); refusing to read it")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{what} {path} is larger than {limit:,} bytes; it cannot be a real {what}")
    return data


def check_vocab_size(vocab: "Vocabulary | None", n_token: int, *, source: str | Path) -> None:
    """Refuse a vocabulary whose size is not the model's ``n_token``: its ids would mean other symbols."""
    if vocab is not None and len(vocab) != n_token:
        raise DataError(f"{source}: the vocabulary has {len(vocab):,} symbols but the model has n_token "
                        f"{n_token:,}; the vocabulary belongs to another model (or was damaged)")


class _Lookup(dict):
    """symbol -> id; a miss returns the unknown id (counting it) or raises a DataError naming the symbol."""

    def __init__(self, table: Mapping[str, int], unk_id: int | None, what: str) -> None:
        super().__init__(table)
        self.unk_id, self.what, self.misses = unk_id, what, 0

    def __missing__(self, symbol: str) -> int:
        if self.unk_id is None:
            raise DataError(f"{symbol!r} {self.what} is not in the vocabulary, which has no <unk> token; "
                            "build the vocabulary from text that contains it, or use a vocabulary with <unk>")
        self.misses += 1
        return self.unk_id


class _WikiTextRules:
    """Raw text <-> WikiText tokens, line by line, with sacremoses (the rules of Hugging Face's
    ``TransfoXLTokenizer``, which made the WikiText-103 model's token ids)."""

    _NUMBER = re.compile(r"(?<=\d)[,.](?=\d)")
    _JOINED = re.compile(r" @([,.])@ ")

    def __init__(self, protected: Sequence[str]) -> None:
        try:
            import sacremoses
        except ImportError:
            raise DataError("this vocabulary reads text with the WikiText rules, which need sacremoses: "
                            "pip install sacremoses") from None
        self.normalizer = sacremoses.MosesPunctNormalizer("en")
        self.tokenizer = sacremoses.MosesTokenizer("en")
        self.detokenizer = sacremoses.MosesDetokenizer("en")
        self.protected = [re.escape(p) for p in protected]
        # special tokens typed in the text stay whole (split out first, as Hugging Face's added tokens)
        self.specials = re.compile("(" + "|".join(self.protected) + ")") if protected else None

    def split_line(self, line: str) -> list[str]:
        chunks = self.specials.split(line) if self.specials is not None else [line]
        out: list[str] = []
        for i, chunk in enumerate(chunks):
            if i % 2:
                out.append(chunk)
                continue
            chunk = chunk.strip()
            if not chunk:
                continue
            words = self.tokenizer.tokenize(self.normalizer.normalize(chunk), aggressive_dash_splits=True,
                                            return_str=False, escape=False, protected_patterns=self.protected)
            for word in words:
                out.extend(self._NUMBER.sub(r" @\g<0>@ ", word).split())
        return out

    def join_line(self, words: Sequence[str]) -> str:
        return self._JOINED.sub(r"\1", self.detokenizer.detokenize(list(words))).strip()


class Vocabulary:
    """Symbols and special tokens of one corpus; see the module docstring for how text is encoded."""

    def __init__(self, kind: str, symbols: Sequence[str] | None = None, *,
                 specials: Mapping[str, str] | None = None, lines: str = "none", lower: bool = False,
                 normalization: str = "none") -> None:
        if kind not in VOCAB_KINDS:
            raise DataError(f"vocabulary kind must be one of {VOCAB_KINDS}, got {kind!r}")
        if lines not in LINE_MODES:
            raise DataError(f"lines must be one of {LINE_MODES}, got {lines!r}")
        if normalization not in NORMALIZATIONS:
            raise DataError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if normalization != "none" and kind != "word":
            raise DataError(f"normalization {normalization!r} applies to word vocabularies, not {kind}")
        self.normalization = normalization
        self._rules: _WikiTextRules | None = None
        specials = dict(specials or {})
        if kind == "byte":
            if specials or (symbols is not None and len(symbols) != 256):
                raise DataError("a byte vocabulary has exactly the 256 byte values and no special tokens")
            symbols = [f"<0x{b:02X}>" for b in range(256)]
            lines = "none"
        elif symbols is None:
            raise DataError(f"a {kind} vocabulary needs its list of symbols")
        self.kind, self.lines, self.lower = kind, lines, bool(lower)
        self._symbols = list(symbols)
        self._index = {s: i for i, s in enumerate(self._symbols)}
        if len(self._index) != len(self._symbols):
            seen: set[str] = set()
            dup = next(s for s in self._symbols if s in seen or seen.add(s))  # type: ignore[func-returns-value]
            raise DataError(f"vocabulary lists the symbol {dup!r} twice")
        if kind == "char":
            bad = [s for s in self._symbols if len(s) != 1 and s not in specials.values()]
            if bad:
                raise DataError(f"a char vocabulary holds single characters (or special tokens), got {bad[0]!r}")
        for role, symbol in specials.items():
            if role not in DEFAULT_SPECIALS:
                raise DataError(f"unknown special-token role {role!r}; known: {sorted(DEFAULT_SPECIALS)}")
            if symbol not in self._index:
                raise DataError(f"special token {role}={symbol!r} is not among the vocabulary's symbols")
        self.specials = specials
        if lines == "eos" and "eos" not in specials:
            raise DataError("lines='eos' needs an eos special token")
        if lines == "sentence" and "bos" not in specials:
            raise DataError("lines='sentence' needs a bos special token (<S>)")

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def byte_level(cls) -> "Vocabulary":
        """The 256-symbol byte vocabulary (id = byte value)."""
        return cls("byte")

    @classmethod
    def from_counts(cls, kind: str, counts: Iterable[tuple[str, int]], *, specials: Mapping[str, str] | None = None,
                    lines: str = "none", lower: bool = False, min_freq: int = 1,
                    max_size: int | None = None, normalization: str = "none") -> "Vocabulary":
        """Special tokens first, then symbols by decreasing count (ties keep the given order, as the
        original's ``Counter.most_common``), dropping those below ``min_freq``; at most ``max_size`` in all."""
        specials = dict(specials or {})
        symbols = list(dict.fromkeys(specials.values()))
        taken = set(symbols)
        ranked = sorted(((s, c) for s, c in counts if s not in taken), key=lambda sc: -sc[1])
        for symbol, count in ranked:
            if count < min_freq or (max_size is not None and len(symbols) >= max_size):
                break
            symbols.append(symbol)
        return cls(kind, symbols, specials=specials, lines=lines, lower=lower, normalization=normalization)

    # -- basic protocol -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        extra = "" if self.normalization == "none" else f", normalization={self.normalization!r}"
        return (f"Vocabulary(kind={self.kind!r}, size={len(self)}, specials={self.specials}, "
                f"lines={self.lines!r}{extra})")

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def symbol(self, index: int) -> str:
        return self._symbols[index]

    def index(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise DataError(f"{symbol!r} is not in the vocabulary") from None

    def _special_id(self, role: str) -> int | None:
        symbol = self.specials.get(role)
        if symbol is None and role == "unk" and self.kind == "word" and DEFAULT_SPECIALS["unk"] in self._index:
            symbol = DEFAULT_SPECIALS["unk"]  # WikiText/PTB carry <unk> as an ordinary word of the text
        return None if symbol is None else self._index[symbol]

    @property
    def eos_id(self) -> int | None:
        return self._special_id("eos")

    @property
    def unk_id(self) -> int | None:
        return self._special_id("unk")

    @property
    def bos_id(self) -> int | None:
        return self._special_id("bos")

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype that holds every id of this vocabulary."""
        return smallest_dtype(len(self))

    def lookup(self, what: str = "") -> _Lookup:
        """A dict symbol -> id whose misses map to ``<unk>`` (counted in ``.misses``) or raise DataError."""
        return _Lookup(self._index, self.unk_id, what)

    # -- encoding -----------------------------------------------------------------------------------
    def prepare_text(self, text: str) -> str:
        """Lower-casing and line-end normalisation applied before splitting (universal newlines)."""
        if self.lower:
            text = text.lower()
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def words(self, text: str, *, final: bool = True) -> list[str]:
        """Word-level symbols of prepared ``text`` with this vocabulary's line markers. ``final``: the text
        ends its document, so an unterminated last line still ends (as when a file is read line by line)."""
        if self.lines == "none":
            return text.split()
        if final and text and not text.endswith("\n"):
            text += "\n"
        if self.lines == "eos":
            return text.replace("\n", f" {self.specials['eos']} ").split()
        bos = self.specials["bos"]
        lines = text.split("\n")  # not splitlines(): only \n ends a sentence, as in the original
        if lines and lines[-1] == "":
            lines.pop()
        out: list[str] = []
        for line in lines:
            out.append(bos)
            out.extend(line.split())
            out.append(bos)
        return out

    def _wikitext(self) -> _WikiTextRules:
        if self._rules is None:
            protected = list(dict.fromkeys(list(self.specials.values())
                                           + [s for s in ("<unk>", "<UNK>") if s in self._index]))
            self._rules = _WikiTextRules(protected)
        return self._rules

    def tokenize(self, text: str, *, final: bool = True) -> list[str]:
        """The symbols raw ``text`` reads as, before lookup: lower-casing and line ends (:meth:`prepare_text`),
        this vocabulary's normalisation (e.g. the WikiText rules), then its kind's split with line markers.
        ``final``: the text ends its document (an unterminated last line still ends)."""
        text = self.prepare_text(text) if self.kind != "byte" else text
        if self.kind == "byte":
            return [self._symbols[b] for b in text.encode("utf-8")]
        if self.kind == "char":
            return list(text)
        if self.normalization == "wikitext":
            rules = self._wikitext()
            text = "\n".join(" ".join(rules.split_line(line)) for line in text.split("\n"))
        return self.words(text, final=final)

    def encode(self, text: str) -> np.ndarray:
        """Ids of raw ``text`` in the smallest dtype (see the module docstring for each kind); symbols
        outside the vocabulary become ``<unk>`` (or raise DataError when there is none)."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
        if self.kind == "char":
            return self.encode_chars(self.prepare_text(text))
        table = self.lookup("in the text")
        words = self.tokenize(text)
        return np.fromiter(map(table.__getitem__, words), dtype=self.dtype, count=len(words))

    def char_table(self) -> np.ndarray:
        """Dense codepoint -> id table (int64, -1 for characters outside the vocabulary, last entry -1)."""
        cps = [ord(s) for s in self._symbols if len(s) == 1]
        table = np.full(max(cps, default=0) + 2, -1, dtype=np.int64)
        for s in self._symbols:
            if len(s) == 1:
                table[ord(s)] = self._index[s]
        return table

    def encode_chars(self, text: str, *, table: np.ndarray | None = None, where: str = "the text",
                     byte_offset: int = 0, counter: list[int] | None = None) -> np.ndarray:
        """Char-level ids of already prepared ``text``; unknown characters map to ``<unk>`` or raise DataError."""
        if table is None:
            table = self.char_table()
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # (N,) codepoints
        ids = table[np.minimum(cps, len(table) - 1)]
        missing = ids < 0
        if missing.any():
            unk = self.unk_id
            if unk is None:
                i = int(np.argmax(missing))
                offset = byte_offset + len(text[:i].encode("utf-8"))
                raise DataError(f"character {text[i]!r} in {where} at byte offset {offset} is not in the "
                                "vocabulary, which has no <unk>; build the vocabulary from text that contains it")
            if counter is not None:
                counter[0] += int(missing.sum())
            ids[missing] = unk
        return ids.astype(self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Text of ``ids``: bytes decoded as UTF-8 (invalid sequences replaced), characters joined, words
        joined by spaces with ``<eos>`` as a line break and ``<S>`` markers dropped; with the WikiText
        normalisation each line is detokenized (``Hello , world !`` -> ``Hello, world!``, ``1 @,@ 000`` ->
        ``1,000``)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        symbols = [self._symbols[i] for i in ids]
        if self.kind == "char":
            return "".join(symbols)
        eos, bos = self.specials.get("eos"), self.specials.get("bos")
        join = self._wikitext().join_line if self.normalization == "wikitext" else " ".join
        out: list[str] = []
        line: list[str] = []
        for s in symbols:
            if s == eos:
                out.append(join(line) + "\n")
                line = []
            elif s == bos and self.lines == "sentence":
                if line:
                    out.append(join(line) + "\n")
                    line = []
            else:
                line.append(s)
        return "".join(out) + join(line)

    # -- persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": _FORMAT, "version": 1, "kind": self.kind, "size": len(self),
                             "lines": self.lines, "lower": self.lower, "specials": dict(self.specials)}
        if self.normalization != "none":  # absent when none: older vocabularies keep their fingerprint
            d["normalization"] = self.normalization
        if self.kind != "byte":
            d["symbols"] = list(self._symbols)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "vocabulary") -> "Vocabulary":
        if data.get("format") != _FORMAT:
            raise DataError(f"{where} is not a transformer-xl vocabulary (format {data.get('format')!r})")
        if data.get("version") != 1:
            raise DataError(f"{where} has vocabulary format version {data.get('version')!r}; this build reads 1")
        vocab = cls(data["kind"], data.get("symbols"), specials=data.get("specials") or {},
                    lines=data.get("lines", "none"), lower=bool(data.get("lower", False)),
                    normalization=data.get("normalization", "none"))
        if "size" in data and data["size"] != len(vocab):
            raise DataError(f"{where} says size {data['size']} but lists {len(vocab)} symbols (truncated file?)")
        return vocab

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: equal fingerprints mean identical ids for identical text."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def save(self, path: str | Path) -> None:
        """Write JSON (atomically: a crash leaves the old file or the new one, never half of one)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, *, kind: str = "word") -> "Vocabulary":
        """Read a JSON vocabulary, or plain text with one symbol a line (first field; a count may follow,
        as in One Billion Word's ``1b_word_vocab.txt``). Plain text lists are ``kind`` (default word);
        ``<eos>``, ``<unk>``/``<UNK>`` and ``<S>`` become the special tokens."""
        path = Path(path)
        if path.is_dir():
            raise DataError(f"vocabulary path {path} is a folder; give the vocab.json file inside it")
        raw = read_regular_file(path, what="vocabulary file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"vocabulary {path} is not UTF-8 (invalid byte at offset {exc.start})") from None
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"vocabulary {path} is not valid JSON ({exc}); truncated file?") from None
            _check_vocab_fields(data, str(path))
            try:
                return cls.from_dict(data, where=str(path))
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise DataError(f"vocabulary {path} is malformed ({type(exc).__name__}: {exc}); write it again "
                                "with txl prepare") from None
        symbols = [line.split()[0] for line in text.splitlines() if line.strip()]
        if not symbols:
            raise DataError(f"vocabulary {path} is empty; expected one symbol a line or a vocab.json")
        present = set(symbols)
        specials = {}
        if "<eos>" in present:
            specials["eos"] = "<eos>"
        for unk in ("<unk>", "<UNK>"):
            if unk in present:
                specials["unk"] = unk
                break
        if "<S>" in present:
            specials["bos"] = "<S>"
        lines = "eos" if "eos" in specials else "sentence" if "bos" in specials else "none"
        if kind == "char":
            lines = "none"
        return cls(kind, list(dict.fromkeys(symbols)), specials=specials, lines=lines)


def _check_vocab_fields(data: Any, where: str) -> None:
    """One-line errors for a vocab.json whose fields are missing or of the wrong type."""
    def bad(field: str, wanted: str) -> DataError:
        got = type(data.get(field)).__name__ if field in data else "nothing"
        return DataError(f"vocabulary {where}: field {field!r} must be {wanted}, got {got}; the file is damaged "
                         "or not written by transformer-xl (write it again with txl prepare)")

    if not isinstance(data, dict):
        raise DataError(f"vocabulary {where} must hold a JSON object, got {type(data).__name__}")
    if data.get("format") != _FORMAT:
        return  # from_dict names the format problem
    if not isinstance(data.get("kind"), str):
        raise bad("kind", f"one of {VOCAB_KINDS}")
    if data["kind"] != "byte" or "symbols" in data:
        symbols = data.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(x, str) for x in symbols):
            raise bad("symbols", "a list of strings")
    specials = data.get("specials", {})
    if specials is not None and (not isinstance(specials, dict)
                                 or not all(isinstance(k, str) and isinstance(v, str) for k, v in specials.items())):
        raise bad("specials", "an object of strings")
    if not isinstance(data.get("lines", "none"), str):
        raise bad("lines", f"one of {LINE_MODES}")
    if not isinstance(data.get("lower", False), bool):
        raise bad("lower", "true or false")
    size = data.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int):
        raise bad("size", "an integer")
