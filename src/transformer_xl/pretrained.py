"""Save and load a model directory: config.json + model.safetensors (+ the vocabulary when given).

Loading never executes code from a file: weights come from safetensors, the config and vocabulary from
JSON, and anything else torch has to read goes through ``torch.load(weights_only=True)``, which refuses
any pickled object that is not a tensor or a plain container. Every failure a user can cause (missing,
corrupt or mismatched file) raises :class:`TransformerXLError` naming the file and what to do.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch
from torch import Tensor

from .config import ModelConfig, TransformerXLError
from .model import TransformerXLLM

__all__ = [
    "CONFIG_FILE", "VOCAB_FILE", "WEIGHTS_FILE", "load_pretrained", "load_vocabulary", "read_json",
    "safe_torch_load", "save_pretrained",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
# Pickle-based weight files we accept as a fallback, read with weights_only=True (tensors only).
_TORCH_WEIGHT_FILES = ("model.pt", "model.bin", "pytorch_model.bin")


class _Saveable(Protocol):
    def save(self, path: str | Path) -> Any: ...


# --------------------------------------------------------------------------------------------------
def read_json(path: Path, *, what: str) -> dict[str, Any]:
    """A JSON object from ``path``, or a TransformerXLError that names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransformerXLError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TransformerXLError(f"{what} {path} is not valid JSON ({exc}); the file is corrupt or not a "
                                 "config: write it again with save_pretrained or txl convert") from None
    if not isinstance(data, dict):
        raise TransformerXLError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def safe_torch_load(path: Path, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary code.

    A pickle that would construct anything else (a whole pickled module, a callable) is refused with a
    TransformerXLError explaining why and what to do.
    """
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
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise TransformerXLError(f"cannot read {path}: {exc}. The file is corrupt or not a torch checkpoint; "
                                 "download or write it again") from None


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
    except TypeError as exc:
        raise TransformerXLError(f"{path} does not describe a model ({exc})") from None


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


def load_pretrained(directory: str | Path, *, map_location: str | torch.device = "cpu") -> TransformerXLLM:
    """The model saved in ``directory`` by :func:`save_pretrained`, in eval mode on ``map_location``.

    Weights come from ``model.safetensors``; when it is absent a ``model.pt`` / ``pytorch_model.bin`` state
    dict with our parameter names is read with ``torch.load(weights_only=True)``, which refuses pickled code.
    The vocabulary, if saved, is read separately with :func:`load_vocabulary`.
    """
    directory = Path(directory)
    _check_directory(directory)
    config = _config_from_directory(directory)
    model = TransformerXLLM(config)
    weights = directory / WEIGHTS_FILE
    if weights.exists():
        _load_safetensors_into(model, weights)
    else:
        fallback = next((directory / n for n in _TORCH_WEIGHT_FILES if (directory / n).exists()), None)
        if fallback is None:
            raise TransformerXLError(f"no weights in {directory}: expected {WEIGHTS_FILE} next to {CONFIG_FILE}")
        state = safe_torch_load(fallback)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise TransformerXLError(f"{fallback} is not a state dict of tensors")
        assign_state(model, state, source=fallback)
    return model.to(map_location).eval()


def load_vocabulary(directory: str | Path) -> Any | None:
    """The vocabulary saved next to the model (``vocab.json``), or None when none was saved."""
    from .data.vocab import Vocabulary

    path = Path(directory) / VOCAB_FILE
    if not path.exists():
        return None
    return Vocabulary.load(path)
