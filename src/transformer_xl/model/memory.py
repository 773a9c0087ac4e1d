"""Segment-level recurrence: the memory is one immutable value passed in and returned, never module state.

A :class:`Memory` holds, per layer input, the detached hidden states of the last M positions
(B, M, C). Optionally it also holds those positions' attention keys and values (inference only: they
never change for the relative variants, so they need not be projected again), and a padding count of
leading positions that hold no token (fixed-shape memories of exported programs, batches of prompts of
different lengths). Keeping the three in one value means a kv cache can never be paired with another
memory than its own.

No memory (``None``) means empty: the first segment sees nothing at all, not a zero-filled memory,
which would bias attention toward zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

KeysValues = tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True, eq=False)
class Memory:
    """Per-layer cached states of one batch of streams.

    states: one detached (B, M, C) tensor per layer input (L tensors).
    keys_values: per layer, the attention keys and values (B, H, M, D) of the same positions, or None.
    padding: how many leading positions hold no token, a long tensor () or (B,), or None for none.
    """

    states: tuple[Tensor, ...]
    keys_values: KeysValues | None = None
    padding: Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(self.states))
        if not self.states:
            raise ValueError("a Memory needs one state tensor per layer; use None for no memory")

    @property
    def length(self) -> int:
        """M, the number of cached positions."""
        return int(self.states[0].shape[1])

    @property
    def batch_size(self) -> int:
        return int(self.states[0].shape[0])

    def rows(self, index: slice | Tensor) -> "Memory":
        """The memory of some streams of the batch (a slice or index tensor over B)."""
        kv = None if self.keys_values is None else tuple((k[index], v[index]) for k, v in self.keys_values)
        padding = self.padding
        if padding is not None and padding.dim() == 1:
            padding = padding[index]
        return Memory(tuple(s[index] for s in self.states), kv, padding)

    @staticmethod
    def cat(memories: Sequence["Memory"]) -> "Memory":
        """Streams of several memories of the same length side by side; keys/values when every one has
        them, and the padding of each row (None when no row is padded)."""
        layers = len(memories[0].states)
        states = tuple(torch.cat([m.states[i] for m in memories], dim=0) for i in range(layers))
        kv = None
        if all(m.keys_values is not None for m in memories):
            kv = tuple((torch.cat([m.keys_values[i][0] for m in memories]),
                        torch.cat([m.keys_values[i][1] for m in memories])) for i in range(layers))
        padding = None
        if any(m.padding is not None for m in memories):
            padding = torch.cat([m.row_padding() for m in memories])
        return Memory(states, kv, padding)

    def row_padding(self) -> Tensor:
        """The padding of every row, (B,) long (zeros when there is none)."""
        device = self.states[0].device
        if self.padding is None:
            return torch.zeros(self.batch_size, dtype=torch.long, device=device)
        return self.padding.expand(self.batch_size).to(device=device, dtype=torch.long)

    def left_pad(self, length: int) -> "Memory":
        """This memory grown to ``length`` positions by empty ones in front, counted in ``padding``."""
        pad = length - self.length
        if pad < 0:
            raise ValueError(f"cannot pad a memory of {self.length} positions to {length}")
        if pad == 0:
            return self

        def grow(t: Tensor, dim: int) -> Tensor:  # pad zero positions before t along dim
            shape = list(t.shape)
            shape[dim] = pad
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        kv = None if self.keys_values is None else tuple((grow(k, 2), grow(v, 2)) for k, v in self.keys_values)
        return Memory(tuple(grow(s, 1) for s in self.states), kv, self.row_padding() + pad)


def as_memory(memory: Memory | Sequence[Tensor] | None) -> Memory | None:
    """A Memory from a Memory, plain per-layer tensors (the older API, other implementations), or None.

    An empty sequence or zero-length states mean no memory.
    """
    if memory is None:
        return None
    if not isinstance(memory, Memory):
        memory = tuple(memory)
        if not memory:
            return None
        memory = Memory(memory)
    return memory if memory.length > 0 else None


def _window(old_len: int, qlen: int, *, mem_len: int, ext_len: int) -> tuple[int, int]:
    """[start, end) of [old memory ; this segment] that becomes the new memory."""
    end = old_len + max(0, qlen - ext_len)  # the last ext_len positions are fed again next segment
    return max(0, end - mem_len), end


def update_memory(hiddens: Sequence[Tensor], memory: Memory | None, *, mem_len: int, ext_len: int = 0,
                  keys_values: Sequence[tuple[Tensor, Tensor]] | None = None) -> Memory | None:
    """New memory: per layer, the last ``mem_len`` states of [old memory ; this segment], detached.

    ``hiddens`` are the inputs of each layer for this segment, (B, T, C). The last ``ext_len``
    positions of the segment are left out: they are fed again as extended context of the next segment.
    ``keys_values``, when given, are each layer's keys and values over [old memory ; this segment]
    (B, H, M + T, D); the same positions are kept. Cropping and detaching happen here and only here (no
    gradient flows into an earlier segment). Returns None when nothing is kept (``mem_len`` 0).
    """
    if memory is not None and len(memory.states) != len(hiddens):
        raise ValueError(f"memory has {len(memory.states)} layers, the model {len(hiddens)}")
    old_len = 0 if memory is None else memory.length
    start, end = _window(old_len, hiddens[0].shape[1], mem_len=mem_len, ext_len=ext_len)
    if end <= start:
        return None
    with torch.no_grad():
        states = []
        for i, hidden in enumerate(hiddens):
            full = hidden if memory is None else torch.cat([memory.states[i], hidden], dim=1)  # (B, M + T, C)
            states.append(full[:, start:end].detach())  # (B, min(mem_len, M + T - ext_len), C)
        kv = None
        if keys_values is not None:
            kv = tuple((k[:, :, start:end].detach(), v[:, :, start:end].detach()) for k, v in keys_values)
        padding = None
        if memory is not None and memory.padding is not None:
            padding = (memory.padding - start).clamp(min=0)  # padded slots shift out as tokens come in
    return Memory(tuple(states), kv, padding)
