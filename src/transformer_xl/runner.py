"""The one loop that carries memory across segments.

Training, evaluation, scoring, generation and the analyses all feed token streams through the model
segment by segment with the memory of the previous segment; :class:`SegmentRunner` is the only place
that does it. It holds the span of the run (the model's config is never changed), the current
:class:`~transformer_xl.model.Memory` (hidden states and, at inference, the memory's attention keys and
values), and the precision.

    runner = SegmentRunner(model, span=Span(seg_len=64, mem_len=640, clamp_len=400, same_length=True))
    for start, stop, out in runner.run(x, targets=y):    # x, y (B, L): segments of 64, memory carried
        ...
    out = runner.step(x_next, targets=y_next)              # one more segment, same memory
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .config import Span, TransformerXLError
from .model import Memory, TransformerXLLM, XLOutput
from .runtime import autocast

__all__ = ["SegmentRunner", "StreamLayout", "as_token_tensor", "call_span", "layout_streams", "unwrap_model"]


def unwrap_model(model: nn.Module) -> TransformerXLLM:
    """The TransformerXLLM inside DDP and torch.compile wrappers."""
    inner = model
    while not isinstance(inner, TransformerXLLM):
        inner = getattr(inner, "module", None) or getattr(inner, "_orig_mod", None)
        if inner is None:
            raise TransformerXLError(f"expected a TransformerXLLM, got {type(model).__name__}")
    return inner


def call_span(model: nn.Module, span: Span | None = None, *, seg_len: int | None = None,
              mem_len: int | None = None, clamp_len: int | None = None, same_length: bool | None = None) -> Span:
    """The span of a library call: ``span`` (default: the model's training span) with the fields given
    as keyword arguments replacing its own (validated: a bad value is a ConfigError naming the field)."""
    base = span if span is not None else unwrap_model(model).config.train_span
    return base.replace(seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)


class SegmentRunner:
    """Feeds segments of a batch of streams through ``model`` with the memory of the previous ones.

    ``model`` may be wrapped (DDP, torch.compile). The span: ``span.mem_len``, ``clamp_len`` and
    ``same_length`` go to every call; ``span.seg_len`` is the segment length of :meth:`run`; ``None``
    is the model's training span. ``ext_len`` (training only) leaves trailing positions out of the memory.
    ``use_kv_cache=None`` reuses the memory's keys and values whenever that is exact (a relative variant,
    no gradient, eval mode). ``precision``: fp32, bf16 or fp16 autocast.
    """

    def __init__(self, model: nn.Module, *, span: Span | None = None, ext_len: int = 0,
                 use_kv_cache: bool | None = None, precision: str = "fp32", memory: Memory | None = None) -> None:
        self.model = model
        self.core = unwrap_model(model)
        self.span = span if span is not None else self.core.config.train_span
        self.ext_len = ext_len
        self.use_kv_cache = use_kv_cache
        self.precision = precision
        self.memory = memory

    @property
    def memory_length(self) -> int:
        return 0 if self.memory is None else self.memory.length

    def reset(self) -> None:
        """Forget the memory (a new text, or streams that restarted)."""
        self.memory = None

    def _kv_cache(self) -> bool:
        if self.use_kv_cache is not None:
            return self.use_kv_cache
        return self.core.supports_kv_cache and not self.core.training and not torch.is_grad_enabled()

    def step(self, x: Tensor, targets: Tensor | None = None, **forward_kwargs: Any) -> XLOutput:
        """One segment x (B, T) with the current memory; the memory moves on to the returned one.

        ``forward_kwargs``: return_log_probs, return_hidden.
        """
        device = x.device
        with autocast(device, self.precision):
            out = self.model(x, targets=targets, memory=self.memory, mem_len=self.span.mem_len,
                             clamp_len=self.span.clamp_len, same_length=self.span.same_length,
                             ext_len=self.ext_len, use_kv_cache=self._kv_cache(), **forward_kwargs)
        self.memory = out.memory
        return out

    def run(self, x: Tensor, targets: Tensor | None = None, *, progress: bool | None = False,
            desc: str = "segments", **forward_kwargs: Any) -> Iterator[tuple[int, int, XLOutput]]:
        """(start, stop, output) for consecutive segments x[:, start:stop] of ``span.seg_len`` tokens.

        ``progress``: a tqdm bar (None: on a terminal only; False: never).
        """
        from tqdm.auto import tqdm

        length, seg = x.shape[1], self.span.seg_len
        for start in tqdm(range(0, length, seg), desc=desc, unit="seg", leave=False,
                          disable=None if progress is None else not progress):
            stop = min(start + seg, length)
            yield start, stop, self.step(x[:, start:stop], None if targets is None else targets[:, start:stop],
                                         **forward_kwargs)


@dataclass
class StreamLayout:
    """B contiguous streams that tile the targets of a token array, for evaluation.

    Stream b feeds ``x[b]`` and predicts ``y[b]``; ``scored[b]`` is False on padding (the last stream
    may be shorter) and on warm-up positions (context fed before the stream's first scored target).
    ``target_index[b, t]`` is the index into the token array of target ``y[b, t]``.
    """

    x: Tensor  # (B, L) long
    y: Tensor  # (B, L) long
    scored: Tensor  # (B, L) bool
    target_index: Tensor  # (B, L) long
    n_targets: int  # targets of the whole array (all streams of all ranks)
    n_scored: int  # targets these streams score


def layout_streams(tokens: Tensor, *, batch_size: int, warmup: int = 0, rank: int = 0,
                   world_size: int = 1) -> StreamLayout | None:
    """Split the targets tokens[1:] into ``batch_size`` contiguous streams (this rank's share:
    streams rank, rank + W, ...); each stream is preceded by up to ``warmup`` unscored tokens of
    context. None when this rank has no stream."""
    n_targets = len(tokens) - 1
    size = -(-n_targets // batch_size)
    bounds = []  # [first, end) target indices (1-based positions in the token array)
    for b in range(min(batch_size, n_targets)):  # streams past n_targets would be empty
        first, end = 1 + b * size, 1 + min((b + 1) * size, n_targets)
        if first < end:
            bounds.append((first, end))
    mine = bounds[rank::world_size]
    if not mine:
        return None
    starts = [max(0, first - 1 - warmup) for first, _ in mine]
    length = max(end - 1 - c for c, (_, end) in zip(starts, mine))
    x = torch.zeros(len(mine), length, dtype=torch.long)
    y = torch.zeros(len(mine), length, dtype=torch.long)
    scored = torch.zeros(len(mine), length, dtype=torch.bool)
    for i, (c, (first, end)) in enumerate(zip(starts, mine)):
        n = end - 1 - c
        x[i, :n] = tokens[c:end - 1]
        y[i, :n] = tokens[c + 1:end]
        scored[i, first - 1 - c:n] = True
    target_index = torch.arange(length)[None, :] + torch.tensor(starts)[:, None] + 1  # (B, L)
    return StreamLayout(x=x, y=y, scored=scored, target_index=target_index, n_targets=n_targets,
                        n_scored=sum(end - first for first, end in mine))


def as_token_tensor(tokens: np.ndarray | Tensor, max_tokens: int = 0) -> Tensor:
    """The tokens needed to score ``max_tokens`` targets (all when 0) as an int64 tensor (a copy: prepared
    splits are read-only memory maps)."""
    part = tokens[: max_tokens + 1] if max_tokens else tokens
    if isinstance(part, Tensor):
        return part.long()
    return torch.from_numpy(np.array(part, dtype=np.int64))
