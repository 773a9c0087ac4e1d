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


def update_memory(hiddens: Sequence[Tensor], mems: Sequence[Tensor] | None, *,
                  mem_len: int, ext_len: int = 0) -> Memory:
    """New memory: per layer, the last ``mem_len`` states of [old memory ; this segment], detached.

    ``hiddens`` are the inputs of each layer for this segment, (B, T, C). The last ``ext_len``
    positions of the segment are left out: they are fed again as extended context of the next segment.
    Cropping and detaching happen here and only here (no gradient flows into an earlier segment).
    """
    if mems and len(mems) != len(hiddens):
        raise ValueError(f"memory has {len(mems)} layers, the model {len(hiddens)}")
    with torch.no_grad():
        new_mems = []
        for i, hidden in enumerate(hiddens):
            keep = hidden[:, : max(0, hidden.shape[1] - ext_len)]  # (B, T - ext_len, C)
            full = keep if not mems else torch.cat([mems[i], keep], dim=1)  # (B, M + T - ext_len, C)
            start = max(0, full.shape[1] - mem_len)
            new_mems.append(full[:, start:].detach())  # (B, min(mem_len, M + T - ext_len), C)
    return tuple(new_mems)
