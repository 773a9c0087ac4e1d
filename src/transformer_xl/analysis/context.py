"""Per-token loss as a function of the available context, and loss by position inside a segment.

Loss at context c (the l_i(c, t) of Appendix C): every token scored when it sees exactly the c tokens
before it (fewer only for the first c tokens of the corpus), in corpus order.

* ``memory`` (Transformer-XL and any model with relative positions): cached evaluation with
  ``same_length`` and ``mem_len = c``, so every query attends to exactly c keys (itself included) and
  the predicted token sees c tokens; the memory carries what those c states learned from further back,
  as the paper measures it.
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

from ..config import TransformerXLError
from ..evaluation import evaluate, sliding_window_evaluate
from ..model import TransformerXLLM

__all__ = ["CONTEXT_METHODS", "ContextLosses", "PositionLosses", "context_losses", "context_method",
           "fingerprint_model", "fingerprint_tokens", "loss_by_position", "window_cap"]

CONTEXT_METHODS = ("auto", "memory", "window")
CACHE_VERSION = 1


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


def _as_long(tokens: np.ndarray | Tensor) -> Tensor:
    # a copy: prepared splits are read-only memory maps, which torch cannot wrap
    return tokens.long() if isinstance(tokens, Tensor) else torch.from_numpy(np.array(tokens, dtype=np.int64))


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


def _one_context(model: TransformerXLLM, data: Tensor, *, context: int, method: str, seg_len: int,
                 batch_size: int, max_tokens: int, device: torch.device | None, progress: bool) -> np.ndarray:
    if method == "window":
        if context == 0:
            raise TransformerXLError("the window method needs a context of at least 1 token")
        res = sliding_window_evaluate(model, data, window=context, batch_size=batch_size, max_tokens=max_tokens,
                                      device=device, return_per_token=True, progress=progress)
    else:
        # same_length with mem_len = c: every query sees exactly c keys once the memory has filled; warmup c
        # gives the first token of each stream its full context too.
        res = evaluate(model, data, batch_size=batch_size, seg_len=seg_len, mem_len=max(context, 0),
                       same_length=True, warmup=context, max_tokens=max_tokens, device=device,
                       return_per_token=True, progress=progress)
    assert res.per_token is not None
    return res.per_token.astype(np.float32)


def context_losses(model: TransformerXLLM, tokens: np.ndarray | Tensor, contexts: Sequence[int], *,
                   method: str = "auto", seg_len: int | None = None, batch_size: int = 8, max_tokens: int = 0,
                   cache_dir: str | Path | None = None, name: str | None = None,
                   device: torch.device | str | None = None, progress: bool = False) -> ContextLosses:
    """Per-token losses of ``tokens[1:]`` at every context length in ``contexts`` (see the module doc).

    ``seg_len`` is the evaluation segment of the memory method (default: min(model seg_len, c) for each
    c, at least 1). ``cache_dir`` stores each (model, tokens, c, settings) result once.
    """
    if method not in CONTEXT_METHODS:
        raise TransformerXLError(f"method must be one of {CONTEXT_METHODS}, got {method!r}")
    contexts = [int(c) for c in contexts]
    if not contexts or any(c < 0 for c in contexts):
        raise TransformerXLError(f"contexts must be non-negative token counts, got {contexts}")
    method = context_method(model) if method == "auto" else method
    data = _as_long(tokens)
    dev = torch.device(device) if device is not None else None
    cap = window_cap(model) if method == "window" else None
    cache = Path(cache_dir) if cache_dir is not None else None
    key_model = fingerprint_model(model) if cache is not None else ""
    key_data = fingerprint_tokens(data) if cache is not None else ""

    rows, effective = [], []
    for c in contexts:
        c_eff = min(c, cap) if cap is not None else c
        seg = seg_len if seg_len is not None else max(1, min(model.config.seg_len, c_eff or 1))
        settings = {"version": CACHE_VERSION, "model": key_model, "tokens": key_data, "context": c_eff,
                    "method": method, "seg_len": seg if method == "memory" else None,
                    "batch_size": batch_size, "max_tokens": max_tokens}
        path = None
        if cache is not None:
            key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
            path = cache / f"losses-{key}.npy"
            if path.exists() and path.with_suffix(".json").exists():
                rows.append(np.load(path, allow_pickle=False))
                effective.append(c_eff)
                continue
        row = _one_context(model, data, context=c_eff, method=method, seg_len=seg, batch_size=batch_size,
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

    def to_dict(self) -> dict[str, Any]:
        return {"seg_len": self.seg_len, "mem_len": self.mem_len, "n_segments": self.n_segments,
                "with_memory": [float(v) for v in self.with_memory],
                "without_memory": [float(v) for v in self.without_memory]}

    def to_csv(self) -> str:
        lines = ["position,with_memory,without_memory"]
        lines += [f"{i},{a:.6f},{b:.6f}" for i, (a, b) in enumerate(zip(self.with_memory, self.without_memory))]
        return "\n".join(lines) + "\n"


@torch.no_grad()
def loss_by_position(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, seg_len: int | None = None,
                     mem_len: int | None = None, batch_size: int = 8, max_tokens: int = 0,
                     device: torch.device | str | None = None) -> PositionLosses:
    """Cut ``tokens`` into ``batch_size`` streams of whole segments and average the loss at each position
    of the segment: once carrying memory across segments (XL), once restarting at every segment (the
    fixed-context vanilla setting, where position 0 is predicted almost blind)."""
    config = model.config
    seg = seg_len or config.seg_len
    mem = config.mem_len if mem_len is None else mem_len
    if seg <= 0 or mem < 0 or batch_size <= 0:
        raise TransformerXLError(f"need seg_len > 0, mem_len >= 0, batch_size > 0; got {seg}, {mem}, {batch_size}")
    data = _as_long(tokens)
    if max_tokens:
        data = data[:max_tokens + 1]
    n_seg = (len(data) - 1) // (batch_size * seg)
    if n_seg < 1:
        raise TransformerXLError(f"{len(data)} tokens are too few for {batch_size} streams of one {seg}-token "
                                 "segment: lower --batch-size or --seg-len")
    span = n_seg * seg
    x = torch.stack([data[b * span:(b + 1) * span] for b in range(batch_size)])  # (B, n_seg * T)
    y = torch.stack([data[b * span + 1:(b + 1) * span + 1] for b in range(batch_size)])  # (B, n_seg * T)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    saved, was_training = model.config, model.training
    model.eval()
    sums = {True: torch.zeros(seg, dtype=torch.float64), False: torch.zeros(seg, dtype=torch.float64)}
    try:
        for carry in (True, False):
            model.config = saved.with_lengths(seg_len=seg, mem_len=mem if carry else 0, ext_len=0,
                                              same_length=False)
            mems = None
            for k in range(n_seg):
                cut = slice(k * seg, (k + 1) * seg)
                out = model(x[:, cut], targets=y[:, cut], mems=mems if carry else None)
                mems = out.mems
                sums[carry] += out.loss.double().sum(0).cpu()  # (T,) summed over the batch
    finally:
        model.config = saved
        model.train(was_training)
    count = n_seg * batch_size
    return PositionLosses(seg_len=seg, mem_len=mem, with_memory=(sums[True] / count).numpy(),
                          without_memory=(sums[False] / count).numpy(), n_segments=count)
