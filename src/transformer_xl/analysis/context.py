"""Per-token loss as a function of the available context, and loss by position inside a segment.

Loss at context c (the l_i(c, t) of Appendix C): every token scored when it sees exactly the c tokens
before it (fewer only for the first c tokens of the corpus), in corpus order.

* ``memory`` (Transformer-XL and any model with relative positions): cached evaluation with
  ``same_length`` and ``mem_len = c``, so every query attends to exactly c keys (itself included) and
  the predicted token sees c tokens; the memory carries what those c states learned from further back,
  as the paper measures it. The rest of the span (segment length, clamp) is an argument: the span a
  command resolved for the checkpoint (:func:`transformer_xl.runtime.resolve_span`), by default the
  model's training span; segments are at most c tokens long.
* ``window`` (the vanilla Al-Rfou / absolute-position model): a fresh window of the c tokens before
  each target, one forward per token (the paper's sliding-window evaluation). A learned absolute table
  has no rows beyond the training window, so the window is capped there: the model's loss at a longer c
  is its loss at its own window, and its RECL cannot exceed that window (the paper's 128 for its
  vanilla Transformer).

Results are cached on disk as ``.npy`` + JSON, keyed by a fingerprint of the weights, of the tokens and
of the evaluation settings, so RECL, plots and reports reuse one pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..config import Span, TransformerXLError
from ..evaluation import evaluate, sliding_window_evaluate
from ..model import TransformerXLLM
from ..runner import SegmentRunner, as_token_tensor

__all__ = ["CONTEXT_METHODS", "ContextLosses", "PositionLosses", "context_losses", "context_method", "context_span",
           "fingerprint_model", "fingerprint_tokens", "loss_by_position", "window_cap"]

CONTEXT_METHODS = ("auto", "memory", "window")
CACHE_VERSION = 2  # 2: the key holds the whole span (clamp_len too)


# Fingerprints ---------------------------------------------------------------------------------------
def fingerprint_model(model: TransformerXLLM) -> str:
    """sha256 of the config and every weight: the same checkpoint gives the same key wherever it lives."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()[:20]


