"""Hugging Face TransfoXL vocabularies, read without running anything from them, and ours written back.

Hugging Face saved its TransfoXL tokenizer as ``vocab.pkl``: a pickle of the whole tokenizer object
(sacremoses objects, compiled regexes, ``tokenizers.AddedToken``, a word ``Counter`` ...). Unpickling it
the usual way imports and calls whatever the file names, which is why transformers retired the model.
:func:`read_vocab_pickle` walks the pickle with an unpickler whose only real globals are ``dict`` (for
``collections.OrderedDict`` and ``Counter``); every other global the file names becomes :class:`Inert`,
a class that stores its arguments and runs nothing. From the resulting plain data only the symbol list
(``idx2sym``, else ``sym2idx``), the unknown-token index, the case flag and the delimiter are used.

``vocab.bin`` (``torch.save`` of the same dictionary, zip or legacy format) is read the same way;
``vocab.txt`` is one symbol a line (first field), as ``TransfoXLTokenizer(vocab_file=...)`` reads it.
Hugging Face's tokenizer applies the WikiText rules to any raw text, so the vocabularies read here are
word vocabularies with ``normalization="wikitext"``.

Writing (``txl convert --to hf``): ``vocab.json`` in our format (exact: kind, whitespace symbols, order,
specials, normalisation) and, for a word vocabulary whose symbols are whitespace-free, ``vocab.txt`` for
``TransfoXLTokenizer``. Reading a directory prefers that ``vocab.json``, so the round trip is lossless.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

from ..config import TransformerXLError
from ..data.vocab import Vocabulary, read_regular_file

__all__ = ["Inert", "read_vocab_pickle", "vocabulary_from_hf_state", "load_hf_vocabulary", "read_hf_text_vocab",
           "write_hf_vocabulary", "HF_VOCAB_FILES"]

HF_VOCAB_FILES = ("vocab.json", "vocab.pkl", "vocab.bin", "vocab.txt")  # the order a directory is searched
MAX_VOCAB_BYTES = 1 << 30  # wt103's vocab.pkl is ~10 MB; anything near this is not a vocabulary
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (non-zip) torch.save file
_OUR_FORMAT = "transformer-xl-vocabulary"


class Inert:
    """Stands in for every class or function a vocabulary pickle names: keeps what it is given, does nothing.

    Calling it (the pickle's REDUCE/NEWOBJ), ``__setstate__`` (BUILD), item assignment (SETITEMS) and
    ``append``/``extend`` (APPENDS) only record data, so no code from the file can run.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "Inert":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return "Inert(...)"


# The only globals built for real: containers that hold the symbols. Everything else is Inert.
_REAL = {("collections", "OrderedDict"): dict, ("collections", "Counter"): dict, ("builtins", "dict"): dict,
         ("builtins", "list"): list, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset}


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _REAL.get((module, name), Inert)

    def persistent_load(self, pid: Any) -> Any:  # torch.save's storages: never read
        return Inert(pid)


def _unpickle(data: bytes) -> Any:
    return _InertUnpickler(io.BytesIO(data)).load()


def read_vocab_pickle(path: str | Path) -> Any:
    """The plain data of a vocabulary pickle (``vocab.pkl``) or ``torch.save`` file (``vocab.bin``), with
    every object it names replaced by :class:`Inert`; nothing from the file is imported or called."""
    path = Path(path)
    data = read_regular_file(path, what="vocabulary file", limit=MAX_VOCAB_BYTES)
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):  # torch.save's zip format: the object is */data.pkl
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if len(names) != 1:
                    raise TransformerXLError(f"{path} is a zip archive without exactly one data.pkl; it is not "
                                             "a Hugging Face TransfoXL vocabulary")
                if archive.getinfo(names[0]).file_size > MAX_VOCAB_BYTES:
                    raise TransformerXLError(f"{path}: data.pkl is too large to be a vocabulary")
                return _unpickle(archive.read(names[0]))
        stream = io.BytesIO(data)
        obj = _InertUnpickler(stream).load()
        if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:  # legacy torch.save: magic, protocol, info, obj
            _InertUnpickler(stream).load()
            _InertUnpickler(stream).load()
            obj = _InertUnpickler(stream).load()
        return obj
    except TransformerXLError:
        raise
    except Exception as exc:  # a truncated or hand-made pickle: any unpickling failure is the file's fault
        raise TransformerXLError(f"cannot read {path} as a Hugging Face TransfoXL vocabulary "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); download it again") from None


