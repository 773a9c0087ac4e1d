"""Segment-level recurrence: the memory is a value passed in and returned, never module state.

Memory is a tuple with one tensor per layer input, each (B, M, C). M = 0 means empty: the first
segment sees no memory at all (not a zero-filled one, which would bias attention toward zeros).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Memory = tuple[Tensor, ...]


def memory_length(mems: Sequence[Tensor] | None) -> int:
    """M, the number of cached positions (0 for no memory)."""
    return 0 if not mems else int(mems[0].shape[1])


def _window(old_len: int, qlen: int, *, mem_len: int, ext_len: int) -> tuple[int, int]:
    """[start, end) of [old memory ; this segment] that becomes the new memory."""
    end = old_len + max(0, qlen - ext_len)  # the last ext_len positions are fed again next segment
    return max(0, end - mem_len), end


def update_memory(hiddens: Sequence[Tensor], mems: Sequence[Tensor] | None, *,
                  mem_len: int, ext_len: int = 0) -> Memory:
    """New memory: per layer, the last ``mem_len`` states of [old memory ; this segment], detached.

    ``hiddens`` are the inputs of each layer for this segment, (B, T, C). The last ``ext_len``
    positions of the segment are left out: they are fed again as extended context of the next segment.
    Cropping and detaching happen here and only here (no gradient flows into an earlier segment).
    """
    if mems and len(mems) != len(hiddens):
        raise ValueError(f"memory has {len(mems)} layers, the model {len(hiddens)}")
    old_len = memory_length(mems)
    with torch.no_grad():
        new_mems = []
        for i, hidden in enumerate(hiddens):
            start, end = _window(old_len, hidden.shape[1], mem_len=mem_len, ext_len=ext_len)
            full = hidden if not mems else torch.cat([mems[i], hidden], dim=1)  # (B, M + T, C)
            new_mems.append(full[:, start:end].detach())  # (B, min(mem_len, M + T - ext_len), C)
    return tuple(new_mems)


KVCache = tuple[tuple[Tensor, Tensor], ...]


def update_kv_cache(kvs: Sequence[tuple[Tensor, Tensor]], *, old_len: int, qlen: int, mem_len: int,
                    ext_len: int = 0) -> KVCache:
    """The keys and values (B, H, M', D) of exactly the positions :func:`update_memory` keeps.

    ``kvs`` hold each layer's keys and values over [old memory ; this segment] (B, H, M + T, D).
    """
    start, end = _window(old_len, qlen, mem_len=mem_len, ext_len=ext_len)
    return tuple((k[:, :, start:end].detach(), v[:, :, start:end].detach()) for k, v in kvs)
