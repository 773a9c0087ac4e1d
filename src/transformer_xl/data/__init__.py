"""Corpora, vocabularies, cached encoding and stream iterators."""

from .streams import OrderedStreams, Segment

__all__ = ["OrderedStreams", "Segment"]
