"""What training reads: the token arrays of the splits and their vocabulary, from any of the forms a user has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import TransformerXLError

__all__ = ["TrainData", "load_data"]


@dataclass
@dataclass
class TrainData:
    """Token arrays of the splits and the vocabulary they were encoded with (None: bare arrays).

    ``train_sentences``: the start of every sentence of the training split, for a sentence-level corpus
    (lm1b); ``train.streams=auto`` then reads whole sentences in a shuffled order.
    """

    train: np.ndarray
    valid: np.ndarray | None = None
    vocab: Any = None
    train_sentences: np.ndarray | None = None

    @property
    def level(self) -> str | None:
        return getattr(self.vocab, "kind", None)


def load_data(data: Any, vocab: Any = None) -> TrainData:
    """A prepared data directory (txl prepare), a PreparedCorpus, a TrainData or {"train": ..., "valid": ...}
    (optionally "train_sentences": sentence starts of the training split)."""
    if isinstance(data, TrainData):
        return data
    if isinstance(data, (str, Path)):
        from ..data.cache import load_prepared

        data = load_prepared(Path(data))
    if isinstance(data, Mapping):
        if "train" not in data:
            raise TransformerXLError("training data needs a 'train' split")
        return TrainData(train=np.asarray(data["train"]), valid=data.get("valid"), vocab=vocab,
                         train_sentences=data.get("train_sentences"))
    if hasattr(data, "split"):  # PreparedCorpus
        try:
            valid = data.split("valid")
        except TransformerXLError:
            valid = None
        return TrainData(train=data.split("train"), valid=valid, vocab=vocab if vocab is not None else data.vocab,
                         train_sentences=data.sentences("train"))
    raise TransformerXLError(f"cannot train on {type(data).__name__}; pass a prepared data directory")
