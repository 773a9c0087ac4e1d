"""Corpora, vocabularies, cached encoding and stream iterators."""

from .cache import PreparedCorpus, load_prepared, prepare_corpus
from .corpora import CORPORA, CorpusSpec, Source, resolve_corpus
from .streams import (
    OrderedStreams,
    RolledStreams,
    Segment,
    ShuffledSentenceStreams,
    VariableLengthStreams,
    make_train_streams,
)
from .vocab import DataError, Vocabulary

__all__ = [
    "CORPORA",
    "CorpusSpec",
    "DataError",
    "OrderedStreams",
    "PreparedCorpus",
    "RolledStreams",
    "Segment",
    "ShuffledSentenceStreams",
    "Source",
    "VariableLengthStreams",
    "Vocabulary",
    "load_prepared",
    "make_train_streams",
    "prepare_corpus",
    "resolve_corpus",
]
