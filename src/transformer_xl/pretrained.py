"""Save and load a model directory: config.json + model.safetensors (+ the vocabulary when given).

Loading never executes code from a file: weights come from safetensors, the config and vocabulary from
JSON, and anything else torch has to read goes through ``torch.load(weights_only=True)``, which refuses
any pickled object that is not a tensor or a plain container. TorchScript archives and zips holding code
are refused before torch sees them (:func:`check_torch_file`). Every failure a user can cause (missing,
corrupt or mismatched file) raises :class:`TransformerXLError` naming the file and what to do.

Integrity: ``checksums.json`` records the sha256 of every file a save wrote; loading verifies the files it
reads against it (directories without one, older saves or hand-made conversions, still load). The config
is checked against the safetensors header on a model built on the meta device before any memory is
allocated, so a config that claims a huge vocabulary beside a small weights file fails at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import stat as stat_
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch
from torch import Tensor

from .config import ModelConfig, TransformerXLError
from .model import TransformerXLLM

__all__ = [
    "CHECKSUMS_FILE", "CONFIG_FILE", "VOCAB_FILE", "WEIGHTS_FILE", "check_state_against_config", "check_torch_file",
    "load_pretrained", "load_vocabulary", "read_json", "safe_torch_load", "save_pretrained", "verify_checksums",
    "write_checksums",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
CHECKSUMS_FILE = "checksums.json"
MAX_JSON_BYTES = 256 << 20  # a config, run config or checksum list is a few KB; a vocabulary a few MB
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for its JSON header
# Pickle-based weight files we accept as a fallback, read with weights_only=True (tensors only).
_TORCH_WEIGHT_FILES = ("model.pt", "model.bin", "pytorch_model.bin")


class _Saveable(Protocol):
    def save(self, path: str | Path) -> Any: ...


# --------------------------------------------------------------------------------------------------
def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a TransformerXLError that names the file."""
    from .data.vocab import read_regular_file

    raw = read_regular_file(path, what=what, limit=MAX_JSON_BYTES)
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise TransformerXLError(f"{what} {path} nests too deeply to be a config; the file is corrupt") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransformerXLError(f"{what} {path} is not valid JSON ({exc}); the file is corrupt or not a "
                                 "config: write it again with save_pretrained or txl convert") from None
    if not isinstance(data, dict):
        raise TransformerXLError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _open_regular(path: Path, what: str) -> Any:
    """A binary handle on ``path`` when it is a regular file (a FIFO or device is refused, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise TransformerXLError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise TransformerXLError(f"cannot open {what} {path}: {exc.strerror or exc}") from None
    if not stat_.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransformerXLError(f"{what} {path} is not a regular file (a folder, device, FIFO or socket)")
    return os.fdopen(fd, "rb")


def _is_code_entry(name: str) -> bool:
    parts = name.split("/")
    base = parts[-1]
    return ("code" in parts[:-1] or base == "constants.pkl" or base.endswith((".py", ".pyc", ".so", ".dll"))
            or (base.endswith(".pkl") and base != "data.pkl"))


def check_torch_file(path: Path) -> None:
    """Refuse, before torch reads a byte of it, a file that torch.load would not treat as plain data.

    torch.load hands a TorchScript archive (a zip with ``constants.pkl`` and ``code/``) to the TorchScript
    loader, which runs the archive's code while loading; no unpickler setting prevents that. So a zip is
    accepted only when it holds nothing but the tensor data, its ``data.pkl`` and torch's bookkeeping; a
    non-zip must be a pickle (torch's legacy format). Anything else is a one-line TransformerXLError.
    """
    with _open_regular(path, "weights file") as handle:
        head = handle.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise TransformerXLError(f"cannot read {path}: not a valid zip archive ({exc}); the file is corrupt "
                                     "or truncated, download or write it again") from None
        code = [n for n in names if _is_code_entry(n)]
        if code:
            kind = "a TorchScript archive" if any(n.endswith("constants.pkl") for n in names) else "an archive"
            raise TransformerXLError(
                f"refusing to load {path}: it is {kind} holding code ({code[0]}), and torch would run that code "
                "while loading it. Weights are never read from such files: save a plain state dict "
                "(torch.save(model.state_dict())) or safetensors where the file came from")
        if not any(n.split("/")[-1] == "data.pkl" for n in names):
            raise TransformerXLError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl); "
                                     "pass the model's weights file")
        return
    if head[:1] != b"\x80":  # every pickle torch writes starts with the PROTO opcode
        shown = head.decode("latin-1") if head.isascii() else repr(head)
        raise TransformerXLError(f"{path} is not a torch checkpoint (it starts with {shown!r}: neither a zip "
                                 "archive nor a pickle); the file is damaged or something else under that name")


def safe_torch_load(path: Path, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary code.

    TorchScript archives and zips holding code are refused first (:func:`check_torch_file`). A pickle that
    would construct anything else (a whole pickled module, a callable) is refused with a TransformerXLError
    explaining why and what to do.
    """
    check_torch_file(Path(path))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TransformerXLError(f"weights file not found: {path}") from None
    except pickle.UnpicklingError as exc:
        # weights_only=True raises UnpicklingError for any global outside torch's tensor allow-list.
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise TransformerXLError(
            f"refusing to load {path}: it is a pickle holding more than tensors ({first_line[:200]}), and "
            "unpickling it could run code from the file. Loading never does that by default. If the file is "
            "an original or NVIDIA Transformer-XL checkpoint you trust, use `txl convert --from original|nvidia "
            "--unsafe-pickle` (restricted to an allow-list of classes); otherwise re-save the weights as "
            "safetensors where they came from") from None
    except Exception as exc:  # torch's reader raises many types for damaged bytes (RuntimeError, KeyError, ...)
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise TransformerXLError(f"cannot read {path}: {detail}. The file is corrupt or not a torch checkpoint; "
                                 "download or write it again") from None


# Checksums ------------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with _open_regular(path, "file") as handle:
        while block := handle.read(1 << 22):
            sha.update(block)
    return sha.hexdigest()


def write_checksums(directory: str | Path, names: list[str]) -> None:
    """Record the sha256 of ``directory/name`` for every name in ``checksums.json`` (missing names skipped)."""
    directory = Path(directory)
    sums = {name: _sha256_file(directory / name) for name in sorted(set(names)) if (directory / name).is_file()}
    tmp = directory / (CHECKSUMS_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": "transformer-xl-checksums", "version": 1, "sha256": sums}, indent=1)
                   + "\n", encoding="utf-8")
    os.replace(tmp, directory / CHECKSUMS_FILE)


def verify_checksums(directory: str | Path, names: list[str]) -> None:
    """Check ``directory/name`` against ``checksums.json`` for every name it records; a directory without
    the list (an older save, a hand-made conversion) passes. A difference is a TransformerXLError naming
    the file: a flipped bit never becomes a silently different model."""
    directory = Path(directory)
    listing = directory / CHECKSUMS_FILE
    if not os.path.lexists(listing):
        return
    data = read_json(listing, what="checksum list")
    sums = data.get("sha256")
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise TransformerXLError(f"{listing} is damaged (no sha256 table); delete it to load the directory "
                                 "without verification")
    for name in names:
        expected, path = sums.get(name), directory / name
        if expected is None or not os.path.lexists(path):
            continue  # not recorded, or absent: the loader reports a missing file itself
        if _sha256_file(path) != expected:
            raise TransformerXLError(
                f"{path} does not match the sha256 recorded in {CHECKSUMS_FILE} when it was saved (a flipped "
                "bit, a partial copy or an edit); restore the file from its source, or delete "
                f"{listing} to accept the file as it is")


def _check_directory(directory: Path) -> None:
    if not directory.exists():
        raise TransformerXLError(f"model directory not found: {directory}")
    if not directory.is_dir():
        raise TransformerXLError(f"{directory} is a file; pass the directory written by save_pretrained")


# --------------------------------------------------------------------------------------------------
def save_pretrained(model: TransformerXLLM, directory: str | Path, *, vocab: _Saveable | None = None) -> None:
    """Write ``config.json``, ``model.safetensors`` and, when given, the vocabulary (``vocab.json``).

    Tied parameters (embedding and softmax weights, shared projections) are stored once: safetensors
    keeps one copy of a shared tensor and ``load_pretrained`` ties them again by building the model first.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TransformerXLError(f"cannot save into {directory}: it is a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_json(directory / CONFIG_FILE)
    # save_model drops duplicate names of shared tensors (tied weights) instead of failing on them.
    save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "library": "transformer-xl"})
    if vocab is not None:
        vocab.save(directory / VOCAB_FILE)
    write_checksums(directory, [CONFIG_FILE, WEIGHTS_FILE] + ([VOCAB_FILE] if vocab is not None else []))


def _config_from_directory(directory: Path) -> ModelConfig:
    path = directory / CONFIG_FILE
    data = read_json(path, what="model config")
    if data.get("model_type") == "transfo-xl" or "vocab_size" in data:
        raise TransformerXLError(
            f"{path} is a Hugging Face TransfoXL config, not ours: convert the directory with "
            f"`txl convert --from hf --to ours {directory} DST`, or load it with "
            "transformer_xl.interop.import_hf(directory)")
    try:
        return ModelConfig.from_dict(data)
    except TransformerXLError as exc:
        raise TransformerXLError(f"{path}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise TransformerXLError(f"{path} does not describe a model ({exc})") from None


_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                       "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header, checked for consistency with the file size,
    without reading any tensor data."""
    def corrupt(why: str) -> TransformerXLError:
        return TransformerXLError(f"cannot read {path}: {why}. The file is corrupt or truncated; write it again "
                                  "with save_pretrained (or download it again)")

    with _open_regular(path, "weights file") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(8)
        if len(head) < 8:
            raise corrupt("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise corrupt(f"header length {n:,} does not fit in the file's {size:,} bytes")
        raw = handle.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise corrupt("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            ok = (dtype in _SAFETENSORS_DTYPES and all(type(d) is int and d >= 0 for d in shape)
                  and type(a) is int and type(b) is int and 0 <= a <= b <= data_size
                  and b - a == math.prod(shape) * _SAFETENSORS_DTYPES[dtype])
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise corrupt(f"the header entry of {str(name)[:80]!r} is inconsistent (dtype, shape or offsets)")
        out[name] = (dtype, shape)
    return out


def _meta_model(config: ModelConfig) -> TransformerXLLM:
    with torch.device("meta"):  # names, shapes and ties without allocating memory
        return TransformerXLLM(config)


def check_state_against_config(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], *, source: str | Path,
                               config_source: str | Path = "the model config") -> None:
    """Raise unless tensors named ``shapes`` (our names; each tied tensor under one name or more) fit the model
    ``config`` describes: nothing missing, nothing extra, every shape equal. Runs on the meta device, so a
    config that would need gigabytes is refused before any memory is allocated."""
    if config.n_layer > max(len(shapes), 1):  # every layer holds tensors: refuse before building the meta model
        raise TransformerXLError(f"{source} does not match {config_source}: the config has {config.n_layer} layers "
                                 f"but the weights hold only {len(shapes)} tensors")
    try:
        model = _meta_model(config)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:  # sizes torch cannot represent
        raise TransformerXLError(f"{config_source} does not describe a model that can be built "
                                 f"({' '.join(str(exc).split())[:160]}); check its sizes") from None
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    expected = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    missing = [names[0] for names in groups.values() if not any(n in shapes for n in names)]
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise TransformerXLError(
            f"{source} does not match {config_source}: missing {sorted(missing)[:8]}, unexpected {unexpected[:8]}; "
            "was the config edited, or the weights written by another program? (for Hugging Face checkpoints use "
            "`txl convert --from hf`)")
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            raise TransformerXLError(
                f"{source} does not match {config_source}: {name} has shape {tuple(shape)} in the weights, the "
                f"config implies {expected[name]} (n_token {config.n_token}, d_model {config.d_model}, d_embed "
                f"{config.d_embed}); was the config edited, or the weights saved for another model?")


def _load_safetensors_into(model: TransformerXLLM, path: Path) -> None:
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except FileNotFoundError:
        raise TransformerXLError(f"weights file not found: {path}") from None
    except RuntimeError as exc:  # shape mismatch between the file and config.json
        detail = " ".join(str(exc).split())[:400]  # torch's message spans lines; the CLI prints one
        raise TransformerXLError(f"{path} does not match {path.parent / CONFIG_FILE}: {detail}") from None
    except Exception as exc:  # safetensors raises its own error type for a corrupt header or truncation
        raise TransformerXLError(f"cannot read {path}: {exc}. The file is corrupt or truncated; "
                                 "write it again with save_pretrained") from None
    if missing or unexpected:
        raise TransformerXLError(
            f"{path} does not match {path.parent / CONFIG_FILE}: missing {sorted(missing)[:8]}, unexpected "
            f"{sorted(unexpected)[:8]}; was the config edited, or the weights written by another program? "
            "(for Hugging Face checkpoints use `txl convert --from hf`)")


def assign_state(model: TransformerXLLM, state: Mapping[str, Tensor], *, source: str | Path) -> None:
    """Load ``state`` (our parameter names) into ``model``, strictly, with errors that name ``source``.

    Tied parameters may appear under one name or both; when both are present they must agree.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    # A tied alias may be left out if its canonical twin is present (same tensor in the model).
    canonical = {id(p): name for name, p in model.named_parameters()}
    aliases = {name: canonical[id(p)] for name, p in model.named_parameters(remove_duplicate=False)
               if canonical[id(p)] != name}
    missing = [name for name in missing if not (name in aliases and aliases[name] in state)]
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TransformerXLError(f"{source} does not match the model config: missing {missing[:8]}, "
                                 f"unexpected {unexpected[:8]}")
    for alias, name in aliases.items():
        if alias in state and name in state and not torch.equal(state[alias], state[name]):
            raise TransformerXLError(f"{source}: {alias} and {name} differ, but the config ties them; "
                                     "set tie_weight / tie_projs to match the checkpoint")
    with torch.no_grad():
        for name, tensor in expected.items():
            if name not in state:
                continue
            if state[name].shape != tensor.shape:
                raise TransformerXLError(f"{source}: {name} has shape {tuple(state[name].shape)}, the config "
                                         f"expects {tuple(tensor.shape)}")
            tensor.copy_(state[name])  # state_dict tensors share storage with the parameters


# Where a checkpoint lies ---------------------------------------------------------------------------
def old_checkpoint_path(directory: Path) -> Path:
    """Where an atomic checkpoint save keeps the previous checkpoint while it swaps in the new one."""
    return directory.with_name(f".{directory.name}.old")


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory ``path`` names: a checkpoint itself, or a run directory (its ``best/``,
    else ``last/``). A checkpoint whose replacement was interrupted is found under ``.NAME.old``."""
    path = Path(path)
    if not path.exists() and old_checkpoint_path(path).exists():
        return old_checkpoint_path(path)
    if not path.exists():
        raise TransformerXLError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise TransformerXLError(f"{path} is a file; pass a checkpoint directory (or a run directory)")
    if (path / "config.json").exists():
        return path
    for name in ("best", "last"):
        candidate = path / name
        if candidate.exists() or old_checkpoint_path(candidate).exists():
            return resolve_checkpoint(candidate)
    raise TransformerXLError(f"{path} holds no checkpoint (no config.json, best/ or last/)")


def _checkpoint_directory(directory: Path) -> Path:
    """``directory`` itself, or for a training run directory (no config.json, a best/ or last/) its checkpoint."""
    if not os.path.lexists(directory / CONFIG_FILE) and any(
            os.path.lexists(directory / name) or os.path.lexists(old_checkpoint_path(directory / name))
            for name in ("best", "last")):
        return resolve_checkpoint(directory)
    return directory


def load_pretrained(directory: str | Path, *, map_location: str | torch.device = "cpu") -> TransformerXLLM:
    """The model saved in ``directory`` by :func:`save_pretrained`, in eval mode on ``map_location``.
    ``directory`` may also be a training run directory (its ``best/``, else ``last/``).

    Weights come from ``model.safetensors``; when it is absent a ``model.pt`` / ``pytorch_model.bin`` state
    dict with our parameter names is read with ``torch.load(weights_only=True)``, which refuses pickled code.
    The vocabulary, if saved, is read separately with :func:`load_vocabulary`.
    """
    directory = Path(directory)
    _check_directory(directory)
    directory = _checkpoint_directory(directory)  # a run directory: its best checkpoint, else the last
    weights = directory / WEIGHTS_FILE
    if not os.path.lexists(weights):
        weights = next((directory / n for n in _TORCH_WEIGHT_FILES if os.path.lexists(directory / n)), None)
        if weights is None:
            raise TransformerXLError(f"no weights in {directory}: expected {WEIGHTS_FILE} next to {CONFIG_FILE}")
    verify_checksums(directory, [CONFIG_FILE, weights.name])
    config = _config_from_directory(directory)
    if weights.name == WEIGHTS_FILE:
        header = read_safetensors_header(weights)
        check_state_against_config(config, {k: v[1] for k, v in header.items()}, source=weights,
                                   config_source=directory / CONFIG_FILE)
        model = TransformerXLLM(config)
        _load_safetensors_into(model, weights)
    else:
        state = safe_torch_load(weights)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise TransformerXLError(f"{weights} is not a state dict of tensors")
        check_state_against_config(config, {k: tuple(v.shape) for k, v in state.items()}, source=weights,
                                   config_source=directory / CONFIG_FILE)
        model = TransformerXLLM(config)
        assign_state(model, state, source=weights)
    return model.to(map_location).eval()


def load_vocabulary(directory: str | Path) -> Any | None:
    """The vocabulary saved next to the model (``vocab.json``), or None when none was saved. Its checksum
    and its size (against config.json's n_token) are checked. ``directory`` may be a run directory."""
    from .data.vocab import Vocabulary

    directory = Path(directory)
    if directory.is_dir():
        directory = _checkpoint_directory(directory)
    path = directory / VOCAB_FILE
    if not os.path.lexists(path):
        return None
    verify_checksums(directory, [VOCAB_FILE])
    vocab = Vocabulary.load(path)
    if os.path.lexists(directory / CONFIG_FILE):
        n_token = read_json(directory / CONFIG_FILE, what="model config").get("n_token")
        if isinstance(n_token, int) and n_token != len(vocab):
            raise TransformerXLError(
                f"{path} has {len(vocab):,} symbols but {directory / CONFIG_FILE} says n_token {n_token:,}: the "
                "vocabulary belongs to another model; put the model's own vocab.json beside it")
    return vocab
