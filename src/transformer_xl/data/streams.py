"""Stream iterators: a token array cut into B contiguous streams, read as segments of T tokens.

Stream b of the global batch holds tokens [b*S, (b+1)*S) where S = len(tokens) // B (the tail that does
not fill every stream is dropped, as the original). Segment s gives x = stream[s*T - ext : s*T + T] and
y = stream[s*T + 1 : s*T + T + 1], so consecutive segments continue each other and the memory carried
by the model stays valid. In distributed training rank r of W owns the whole streams
[r*B/W, (r+1)*B/W): together the ranks cover the global batch exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import TransformerXLError


@dataclass(frozen=True)
class Segment:
    x: Tensor  # (B_local, ext + T) inputs
    y: Tensor  # (B_local, T) targets: the next token of each of the last T inputs
    index: int  # segment number within the epoch


class OrderedStreams:
    """Ordered, resumable (x, y) segments over B parallel streams of one token array.

    ``state_dict`` / ``load_state_dict`` record the next segment, so a resumed run continues exactly.
    Iterating runs from the current position to the end of the epoch, then starts the next epoch.
    """

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
        per_rank = batch_size // world_size
        first = rank * per_rank
        data = np.asarray(tokens[: stream_len * batch_size]).reshape(batch_size, stream_len)  # (B, S)
        self.data = torch.from_numpy(np.ascontiguousarray(data[first:first + per_rank]).astype(np.int64))
        self.batch_size, self.seg_len, self.ext_len = batch_size, seg_len, ext_len
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.position = 0  # next segment to yield within the epoch
        self.epoch = 0

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

    def __iter__(self) -> Iterator[Segment]:
        while self.position < len(self):
            segment = self.segment(self.position)
            self.position += 1
            yield segment
        self.position = 0
        self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "epoch": self.epoch, "batch_size": self.batch_size,
                "seg_len": self.seg_len, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("batch_size", "seg_len", "world_size"):
            if state.get(key) != getattr(self, key):
                raise TransformerXLError(
                    f"cannot resume the data stream: {key} was {state.get(key)}, now {getattr(self, key)}")
        self.position, self.epoch = int(state["position"]), int(state["epoch"])