def fingerprint_tokens(tokens: np.ndarray | Tensor) -> str:
    array = np.ascontiguousarray(np.asarray(tokens).astype(np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()[:20]


# Methods -------------------------------------------------------------------------------------------
def context_method(model: TransformerXLLM) -> str:
    """``window`` for the vanilla model (absolute positions, trained without memory), else ``memory``."""
    config = model.config
    if config.attn_type in ("al-rfou", "vaswani") and config.mem_len == 0:
        return "window"
    return "memory"


def window_cap(model: TransformerXLLM) -> int | None:
    """Longest window a model can be evaluated at: the learned Al-Rfou table ends at its training length."""
    if model.config.attn_type == "al-rfou":
        return model.config.max_klen
    return None


@dataclass
class ContextLosses:
    """l(c, t) of one model: ``losses[k]`` holds the per-token NLL at ``contexts[k]`` in corpus order
    (the loss of tokens[1], tokens[2], ...)."""

    name: str
    method: str
    contexts: list[int]
    losses: np.ndarray  # (len(contexts), n_tokens) float32
    effective: list[int]  # context actually used (the window cap for the vanilla model)

    def at(self, context: int) -> np.ndarray:
        return self.losses[self.contexts.index(context)]

    def as_mapping(self) -> dict[int, np.ndarray]:
        return {c: self.losses[k] for k, c in enumerate(self.contexts)}

    def mean(self) -> dict[int, float]:
        return {c: float(self.losses[k].astype(np.float64).mean()) for k, c in enumerate(self.contexts)}


def context_span(base: Span, context: int) -> Span:
    """The span that gives every token exactly ``context`` tokens of context with the memory method:
    ``mem_len = c`` with ``same_length``, segments of at most c tokens (at least 1), ``base``'s clamp."""
    return base.replace(seg_len=max(1, min(base.seg_len, context or 1)), mem_len=context, same_length=True)


def _one_context(model: TransformerXLLM, data: Tensor, *, context: int, method: str, span: Span,
                 batch_size: int, max_tokens: int, device: torch.device | None, progress: bool) -> np.ndarray:
    if method == "window":
        if context == 0:
            raise TransformerXLError("the window method needs a context of at least 1 token")
        res = sliding_window_evaluate(model, data, window=context, batch_size=batch_size, max_tokens=max_tokens,
                                      device=device, return_per_token=True, progress=progress)
    else:
        # warmup c gives the first token of each stream its full context too
        res = evaluate(model, data, span=span, batch_size=batch_size, warmup=context, max_tokens=max_tokens,
                       device=device, return_per_token=True, progress=progress)
    assert res.per_token is not None
    return res.per_token.astype(np.float32)


def context_losses(model: TransformerXLLM, tokens: np.ndarray | Tensor, contexts: Sequence[int], *,
                   span: Span | None = None, method: str = "auto", batch_size: int = 8, max_tokens: int = 0,
                   cache_dir: str | Path | None = None, name: str | None = None,
                   device: torch.device | str | None = None, progress: bool = False) -> ContextLosses:
    """Per-token losses of ``tokens[1:]`` at every context length in ``contexts`` (see the module doc).

    ``span``: the span the memory method starts from (default: the model's training span); at context c
    it runs :func:`context_span` (``mem_len`` c, ``same_length``, segments of min(seg_len, c) tokens).
    ``cache_dir`` stores each (model, tokens, c, settings) result once.
    """
    if method not in CONTEXT_METHODS:
        raise TransformerXLError(f"method must be one of {CONTEXT_METHODS}, got {method!r}")
    contexts = [int(c) for c in contexts]
    if not contexts or any(c < 0 for c in contexts):
        raise TransformerXLError(f"contexts must be non-negative token counts, got {contexts}")
    method = context_method(model) if method == "auto" else method
    data = as_token_tensor(tokens)
    dev = torch.device(device) if device is not None else None
    cap = window_cap(model) if method == "window" else None
    cache = Path(cache_dir) if cache_dir is not None else None
    key_model = fingerprint_model(model) if cache is not None else ""
    key_data = fingerprint_tokens(data) if cache is not None else ""

    base = span if span is not None else model.config.train_span
    rows, effective = [], []
    for c in contexts:
        c_eff = min(c, cap) if cap is not None else c
        run_span = context_span(base, c_eff)
        settings = {"version": CACHE_VERSION, "model": key_model, "tokens": key_data, "context": c_eff,
                    "method": method, "span": run_span.to_dict() if method == "memory" else None,
                    "batch_size": batch_size, "max_tokens": max_tokens}
        path = None
        if cache is not None:
            key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
            path = cache / f"losses-{key}.npy"
            if path.exists() and path.with_suffix(".json").exists():
                rows.append(np.load(path, allow_pickle=False))
                effective.append(c_eff)
                continue
        row = _one_context(model, data, context=c_eff, method=method, span=run_span, batch_size=batch_size,
                           max_tokens=max_tokens, device=dev, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, row, allow_pickle=False)
            tmp.replace(path)
            path.with_suffix(".json").write_text(json.dumps({**settings, "name": name}, indent=1) + "\n",
                                                 encoding="utf-8")
        rows.append(row)
        effective.append(c_eff)
    return ContextLosses(name=name or model.config.attn_type, method=method, contexts=contexts,
                         losses=np.stack(rows), effective=effective)


# Loss by position inside the segment (context fragmentation) -----------------------------------------
@dataclass
class PositionLosses:
    """Mean loss at each position 0..T-1 of a segment, with and without the memory of earlier segments."""

    seg_len: int
    mem_len: int
    with_memory: np.ndarray  # (T,)
    without_memory: np.ndarray  # (T,)
    n_segments: int  # segments averaged per position (times the batch)
    clamp_len: int = -1  # the rest of the span the memory pass ran with
    same_length: bool = False

    @property
    def span(self) -> Span:
        """The span of the pass with memory (the pass without it uses mem_len 0, same_length off)."""
        return Span(seg_len=self.seg_len, mem_len=self.mem_len, clamp_len=self.clamp_len,
                    same_length=self.same_length)

    def to_dict(self) -> dict[str, Any]:
        return {"seg_len": self.seg_len, "mem_len": self.mem_len, "clamp_len": self.clamp_len,
                "same_length": self.same_length, "n_segments": self.n_segments,
                "with_memory": [float(v) for v in self.with_memory],
                "without_memory": [float(v) for v in self.without_memory]}

    def to_csv(self) -> str:
        lines = ["position,with_memory,without_memory"]
        lines += [f"{i},{a:.6f},{b:.6f}" for i, (a, b) in enumerate(zip(self.with_memory, self.without_memory))]
        return "\n".join(lines) + "\n"


@torch.no_grad()
def loss_by_position(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, span: Span | None = None,
                     batch_size: int = 8, max_tokens: int = 0,
                     device: torch.device | str | None = None) -> PositionLosses:
    """Cut ``tokens`` into ``batch_size`` streams of whole segments of ``span.seg_len`` tokens and average
    the loss at each position of the segment: once carrying memory across segments with ``span`` (XL;
    default: the model's training span), once restarting at every segment (mem_len 0: the fixed-context
    vanilla setting, where position 0 is predicted almost blind)."""
    span = span if span is not None else model.config.train_span
    seg = span.seg_len
    if batch_size <= 0:
        raise TransformerXLError(f"need batch_size > 0, got {batch_size}")
    data = as_token_tensor(tokens, max_tokens)
    n_seg = (len(data) - 1) // (batch_size * seg)
    if n_seg < 1:
        raise TransformerXLError(f"{len(data)} tokens are too few for {batch_size} streams of one {seg}-token "
                                 "segment: lower --batch-size or --seg-len")
    length = n_seg * seg
    x = torch.stack([data[b * length:(b + 1) * length] for b in range(batch_size)])  # (B, n_seg * T)
    y = torch.stack([data[b * length + 1:(b + 1) * length + 1] for b in range(batch_size)])  # (B, n_seg * T)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    was_training = model.training
    model.eval()
    spans = {True: span, False: span.replace(mem_len=0, same_length=False)}
    sums = {True: torch.zeros(seg, dtype=torch.float64), False: torch.zeros(seg, dtype=torch.float64)}
    try:
        for carry, run_span in spans.items():
            runner = SegmentRunner(model, span=run_span)
            for _, _, out in runner.run(x, targets=y):
                sums[carry] += out.loss.double().sum(0).cpu()  # (T,) summed over the batch
    finally:
        model.train(was_training)
    count = n_seg * batch_size
    return PositionLosses(seg_len=seg, mem_len=span.mem_len, with_memory=(sums[True] / count).numpy(),
                          without_memory=(sums[False] / count).numpy(), n_segments=count,
                          clamp_len=span.clamp_len, same_length=span.same_length)
