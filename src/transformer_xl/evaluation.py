"""Perplexity and bits per character, the way the paper measures them.

Evaluation may use another segment length and a much longer memory than training (the paper trains
wt103 at 150/150 and evaluates 64 tokens with 640 of memory). Every token is scored exactly once, in
corpus order: the scored targets are split into B contiguous streams (the last may be shorter and is
padded, with the padding masked out), so nothing is dropped. ``warmup`` feeds up to that many tokens
before each stream's first scored token, unscored, so those tokens see a full memory too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .config import Span, TransformerXLError
from .model import TransformerXLLM
from .runner import SegmentRunner, as_token_tensor, call_span, layout_streams
from .runtime import DistInfo, all_reduce_sum

LN2 = math.log(2.0)
CHARACTER_LEVELS = ("char", "byte")

__all__ = ["EvalResult", "check_token_range", "evaluate", "score_tokens", "sliding_window_evaluate"]


@dataclass
class EvalResult:
    loss: float  # mean negative log-likelihood, nats per token
    n_tokens: int  # tokens scored
    seg_len: int
    mem_len: int
    clamp_len: int
    same_length: bool
    batch_size: int
    warmup: int
    level: str | None = None  # vocabulary level: "char" / "byte" give bits per character
    n_available: int | None = None  # targets in the whole token array (n_tokens < n_available: partial)
    per_token: np.ndarray | None = None  # (n_tokens,) NLL of tokens[1], tokens[2], ... in corpus order

    @property
    def ppl(self) -> float:
        return math.exp(min(self.loss, 700.0))

    @property
    def span(self) -> Span:
        return Span(seg_len=self.seg_len, mem_len=self.mem_len, clamp_len=self.clamp_len,
                    same_length=self.same_length)

    @property
    def partial(self) -> bool:
        """Only a prefix of the tokens was scored (``max_tokens``)."""
        return self.n_available is not None and self.n_tokens < self.n_available

    @property
    def bits_per_token(self) -> float:
        return self.loss / LN2

    @property
    def bpc(self) -> float | None:
        """Bits per character (per byte for byte-level data); None for word-level data."""
        return self.bits_per_token if self.level in CHARACTER_LEVELS else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "per_token"}
        out.update(ppl=self.ppl, bits_per_token=self.bits_per_token, bpc=self.bpc)
        return out


def check_token_range(tokens: Tensor, n_token: int) -> None:
    """Every id in [0, n_token): checked once per array, not per segment (no host sync in forward)."""
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= n_token):
        raise TransformerXLError(f"token ids must lie in [0, {n_token}), got [{int(tokens.min())}, "
                                 f"{int(tokens.max())}]: is the data encoded with this model's vocabulary?")


@torch.no_grad()
def evaluate(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, span: Span | None = None,
             seg_len: int | None = None, mem_len: int | None = None, clamp_len: int | None = None,
             same_length: bool | None = None, batch_size: int = 1, warmup: int = 0, max_tokens: int = 0,
             level: str | None = None, device: torch.device | str | None = None, precision: str = "fp32",
             dist_info: DistInfo | None = None, return_per_token: bool = False,
             progress: bool | None = False) -> EvalResult:
    """Mean NLL of tokens[1:] (or the first ``max_tokens`` of them) given everything before them, read
    in segments of ``seg_len`` with ``mem_len`` of memory.

    The span is ``span`` (default: the model's training span) with any of ``seg_len``, ``mem_len``,
    ``clamp_len``, ``same_length`` given here replacing its fields. In distributed runs pass ``dist_info``:
    rank r scores streams r, r + W, ... and the sums are all-reduced; ``per_token`` is then left out.
    """
    span = call_span(model, span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)
    if batch_size <= 0 or warmup < 0 or max_tokens < 0:
        raise TransformerXLError(f"need batch_size > 0, warmup >= 0, max_tokens >= 0; got {batch_size}, "
                                 f"{warmup}, {max_tokens}")
    info = dist_info or DistInfo()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n_available = len(tokens) - 1
    data = as_token_tensor(tokens, max_tokens)
    n_targets = len(data) - 1
    if n_targets <= 0:
        raise TransformerXLError(f"nothing to evaluate: {len(data)} token(s); need at least 2")
    check_token_range(data, model.config.n_token)
    layout = layout_streams(data, batch_size=batch_size, warmup=warmup, rank=info.rank,
                            world_size=info.world_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    per_token = np.zeros(n_targets, dtype=np.float32) if return_per_token and not info.enabled else None

    was_training = model.training
    model.eval()
    try:
        if layout is not None:
            x, y, scored = layout.x.to(device), layout.y.to(device), layout.scored.to(device)
            runner = SegmentRunner(model, span=span, precision=precision)
            for start, stop, out in runner.run(x, targets=y, progress=progress, desc="eval"):
                loss = out.loss.double() * scored[:, start:stop]  # (B, T) padding and warm-up masked
                total += loss.sum()
                if per_token is not None:
                    mask = layout.scored[:, start:stop]
                    positions = layout.target_index[:, start:stop][mask] - 1  # index into per_token
                    per_token[positions.numpy()] = loss.float().cpu()[mask].numpy()
    finally:
        model.train(was_training)

    count = 0 if layout is None else layout.n_scored
    total_value, count_value = all_reduce_sum([float(total), float(count)], device, info)
    count = int(count_value)
    if count != n_targets:  # the streams tile the targets: a mismatch is a bug, not a user error
        raise AssertionError(f"scored {count} tokens, expected {n_targets}")
    return EvalResult(loss=total_value / count, n_tokens=count, seg_len=span.seg_len, mem_len=span.mem_len,
                      clamp_len=span.clamp_len, same_length=span.same_length, batch_size=batch_size,
                      warmup=warmup, level=level, n_available=n_available, per_token=per_token)


@torch.no_grad()
def sliding_window_evaluate(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, window: int | None = None,
                            stride: int = 1, batch_size: int = 16, max_tokens: int = 0, level: str | None = None,
                            device: torch.device | str | None = None, return_per_token: bool = False,
                            progress: bool | None = False) -> EvalResult:
    """The vanilla-Transformer baseline of the paper (Al-Rfou et al.): no memory, every token predicted
    from a fresh window of the ``window`` tokens before it (default: the training seg_len). Costs one
    forward per token.

    ``stride`` > 1 advances the window ``stride`` tokens at a time and scores its last ``stride``
    positions (each then sees between window - stride + 1 and window tokens): cheaper, less context.
    """
    window = model.config.seg_len if window is None else window
    if not isinstance(window, int) or window <= 0:
        raise TransformerXLError(f"the window must be a positive number of tokens, got {window!r}")
    if not 1 <= stride <= window:
        raise TransformerXLError(f"stride must be between 1 and the window ({window}), got {stride}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    n_available = len(tokens) - 1
    data = as_token_tensor(tokens, max_tokens)
    n_targets = len(data) - 1
    if n_targets <= 0:
        raise TransformerXLError(f"nothing to evaluate: {len(data)} token(s); need at least 2")
    check_token_range(data, model.config.n_token)
    nll = torch.zeros(n_targets, dtype=torch.float64)
    was_training = model.training
    model.eval()

    def forward(x: Tensor, y: Tensor) -> Tensor:  # a fresh window: no memory in, none kept
        return model(x.to(device), targets=y.to(device), mem_len=0, same_length=False).loss

    try:
        # Targets 1..window come from one causal pass over the first window (growing contexts).
        head = min(window, n_targets)
        nll[:head] = forward(data[None, :head], data[None, 1:head + 1])[0].double().cpu()
        # Later targets in chunks of `stride`: a chunk t0..e is scored by the window tokens[e - window : e]
        # (stride 1: every target t sees exactly tokens[t - window : t]).
        from tqdm.auto import tqdm

        def score(first: Tensor, size: int) -> None:
            last = first + size - 1  # (B,) last target of each chunk
            index = last[:, None] - window + torch.arange(window)[None, :]  # (B, window) inputs
            target_index = first[:, None] + torch.arange(size)[None, :]  # (B, size)
            nll[target_index - 1] = forward(data[index], data[target_index]).double().cpu()

        starts = list(range(head + 1, n_targets + 1, stride))
        full = [t for t in starts if t + stride - 1 <= n_targets]
        for i in tqdm(range(0, len(full), batch_size), desc="sliding window", leave=False,
                      disable=None if progress else True):
            score(torch.tensor(full[i:i + batch_size]), stride)
        if len(full) < len(starts):  # a final, shorter chunk
            score(torch.tensor(starts[-1:]), n_targets - starts[-1] + 1)
    finally:
        model.train(was_training)
    return EvalResult(loss=float(nll.mean()), n_tokens=n_targets, seg_len=window, mem_len=0,
                      clamp_len=model.config.clamp_len, same_length=False, batch_size=batch_size, warmup=0,
                      level=level, n_available=n_available,
                      per_token=nll.float().numpy() if return_per_token else None)


@torch.no_grad()
def score_tokens(model: TransformerXLLM, chunks: Iterable[np.ndarray | list[int]], *, span: Span | None = None,
                 seg_len: int | None = None, mem_len: int | None = None, clamp_len: int | None = None,
                 same_length: bool | None = None, device: torch.device | str | None = None,
                 precision: str = "fp32") -> Iterator[tuple[int, float]]:
    """Stream (token id, log-probability) for every token after the first of a token stream given in
    chunks of any size, read in segments of ``seg_len`` with the span's memory (as :func:`evaluate`:
    ``span``, default the training span, with the fields given here replacing its own). Memory use is
    bounded by the span, not by the stream's length; the segments are those :func:`evaluate` with
    ``batch_size=1`` reads, so the losses are the same."""
    span = call_span(model, span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    seg = span.seg_len
    n_token = model.config.n_token
    was_training = model.training
    model.eval()
    runner = SegmentRunner(model, span=span, precision=precision)
    prev: int | None = None  # the last token fed so far: the input that predicts the next target
    pending: list[int] = []  # targets not yet scored

    def run(targets: list[int]) -> Iterator[tuple[int, float]]:
        nonlocal prev
        x = torch.tensor([[prev] + targets[:-1]], device=device)  # (1, T)
        y = torch.tensor([targets], device=device)
        out = runner.step(x, targets=y)
        prev = targets[-1]
        for token, nll in zip(targets, out.loss[0].tolist()):
            yield token, -nll

    try:
        for chunk in chunks:
            ids = [int(t) for t in np.asarray(chunk).reshape(-1)]
            if ids and (min(ids) < 0 or max(ids) >= n_token):
                raise TransformerXLError(f"token ids must lie in [0, {n_token}), got [{min(ids)}, {max(ids)}]")
            if prev is None and ids:
                prev, ids = ids[0], ids[1:]
            pending.extend(ids)
            while len(pending) >= seg:
                batch, pending = pending[:seg], pending[seg:]
                yield from run(batch)
        if pending:
            yield from run(pending)
    finally:
        model.train(was_training)
