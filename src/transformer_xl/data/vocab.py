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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import TransformerXLError

__all__ = ["DataError", "Vocabulary", "VOCAB_KINDS", "LINE_MODES", "smallest_dtype"]

VOCAB_KINDS = ("word", "char", "byte")
LINE_MODES = ("eos", "sentence", "none")
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


class Vocabulary:
    """Symbols and special tokens of one corpus; see the module docstring for how text is encoded."""

    def __init__(self, kind: str, symbols: Sequence[str] | None = None, *,
                 specials: Mapping[str, str] | None = None, lines: str = "none", lower: bool = False) -> None:
        if kind not in VOCAB_KINDS:
            raise DataError(f"vocabulary kind must be one of {VOCAB_KINDS}, got {kind!r}")
        if lines not in LINE_MODES:
            raise DataError(f"lines must be one of {LINE_MODES}, got {lines!r}")
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
                    max_size: int | None = None) -> "Vocabulary":
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
        return cls(kind, symbols, specials=specials, lines=lines, lower=lower)

    # -- basic protocol -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, size={len(self)}, specials={self.specials}, lines={self.lines!r})"

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

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` in the smallest dtype (see the module docstring for each kind)."""
        if self.kind == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
        text = self.prepare_text(text)
        if self.kind == "char":
            return self.encode_chars(text)
        table = self.lookup("in the text")
        words = self.words(text)
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
        joined by spaces with ``<eos>`` as a line break and ``<S>`` markers dropped."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        symbols = [self._symbols[i] for i in ids]
        if self.kind == "char":
            return "".join(symbols)
        eos, bos = self.specials.get("eos"), self.specials.get("bos")
        out: list[str] = []
        line: list[str] = []
        for s in symbols:
            if s == eos:
                out.append(" ".join(line) + "\n")
                line = []
            elif s == bos and self.lines == "sentence":
                if line:
                    out.append(" ".join(line) + "\n")
                    line = []
            else:
                line.append(s)
        return "".join(out) + " ".join(line)

    # -- persistence --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": _FORMAT, "version": 1, "kind": self.kind, "size": len(self),
                             "lines": self.lines, "lower": self.lower, "specials": dict(self.specials)}
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
                    lines=data.get("lines", "none"), lower=bool(data.get("lower", False)))
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
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"vocabulary file not found: {path}") from None
        except IsADirectoryError:
            raise DataError(f"vocabulary path {path} is a folder; give the vocab.json file inside it") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"vocabulary {path} is not UTF-8 (invalid byte at offset {exc.start})") from None
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"vocabulary {path} is not valid JSON ({exc}); truncated file?") from None
            return cls.from_dict(data, where=str(path))
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