def vocabulary_from_hf_state(state: Any, *, source: str | Path = "the Hugging Face vocabulary") -> Vocabulary:
    """Our word vocabulary from the dictionary a TransfoXL tokenizer pickled (its ``__dict__``)."""
    if not isinstance(state, Mapping):
        raise TransformerXLError(f"{source} does not hold a tokenizer dictionary (got {type(state).__name__})")
    idx2sym, sym2idx = state.get("idx2sym"), state.get("sym2idx")
    if isinstance(idx2sym, list) and idx2sym:
        if not all(isinstance(s, str) for s in idx2sym):
            raise TransformerXLError(f"{source}: idx2sym holds something other than strings")
        symbols = list(idx2sym)
        if isinstance(sym2idx, Mapping) and sym2idx:
            bad = next((s for s, i in sym2idx.items()
                        if not isinstance(i, int) or not 0 <= i < len(symbols) or symbols[i] != s), None)
            if bad is not None or len(sym2idx) != len(symbols):
                raise TransformerXLError(f"{source}: idx2sym and sym2idx disagree (at {bad!r}); the file is damaged")
    elif isinstance(sym2idx, Mapping) and sym2idx:
        pairs = sorted(sym2idx.items(), key=lambda kv: kv[1] if isinstance(kv[1], int) else -1)
        if [i for _, i in pairs] != list(range(len(pairs))) or not all(isinstance(s, str) for s, _ in pairs):
            raise TransformerXLError(f"{source}: sym2idx is not a table of the ids 0 .. n-1")
        symbols = [s for s, _ in pairs]
    else:
        raise TransformerXLError(f"{source} has no symbol list (idx2sym / sym2idx); it is not a TransfoXL "
                                 "tokenizer vocabulary")
    if state.get("delimiter") == "":
        raise TransformerXLError(f"{source} is a character-level TransfoXL tokenizer (delimiter ''), which is "
                                 "not supported; only word-level vocabularies convert")
    present = set(symbols)
    specials: dict[str, str] = {}
    eos = state.get("_eos_token", state.get("eos_token"))
    eos = eos if isinstance(eos, str) and eos in present else "<eos>" if "<eos>" in present else None
    if eos is not None:
        specials["eos"] = eos
    unk_idx = state.get("unk_idx")
    if isinstance(unk_idx, int) and not isinstance(unk_idx, bool) and 0 <= unk_idx < len(symbols):
        specials["unk"] = symbols[unk_idx]
    else:
        unk = next((u for u in ("<unk>", "<UNK>") if u in present), None)
        if unk is not None:
            specials["unk"] = unk
    if "unk" in specials and specials["unk"] == specials.get("eos"):
        del specials["unk"]
    try:
        return Vocabulary("word", symbols, specials=specials, lines="eos" if "eos" in specials else "none",
                          lower=state.get("lower_case") is True, normalization="wikitext")
    except TransformerXLError as exc:
        raise TransformerXLError(f"{source}: {exc}") from None


def read_hf_text_vocab(path: str | Path) -> Vocabulary:
    """``vocab.txt`` as ``TransfoXLTokenizer(vocab_file=...)`` reads it: first field of each line, repeats
    ignored, ``<UNK>`` before ``<unk>`` as the unknown token."""
    path = Path(path)
    try:
        text = read_regular_file(path, what="vocabulary file", limit=MAX_VOCAB_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransformerXLError(f"{path} is not UTF-8 (invalid byte at offset {exc.start})") from None
    symbols = list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
    if not symbols:
        raise TransformerXLError(f"{path} is empty; expected one symbol a line")
    unk_idx = next((symbols.index(u) for u in ("<UNK>", "<unk>") if u in symbols), None)
    return vocabulary_from_hf_state({"idx2sym": symbols, "unk_idx": unk_idx}, source=path)


def load_hf_vocabulary(directory: str | Path) -> Vocabulary | None:
    """The vocabulary of a Hugging Face TransfoXL directory, or None when it has none.

    Searched in order: our ``vocab.json`` (written by ``txl convert --to hf``: exact), ``vocab.pkl``,
    ``vocab.bin`` (both through :func:`read_vocab_pickle`), ``vocab.txt``. A ``vocab.json`` in another
    format is not ours and is skipped.
    """
    directory = Path(directory)
    ours = directory / "vocab.json"
    if ours.is_file():
        try:
            data = json.loads(read_regular_file(ours, what="vocabulary file", limit=MAX_VOCAB_BYTES))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and data.get("format") == _OUR_FORMAT:
            return Vocabulary.load(ours)
    for name in ("vocab.pkl", "vocab.bin"):
        if (directory / name).exists():
            return vocabulary_from_hf_state(read_vocab_pickle(directory / name), source=directory / name)
    if (directory / "vocab.txt").exists():
        return read_hf_text_vocab(directory / "vocab.txt")
    return None


def write_hf_vocabulary(vocab: Vocabulary, directory: str | Path) -> list[str]:
    """Write ``vocab`` into a Hugging Face directory: ``vocab.json`` (ours, exact) and, when Hugging Face's
    tokenizer can read it the same way, ``vocab.txt``. Returns the names written."""
    directory = Path(directory)
    vocab.save(directory / "vocab.json")
    written = ["vocab.json"]
    if vocab.kind == "word" and all(s and len(s.split()) == 1 and s.split()[0] == s for s in vocab.symbols):
        (directory / "vocab.txt").write_text("".join(s + "\n" for s in vocab.symbols), encoding="utf-8")
        written.append("vocab.txt")
    return written
