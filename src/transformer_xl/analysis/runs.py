"""Analyses over checkpoints and prepared data: load a checkpoint for a corpus, and the RECL of a group.

    from transformer_xl.analysis import recl_of_checkpoints
    group = recl_of_checkpoints(["runs/xl", "runs/vanilla"], "data/wt2", split="valid", max_tokens=20000,
                                contexts=[100, 200, 300, 400], cache_dir="analysis/cache")
    print(group.result.table())

Each checkpoint runs with the span :func:`transformer_xl.runtime.resolve_span` gives it (the arguments,
then its run's saved evaluation settings, then its training span); the context analysis then sets the
memory length to each context c.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import Span, TransformerXLError
from ..runtime import LoadedCheckpoint, load_checkpoint, resolve_device, resolve_span
from .context import ContextLosses, context_losses
from .recl import DEFAULT_RATIOS, DEFAULT_THRESHOLD, RECLResult, recl
from .report import context_grid

__all__ = ["GroupRECL", "check_vocabulary", "default_name", "load_for_data", "open_data", "recl_of_checkpoints",
           "split_tokens"]


def check_vocabulary(checkpoint_vocab: Any, data_vocab: Any, n_token: int, *, checkpoint: Any, data: Any) -> None:
    """A checkpoint scores only data encoded with its own vocabulary."""
    if checkpoint_vocab is not None and data_vocab is not None and checkpoint_vocab != data_vocab:
        raise TransformerXLError(
            f"{checkpoint} was trained with another vocabulary than {data} ({checkpoint_vocab.kind}, "
            f"{len(checkpoint_vocab)} symbols vs {data_vocab.kind}, {len(data_vocab)}); prepare the data with "
            f"`txl prepare ... --vocab {checkpoint}/vocab.json`")
    if checkpoint_vocab is None and data_vocab is not None:
        # Converted models (e.g. `txl convert --from tf` without --vocab) keep another implementation's ids:
        # equal sizes prove nothing, so say that the ids are taken on trust.
        print(f"note: {checkpoint} has no vocabulary; its token ids are assumed to be those of {data} "
              "(convert it with --vocab to have this checked)", file=sys.stderr, flush=True)
    if data_vocab is not None and len(data_vocab) != n_token:
        raise TransformerXLError(f"{data} has {len(data_vocab)} symbols but the model {checkpoint} predicts "
                                 f"{n_token}: the data was prepared with another vocabulary")


def open_data(data: Any) -> Any:
    """A prepared corpus (transformer_xl.data.PreparedCorpus) from itself or its directory."""
    from ..data.cache import PreparedCorpus, load_prepared

    return data if isinstance(data, PreparedCorpus) else load_prepared(data)


def split_tokens(prepared: Any, split: str = "test", max_tokens: int = 0) -> np.ndarray:
    """The ids of a split (its first ``max_tokens`` + 1 when ``max_tokens`` > 0: that many targets)."""
    if max_tokens < 0:
        raise TransformerXLError(f"max_tokens must be >= 0, got {max_tokens}")
    tokens = prepared.split(split)
    return np.asarray(tokens[:max_tokens + 1] if max_tokens else tokens)


def load_for_data(path: str | Path, prepared: Any, *, device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """A checkpoint (or run directory) ready to score ``prepared``, whose vocabulary must be its own."""
    loaded = load_checkpoint(path, device=device)
    check_vocabulary(loaded.vocab, prepared.vocab, loaded.model.config.n_token, checkpoint=loaded.path,
                     data=prepared.path)
    return loaded


def default_name(path: str | Path) -> str:
    """A row name for a checkpoint: its run directory's name (``runs/xl/best`` -> ``xl``)."""
    p = Path(path).resolve()
    return p.parent.name if p.name in ("best", "last") else p.name


@dataclass
class GroupRECL:
    """The RECL of a group of checkpoints, with what it was computed from."""

    names: list[str]
    spans: dict[str, Span]  # the span each checkpoint ran with (mem_len and same_length set per context)
    contexts: list[int]
    n_tokens: int  # tokens scored at every context
    curves: list[ContextLosses]
    result: RECLResult

    def to_dict(self) -> dict[str, Any]:
        data = self.result.to_dict()
        return {"recl": data["recl"], "capped": data["capped"], "contexts": self.contexts, "n_tokens": self.n_tokens,
                "spans": {name: span.to_dict() for name, span in self.spans.items()}}


def recl_of_checkpoints(checkpoints: Sequence[str | Path], data: Any, *, split: str = "test", max_tokens: int = 0,
                        names: Sequence[str] | None = None, contexts: Sequence[int] | None = None,
                        start: int | None = None, step: int | None = None, max_context: int | None = None,
                        seg_len: int | None = None, clamp_len: int | None = None, batch_size: int = 8,
                        ratios: Sequence[float] = DEFAULT_RATIOS, threshold: float = DEFAULT_THRESHOLD,
                        cache_dir: str | Path | None = None, device: torch.device | str = "cpu",
                        progress: bool = False) -> GroupRECL:
    """Score a split with each checkpoint at every context of the grid and compute the group's RECL.

    ``data``: a prepared directory (or PreparedCorpus) in the checkpoints' vocabulary. The grid is
    ``contexts``, or start, start + step, ..., max_context (see :func:`context_grid`; defaults from the
    smallest training seg_len). ``seg_len`` / ``clamp_len`` override the resolved span of every
    checkpoint. ``cache_dir`` keeps the per-token losses, so reruns and other analyses reuse them.
    """
    if not checkpoints:
        raise TransformerXLError("the group is empty: give at least one checkpoint")
    names = list(names) if names else [default_name(p) for p in checkpoints]
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise TransformerXLError(f"--names needs one distinct name per checkpoint; got {names}")
    device = resolve_device(device) if isinstance(device, str) else device
    prepared = open_data(data)
    tokens = split_tokens(prepared, split, max_tokens)
    loaded = [load_for_data(p, prepared, device=device) for p in checkpoints]
    grid = context_grid([c.model.config.seg_len for c in loaded], contexts=contexts, start=start, step=step,
                        max_context=max_context)
    if len(tokens) - 1 <= grid[-1]:
        raise TransformerXLError(f"{len(tokens) - 1} tokens scored but the longest context is {grid[-1]}: "
                                 "RECL needs tokens that see the whole context; raise --max-tokens")
    spans = {name: resolve_span(c.model.config, c.saved_eval, seg_len=seg_len, clamp_len=clamp_len)
             for name, c in zip(names, loaded)}
    curves = [context_losses(c.model, tokens, grid, span=spans[name], batch_size=batch_size, cache_dir=cache_dir,
                             name=name, device=device, progress=progress)
              for name, c in zip(names, loaded)]
    result = recl({c.name: c.as_mapping() for c in curves}, ratios=ratios, threshold=threshold)
    return GroupRECL(names=names, spans=spans, contexts=grid, n_tokens=len(tokens) - 1, curves=curves,
                     result=result)
