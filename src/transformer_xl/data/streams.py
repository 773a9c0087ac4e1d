"""Stream iterators: a token array cut into B contiguous streams, read as segments of T tokens.

Training reads its split through :func:`make_train_streams` (``train.streams``): ordered streams, the
paper's variable-length segments, or One Billion Word's shuffled sentences, each resumable exactly.

Stream b of the global batch holds tokens [b*S, (b+1)*S) where S = len(tokens) // B (the tail that does
not fill every stream is dropped, as the original). Segment s gives x = stream[s*T - ext : s*T + T] and
y = stream[s*T + 1 : s*T + T + 1], so consecutive segments continue each other and the memory carried
by the model stays valid. In distributed training rank r of W owns the whole streams
[r*B/W, (r+1)*B/W): together the ranks cover the global batch exactly once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import TRAIN_STREAMS, TransformerXLError

__all__ = ["OrderedStreams", "RolledStreams", "Segment", "ShuffledSentenceStreams", "TrainStreams",
           "VariableLengthStreams", "make_train_streams", "train_stream_kind"]


@dataclass(frozen=True)
class Segment:
    x: Tensor  # (B_local, ext + T) inputs
    y: Tensor  # (B_local, T) targets: the next token of each of the last T inputs
    index: int  # segment number within the epoch


class _ResumableSegments:
    """Iteration and exact-resume state shared by the stream iterators.

    Subclasses provide ``__len__`` (segments per epoch) and ``segment(index)``, set ``position`` and
    ``epoch`` to 0, and list in ``_resume_keys`` the settings a saved state must agree with.
    """

    kind: str  # the train.streams value this iterator implements
    _resume_keys: tuple[str, ...] = ("batch_size", "seg_len", "world_size")
    position: int
    epoch: int

    def __len__(self) -> int:  # pragma: no cover - every subclass defines it
        raise TypeError(f"{type(self).__name__} must define __len__")

    def segment(self, index: int) -> Segment:  # pragma: no cover - every subclass defines it
        raise TypeError(f"{type(self).__name__} must define segment()")

    def __iter__(self) -> Iterator[Segment]:
        while self.position < len(self):
            segment = self.segment(self.position)
            self.position += 1
            yield segment
        self.position = 0
        self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "epoch": self.epoch,
                **{key: getattr(self, key) for key in self._resume_keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved_kind = state.get("kind", "ordered")  # states written before variable and sentence streams
        if saved_kind != self.kind:
            raise TransformerXLError(f"cannot resume the data stream: the run was trained on {saved_kind} "
                                     f"streams, now {self.kind} (set train.streams={saved_kind})")
        for key in self._resume_keys:
            if state.get(key) != getattr(self, key):
                raise TransformerXLError(
                    f"cannot resume the data stream: {key} was {state.get(key)}, now {getattr(self, key)}")
        self.position, self.epoch = int(state["position"]), int(state["epoch"])


class OrderedStreams(_ResumableSegments):
    """Ordered, resumable (x, y) segments over B parallel streams of one token array.

    ``state_dict`` / ``load_state_dict`` record the next segment, so a resumed run continues exactly.
    Iterating runs from the current position to the end of the epoch, then starts the next epoch.
    """

    kind = "ordered"

    def __init__(self, tokens: np.ndarray | Tensor, *, batch_size: int, seg_len: int, ext_len: int = 0,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        if batch_size <= 0 or seg_len <= 0 or ext_len < 0:
            raise TransformerXLError(
                f"need batch_size > 0, seg_len > 0, ext_len >= 0; got {batch_size}, {seg_len}, {ext_len}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise TransformerXLError(f"rank {rank} out of range for world size {world_size}")
        if batch_size % world_size:
            raise TransformerXLError(
                f"global batch size {batch_size} must be divisible by the number of processes {world_size}")
        stream_len = len(tokens) // batch_size
        if stream_len < 2:
            raise TransformerXLError(
                f"{len(tokens)} tokens cannot fill {batch_size} streams of at least 2 tokens")
        self.batch_size, self.seg_len, self.ext_len = batch_size, seg_len, ext_len
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.data = self._cut(np.asarray(tokens), offset=0, stream_len=stream_len)
        self.position = 0  # next segment to yield within the epoch
        self.epoch = 0

    def _cut(self, tokens: np.ndarray, *, offset: int, stream_len: int) -> Tensor:
        """This rank's streams (B_local, S) of ``tokens`` read from ``offset`` on, wrapping around the end."""
        per_rank = self.batch_size // self.world_size
        start, count = (offset + self.rank * per_rank * stream_len) % len(tokens), per_rank * stream_len
        part = tokens[start:start + count]
        if len(part) < count:  # wrapped: the corpus' end is followed by its beginning
            part = np.concatenate([part, tokens[:count - len(part)]])
        return torch.from_numpy(np.ascontiguousarray(part).astype(np.int64)).view(per_rank, stream_len)

    @property
    def stream_len(self) -> int:
        return self.data.shape[1]

    def __len__(self) -> int:
        """Segments per epoch (the last one may be shorter than seg_len)."""
        return -(-(self.stream_len - 1) // self.seg_len)

    def segment(self, index: int) -> Segment:
        start = index * self.seg_len
        end = min(start + self.seg_len, self.stream_len - 1)
        if not 0 <= start < end:
            raise IndexError(f"segment {index} out of range (epoch has {len(self)})")
        begin = max(0, start - self.ext_len)
        x = self.data[:, begin:end]  # (B_local, ext + T)
        y = self.data[:, start + 1:end + 1]  # (B_local, T)
        return Segment(x.to(self.device), y.to(self.device), index)


# --------------------------------------------------------------------------------------------------
# Streams rotated every epoch, the paper's variable-length segments and One Billion Word's sentence streams.


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    # Same draw on every rank (they must agree on segment boundaries) and reproducible on resume.
    return np.random.default_rng([seed, epoch])


class RolledStreams(OrderedStreams):
    """Ordered streams over the corpus rotated by a random offset at the start of every epoch after the first.

    In ordered streams every epoch cuts the same segments, puts each token in the same batch row and gives
    it the same memory, so a run of many epochs over a small corpus can learn those exact contexts by heart.
    Here epoch e > 0 reads the corpus from a random offset (wrapping around its end): stream starts, segment
    boundaries and the memory before each token change from epoch to epoch, and the tail that does not fill
    the streams is a different one each time (the idea of NVIDIA's per-epoch roll). Epoch 0 is exactly the
    ordered streams. The offset of an epoch is drawn from ``(seed, epoch)``: every rank rotates alike and a
    resumed run continues at the exact next segment.
    """

    kind = "rolled"
    _resume_keys = OrderedStreams._resume_keys + ("seed",)

    def __init__(self, tokens: np.ndarray | Tensor, *, batch_size: int, seg_len: int, ext_len: int = 0,
                 seed: int = 0, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(tokens, batch_size=batch_size, seg_len=seg_len, ext_len=ext_len, rank=rank,
                         world_size=world_size, device=device)
        self.tokens, self.seed = np.asarray(tokens), seed
        self._data_epoch = 0

    def offset(self, epoch: int) -> int:
        """Where epoch ``epoch`` starts reading the corpus."""
        return 0 if epoch == 0 else int(_epoch_rng(self.seed, epoch).integers(len(self.tokens)))

    def segment(self, index: int) -> Segment:
        if self._data_epoch != self.epoch:  # a new epoch (or a resumed one): rotate once
            self.data = self._cut(self.tokens, offset=self.offset(self.epoch), stream_len=self.stream_len)
            self._data_epoch = self.epoch
        return super().segment(index)


class VariableLengthStreams(OrderedStreams):
    """Ordered streams whose segment length varies, as the original's ``get_varlen_iter``.

    Each segment's length is drawn around ``seg_len`` (with probability 0.05 around ``seg_len / 2``) from a
    normal distribution of ``std``, truncated to an integer and clipped to [``min_len``,
    ``seg_len + max_deviation * std``]; the defaults are the original's (std 5, min_len 5, max_deviation 3).
    Segments still continue each other, so memory stays valid. The lengths of an epoch are drawn from
    ``(seed, epoch)``: every rank cuts the same boundaries and a resumed run continues at the exact next
    segment. As in the original, the learning rate does not depend on the segment's length and the loss is
    the mean over the segment's tokens.
    """

    kind = "varlen"
    _resume_keys = OrderedStreams._resume_keys + ("seed", "std", "min_len", "max_deviation")

    def __init__(self, tokens: np.ndarray | Tensor, *, batch_size: int, seg_len: int, ext_len: int = 0,
                 std: float = 5.0, min_len: int = 5, max_deviation: float = 3.0, seed: int = 0,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(tokens, batch_size=batch_size, seg_len=seg_len, ext_len=ext_len, rank=rank,
                         world_size=world_size, device=device)
        if std < 0 or min_len <= 0 or max_deviation < 0:
            raise TransformerXLError(
                f"need std >= 0, min_len > 0, max_deviation >= 0; got {std}, {min_len}, {max_deviation}")
        self.std, self.min_len, self.max_deviation, self.seed = std, min_len, max_deviation, seed
        self._bounds_epoch = -1
        self._starts = np.zeros(0, dtype=np.int64)

    def _bounds(self) -> np.ndarray:
        """Start of every segment of the current epoch, plus the end (length len(self) + 1)."""
        if self._bounds_epoch != self.epoch:
            rng = _epoch_rng(self.seed, self.epoch)
            max_len = int(self.seg_len + self.max_deviation * self.std)
            last = self.stream_len - 1  # the final token is only a target
            starts = [0]
            while starts[-1] < last:
                mean = self.seg_len if rng.random() < 0.95 else self.seg_len / 2.0
                length = min(max_len, max(self.min_len, int(rng.normal(mean, self.std))))
                starts.append(min(last, starts[-1] + length))
            self._starts, self._bounds_epoch = np.asarray(starts, dtype=np.int64), self.epoch
        return self._starts

    def __len__(self) -> int:
        return len(self._bounds()) - 1

    def segment(self, index: int) -> Segment:
        bounds = self._bounds()
        if not 0 <= index < len(bounds) - 1:
            raise IndexError(f"segment {index} out of range (epoch has {len(bounds) - 1})")
        start, end = int(bounds[index]), int(bounds[index + 1])
        begin = max(0, start - self.ext_len)
        x = self.data[:, begin:end]  # (B_local, ext + T_i)
        y = self.data[:, start + 1:end + 1]  # (B_local, T_i)
        return Segment(x.to(self.device), y.to(self.device), index)


class ShuffledSentenceStreams(_ResumableSegments):
    """B streams of whole sentences in a shuffled order (One Billion Word, the original's
    ``LMShuffledIterator``): each stream concatenates sentences; every segment gives T (input, target)
    pairs per stream, a sentence's last token being only a target. Streams carry across segments, so the
    memory stays valid within a stream. The epoch ends when the sentences run out for some stream.

    ``tokens`` holds every sentence back to back; ``starts`` is the offset of each sentence (from
    ``PreparedCorpus.sentences(split)``). Sentences are dealt to streams in the original's order: whichever
    stream runs out first takes the next one. The order is drawn from ``(seed, epoch)`` (no shuffle for
    evaluation: ``shuffle=False``); rank r of W owns streams [r*B/W, (r+1)*B/W) of the same global deal.
    """

    kind = "sentences"
    _resume_keys = _ResumableSegments._resume_keys + ("seed", "shuffle")

    def __init__(self, tokens: np.ndarray | Tensor, starts: np.ndarray, *, batch_size: int, seg_len: int,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        if batch_size <= 0 or seg_len <= 0:
            raise TransformerXLError(f"need batch_size > 0 and seg_len > 0; got {batch_size}, {seg_len}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise TransformerXLError(f"rank {rank} out of range for world size {world_size}")
        if batch_size % world_size:
            raise TransformerXLError(
                f"global batch size {batch_size} must be divisible by the number of processes {world_size}")
        self.tokens = tokens.numpy() if isinstance(tokens, Tensor) else tokens
        starts = np.asarray(starts, dtype=np.int64)
        if len(starts) == 0 or np.any(np.diff(starts) <= 0) or starts[0] != 0 or starts[-1] >= len(self.tokens):
            raise TransformerXLError("sentence starts must begin at 0, increase strictly and stay within the "
                                     "tokens; use PreparedCorpus.sentences(split) of a sentence-level corpus")
        self.starts = starts
        self.lengths = np.diff(np.append(starts, len(self.tokens)))  # tokens per sentence
        self.batch_size, self.seg_len, self.shuffle, self.seed = batch_size, seg_len, shuffle, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.position, self.epoch = 0, 0
        self._deal_epoch = -1

    def _deal(self) -> None:
        """Assign sentences to streams for this epoch, as the original's on-demand filling does."""
        if self._deal_epoch == self.epoch:
            return
        n = len(self.starts)
        order = _epoch_rng(self.seed, self.epoch).permutation(n) if self.shuffle else np.arange(n)
        pairs = np.maximum(self.lengths - 1, 0)  # (input, target) pairs each sentence gives
        T, B = self.seg_len, self.batch_size
        per_stream: list[list[int]] = [[] for _ in range(B)]
        filled = [0] * B
        heap = [(0, b) for b in range(B)]  # (segment in which the stream asks for a sentence, stream)
        for sentence in order.tolist():
            _, b = heapq.heappop(heap)
            per_stream[b].append(sentence)
            filled[b] += int(pairs[sentence])
            heapq.heappush(heap, (filled[b] // T, b))
        n_segments = heap[0][0] if heap else 0  # the first stream left wanting ends the epoch
        first = self.rank * (B // self.world_size)
        self._local = []
        for b in range(first, first + B // self.world_size):
            ids = np.asarray(per_stream[b], dtype=np.int64)
            self._local.append((ids, np.cumsum(pairs[ids]) if len(ids) else np.zeros(0, dtype=np.int64)))
        self._n_segments, self._deal_epoch = n_segments, self.epoch

    def __len__(self) -> int:
        self._deal()
        return self._n_segments

    def segment(self, index: int) -> Segment:
        self._deal()
        if not 0 <= index < self._n_segments:
            raise IndexError(f"segment {index} out of range (epoch has {self._n_segments})")
        pos = np.arange(index * self.seg_len, (index + 1) * self.seg_len)  # (T,) pair positions in the stream
        rows = []
        for ids, ends in self._local:
            j = np.searchsorted(ends, pos, side="right")  # sentence holding each pair
            offset = pos - (ends[j] - np.maximum(self.lengths[ids[j]] - 1, 0))
            rows.append(self.starts[ids[j]] + offset)  # token index of each input
        idx = np.stack(rows)  # (B_local, T)
        x = torch.from_numpy(np.asarray(self.tokens[idx], dtype=np.int64))
        y = torch.from_numpy(np.asarray(self.tokens[idx + 1], dtype=np.int64))
        return Segment(x.to(self.device), y.to(self.device), index)


# --------------------------------------------------------------------------------------------------
# What training reads.

TrainStreams = OrderedStreams | RolledStreams | VariableLengthStreams | ShuffledSentenceStreams


def train_stream_kind(kind: str, *, has_sentences: bool) -> str:
    """The streams ``train.streams=kind`` means for a split: ``auto`` is sentences when the split stores
    sentence starts (a sentence-level corpus: lm1b), else ordered."""
    if kind not in TRAIN_STREAMS:
        raise TransformerXLError(f"train.streams must be one of {TRAIN_STREAMS}, got {kind!r}")
    if kind == "auto":
        return "sentences" if has_sentences else "ordered"
    if kind == "sentences" and not has_sentences:
        raise TransformerXLError("train.streams=sentences needs the sentence starts of a sentence-level corpus "
                                 "(txl prepare --corpus lm1b); use ordered or varlen for this data")
    return kind


def make_train_streams(kind: str, tokens: np.ndarray | Tensor, *, sentences: np.ndarray | None = None,
                       batch_size: int, seg_len: int, ext_len: int = 0, seed: int = 0, rank: int = 0,
                       world_size: int = 1, device: torch.device | str = "cpu") -> TrainStreams:
    """The training streams of ``train.streams=kind`` over ``tokens`` (``sentences``: the split's sentence
    starts, from ``PreparedCorpus.sentences("train")``, or None).

    - ``ordered``: B contiguous streams read in segments of ``seg_len`` (the original's default);
    - ``rolled``: ordered streams over the corpus rotated by a random offset every epoch after the first;
    - ``varlen``: the same streams in segments of variable length (the original's ``--varlen``);
    - ``sentences``: whole sentences dealt to B streams in an order shuffled every epoch (the original's
      One Billion Word training);
    - ``auto``: sentences when ``sentences`` is given, else ordered.

    ``seed`` draws the rotations, the variable lengths and the sentence order; every rank cuts the same
    global batch and keeps its own streams.
    """
    kind = train_stream_kind(kind, has_sentences=sentences is not None)
    common = dict(batch_size=batch_size, seg_len=seg_len, rank=rank, world_size=world_size, device=device)
    if kind == "sentences":
        if ext_len:
            raise TransformerXLError(f"train.streams=sentences does not feed extended context "
                                     f"(model.ext_len={ext_len}); set model.ext_len=0 or use ordered streams")
        return ShuffledSentenceStreams(tokens, sentences, shuffle=True, seed=seed, **common)
    if kind == "varlen":
        return VariableLengthStreams(tokens, ext_len=ext_len, seed=seed, **common)
    if kind == "rolled":
        return RolledStreams(tokens, ext_len=ext_len, seed=seed, **common)
    return OrderedStreams(tokens, ext_len=ext_len, **common)
