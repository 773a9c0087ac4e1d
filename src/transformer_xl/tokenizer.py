"""The tokenizer of a model, and the model with its tokenizer in one call.

A model's tokenizer is its :class:`~transformer_xl.data.vocab.Vocabulary` (``Tokenizer`` is the same
class under the name Hugging Face users look for): ``encode(text)`` gives the ids, ``decode(ids)`` the
text, ``tokenize(text)`` the symbols in between, following the vocabulary's kind (word, char, byte), its
line markers and its normalisation (the WikiText rules for WikiText models)::

    model, tokenizer = load_model_and_tokenizer("runs/wt103")          # run, checkpoint or HF folder
    ids = tokenizer.encode("Hello, world!")                            # numpy array of ids
    print(tokenizer.decode(ids))

Every path accepted here may be a checkpoint directory, a run directory (its ``best/``, else ``last/``),
a Hugging Face TransfoXL folder (config.json + weights + vocab.pkl/vocab.txt), or a hub id such as
``transfo-xl/transfo-xl-wt103``. The vocabulary's size must equal the model's ``n_token``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import TransformerXLError
from .data.vocab import Vocabulary, check_vocab_size
from .model import TransformerXLLM

__all__ = ["Tokenizer", "load_tokenizer", "load_model_and_tokenizer", "check_vocab_size"]

Tokenizer = Vocabulary


def _is_hf_folder(directory: Path) -> bool:
    from .pretrained import read_json

    config = directory / "config.json"
    if not config.is_file():
        return False
    data = read_json(config, what="model config")
    return data.get("model_type") == "transfo-xl" or "vocab_size" in data


def _locate(path: str | Path) -> tuple[Path, bool]:
    """(directory, is_hugging_face) for a checkpoint, run directory, HF folder or hub id."""
    from .interop.hub import resolve_hf_source
    from .runtime import resolve_checkpoint

    given = Path(path)
    if not given.exists():
        folder = resolve_hf_source(str(path))  # a hub id, or a one-line "not found"
        return folder, True
    if given.is_dir() and _is_hf_folder(given):
        return given, True
    return resolve_checkpoint(given), False


def load_tokenizer(path: str | Path) -> Vocabulary:
    """The tokenizer saved with a model (see the module docstring for what ``path`` may be)."""
    from .interop.hf_vocab import load_hf_vocabulary
    from .pretrained import load_vocabulary

    directory, is_hf = _locate(path)
    vocab = load_hf_vocabulary(directory) if is_hf else load_vocabulary(directory)
    if vocab is None:
        raise TransformerXLError(f"{directory} holds no vocabulary (vocab.json"
                                 f"{', vocab.pkl or vocab.txt' if is_hf else ''}); it only has ids")
    return vocab


def load_model_and_tokenizer(path: str | Path, *, map_location: str | torch.device = "cpu"
                             ) -> tuple[TransformerXLLM, Vocabulary]:
    """``(model, tokenizer)``: the model in eval mode on ``map_location`` (device kernels applied) and its
    vocabulary, checked against each other. ``path``: checkpoint, run directory, HF folder or hub id."""
    from .interop.hf import import_hf
    from .kernels import apply_device_kernels
    from .runtime import load_checkpoint

    directory, is_hf = _locate(path)
    model: Any
    if is_hf:
        model = import_hf(directory).to(map_location).eval()
        apply_device_kernels(model, map_location)
        tokenizer = load_tokenizer(directory)
    else:
        loaded = load_checkpoint(directory, device=map_location)
        model, tokenizer = loaded.model, loaded.vocab
        if tokenizer is None:
            raise TransformerXLError(f"{directory} holds no vocabulary (vocab.json); it only has ids")
    check_vocab_size(tokenizer, model.config.n_token, source=directory)
    return model, tokenizer
