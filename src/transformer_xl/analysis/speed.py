"""Evaluation speed: Transformer-XL's cached evaluation against the vanilla sliding window (Table 9).

At the same attention length A every prediction sees A tokens in both methods. The vanilla model
recomputes a whole window of A tokens for each new token; Transformer-XL reuses the cached states of
the previous segments and computes only the new segment's queries against [memory ; segment].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import Span, TransformerXLError
from ..evaluation import evaluate, sliding_window_evaluate
from ..model import TransformerXLLM

__all__ = ["SpeedRow", "eval_speed", "speed_table"]


@dataclass
class SpeedRow:
    attn_len: int
    xl_ms_per_token: float
    vanilla_ms_per_token: float
    xl_tokens: int
    vanilla_tokens: int

    @property
    def speedup(self) -> float:
        return self.vanilla_ms_per_token / self.xl_ms_per_token

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def eval_speed(model: TransformerXLLM, tokens: np.ndarray, attn_lens: Sequence[int], *, span: Span | None = None,
               xl_tokens: int = 2048, vanilla_tokens: int = 64, batch_size: int = 1,
               vanilla_batch_size: int = 1) -> list[SpeedRow]:
    """Per-token evaluation time of both methods at each attention length.

    XL: ``span`` (default: the model's training span) with ``mem_len = A`` and ``same_length``, in
    segments of ``span.seg_len``, after A tokens of warm-up (so the memory is full, as in a long
    evaluation). Vanilla: a window of A tokens per predicted token. The
    vanilla timing skips the first A targets (scored together in one pass) so only sliding steps count.
    Batch sizes of 1 reproduce the paper's sequential setting; larger ones show batched throughput.
    """
    device = next(model.parameters()).device
    base = span if span is not None else model.config.train_span
    rows = []
    for attn in attn_lens:
        xl_span = base.replace(mem_len=attn, same_length=True)
        need = attn + max(xl_tokens, vanilla_tokens) + 2
        if len(tokens) < need:
            raise TransformerXLError(f"attention length {attn} needs {need} tokens, the data has {len(tokens)}")
        data = np.asarray(tokens[:need])
        # one warm-up call of each (allocations, kernels) outside the timed region
        evaluate(model, data[:attn + xl_span.seg_len + 1], span=xl_span)
        t_xl = _timed(lambda: evaluate(model, data[:attn + xl_tokens + 1], span=xl_span, batch_size=batch_size,
                                       max_tokens=attn + xl_tokens), device)
        t_head = _timed(lambda: sliding_window_evaluate(model, data[:attn + 1], window=attn,
                                                        batch_size=vanilla_batch_size), device)
        t_van = _timed(lambda: sliding_window_evaluate(model, data[:attn + vanilla_tokens + 1], window=attn,
                                                       batch_size=vanilla_batch_size), device)
        # XL timing includes the unscored warm-up pass over A tokens: subtract its share by timing it
        t_warm = _timed(lambda: evaluate(model, data[:attn + 1], span=xl_span, batch_size=batch_size), device)
        xl = max(t_xl - t_warm, 1e-9) / xl_tokens
        van = max(t_van - t_head, 1e-9) / vanilla_tokens
        rows.append(SpeedRow(attn_len=attn, xl_ms_per_token=1e3 * xl, vanilla_ms_per_token=1e3 * van,
                             xl_tokens=xl_tokens, vanilla_tokens=vanilla_tokens))
    return rows


def speed_table(rows: Sequence[SpeedRow]) -> str:
    """Markdown table like the paper's Table 9."""
    lines = ["| Attn len | XL ms/token | vanilla ms/token | speedup |", "|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.attn_len} | {row.xl_ms_per_token:.3f} | {row.vanilla_ms_per_token:.3f} | "
                     f"{row.speedup:.1f}x |")
    return "\n".join(lines)
