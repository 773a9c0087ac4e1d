"""Perplexity and bits per character, the way the paper measures them.

Evaluation may use another segment length and a much longer memory than training (the paper trains
wt103 at 150/150 and evaluates 64 tokens with 640 of memory). Every token is scored exactly once, in
corpus order: the scored targets are split into B contiguous streams (the last may be shorter and is
padded, with the padding masked out), so nothing is dropped. ``warmup`` feeds up to that many tokens
before each stream's first scored token, unscored, so those tokens see a full memory too.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .config import ModelConfig, TransformerXLError
from .model import TransformerXLLM

LN2 = math.log(2.0)
CHARACTER_LEVELS = ("char", "byte")

__all__ = ["EvalResult", "evaluate", "eval_lengths", "score_tokens", "sliding_window_evaluate"]


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
    per_token: np.ndarray | None = None  # (n_tokens,) NLL of tokens[1], tokens[2], ... in corpus order

    @property
    def ppl(self) -> float:
        return math.exp(min(self.loss, 700.0))

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


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise TransformerXLError("fp16 needs a CUDA device; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def eval_lengths(config: ModelConfig, *, seg_len: int | None = None, mem_len: int | None = None,
                 clamp_len: int | None = None, same_length: bool | None = None) -> ModelConfig:
    """The model config at evaluation lengths (validated: a bad length is a ConfigError). ext_len is 0:
    evaluation windows are exact, nothing is fed twice."""
    return config.with_lengths(seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                               same_length=same_length, ext_len=0)


@contextmanager
def lengths(model: TransformerXLLM, config: ModelConfig) -> Iterator[None]:
    """Run the model at other attention lengths, then restore its own."""
    saved = model.config
    model.config = config
    try:
        yield
    finally:
        model.config = saved


def _as_long(tokens: np.ndarray | Tensor, max_tokens: int) -> Tensor:
    """The tokens needed to score ``max_tokens`` targets (all when 0) as an int64 tensor (a copy: the
    prepared splits are read-only memory maps)."""
    part = tokens[: max_tokens + 1] if max_tokens else tokens
    if isinstance(part, Tensor):
        return part.long()
    return torch.from_numpy(np.array(part, dtype=np.int64))


def _stream_bounds(n_targets: int, batch_size: int) -> list[tuple[int, int]]:
    """[first, end) target indices (1-based positions in the token array) of each stream."""
    size = -(-n_targets // batch_size)
    bounds = []
    for b in range(min(batch_size, n_targets)):  # streams past n_targets would be empty (and 10**9 would hang)
        first, end = 1 + b * size, 1 + min((b + 1) * size, n_targets)
        if first < end:
            bounds.append((first, end))
    return bounds


@torch.no_grad()
def evaluate(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, batch_size: int = 1,
             seg_len: int | None = None, mem_len: int | None = None, clamp_len: int | None = None,
             same_length: bool | None = None, warmup: int = 0, max_tokens: int = 0, level: str | None = None,
             device: torch.device | str | None = None, precision: str = "fp32", rank: int = 0,
             world_size: int = 1, dist_info: Any = None, return_per_token: bool = False,
             progress: bool | None = False) -> EvalResult:
    """Mean NLL of tokens[1:] (or the first ``max_tokens`` of them) given everything before them, read
    in segments of ``seg_len`` with ``mem_len`` of memory. Lengths default to the model's own.

    In distributed runs pass ``dist_info`` (training.distributed.DistInfo): rank r scores streams
    r, r + W, ... and the sums are all-reduced; ``per_token`` is then left out.
    """
    config = eval_lengths(model.config, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                          same_length=same_length)
    if batch_size <= 0 or warmup < 0 or max_tokens < 0:
        raise TransformerXLError(f"need batch_size > 0, warmup >= 0, max_tokens >= 0; got {batch_size}, "
                                 f"{warmup}, {max_tokens}")
    if dist_info is not None:
        rank, world_size = dist_info.rank, dist_info.world_size
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = _as_long(tokens, max_tokens)
    n_targets = len(data) - 1
    if n_targets <= 0:
        raise TransformerXLError(f"nothing to evaluate: {len(data)} token(s); need at least 2")
    bounds = _stream_bounds(n_targets, batch_size)
    mine = bounds[rank::world_size]
    total = torch.zeros((), dtype=torch.float64, device=device)
    per_token = np.zeros(n_targets, dtype=np.float32) if return_per_token and world_size == 1 else None

    was_training = model.training
    model.eval()
    with lengths(model, config):
        if mine:
            # Stream b: inputs tokens[c : end - 1], targets tokens[c + 1 : end], scored from `first` on.
            starts = [max(0, first - 1 - warmup) for first, _ in mine]
            length = max(end - 1 - c for c, (_, end) in zip(starts, mine))
            x = torch.zeros(len(mine), length, dtype=torch.long)
            y = torch.zeros(len(mine), length, dtype=torch.long)
            scored = torch.zeros(len(mine), length, dtype=torch.bool)
            for i, (c, (first, end)) in enumerate(zip(starts, mine)):
                n = end - 1 - c
                x[i, :n] = data[c:end - 1]
                y[i, :n] = data[c + 1:end]
                scored[i, first - 1 - c:n] = True
            target_pos = torch.arange(length)[None, :] + torch.tensor(starts)[:, None] + 1  # (B, L) index of y
            x, y, scored_dev = x.to(device), y.to(device), scored.to(device)
            mems = kv_cache = None
            reuse_kv = model.supports_kv_cache  # the memory's keys/values are not projected again
            from tqdm.auto import tqdm

            for start in tqdm(range(0, length, config.seg_len), desc="eval", unit="seg", leave=False,
                              disable=None if progress else True):
                stop = min(start + config.seg_len, length)
                with _autocast(device, precision):
                    out = model(x[:, start:stop], targets=y[:, start:stop], mems=mems, kv_cache=kv_cache,
                                use_kv_cache=reuse_kv)
                mems, kv_cache = out.mems, out.kv_cache
                loss = out.loss.double() * scored_dev[:, start:stop]  # (B, T) padding and warm-up masked
                total += loss.sum()
                if per_token is not None:
                    mask = scored[:, start:stop]
                    positions = target_pos[:, start:stop][mask] - 1  # index into per_token
                    per_token[positions.numpy()] = loss.float().cpu()[mask].numpy()
    model.train(was_training)

    count = sum(end - first for first, end in mine)
    if world_size > 1:
        from .training.distributed import all_reduce_sum

        summed, count = all_reduce_sum([float(total), float(count)], device, dist_info)
        total_value = summed
        count = int(count)
    else:
        total_value = float(total)
    if count != n_targets:  # the streams tile the targets: a mismatch is a bug, not a user error
        raise AssertionError(f"scored {count} tokens, expected {n_targets}")
    return EvalResult(loss=total_value / count, n_tokens=count, seg_len=config.seg_len, mem_len=config.mem_len,
                      clamp_len=config.clamp_len, same_length=config.same_length, batch_size=batch_size,
                      warmup=warmup, level=level, per_token=per_token)


@torch.no_grad()
def sliding_window_evaluate(model: TransformerXLLM, tokens: np.ndarray | Tensor, *, window: int | None = None,
                            stride: int = 1, batch_size: int = 16, max_tokens: int = 0, level: str | None = None,
                            device: torch.device | str | None = None, return_per_token: bool = False,
                            progress: bool | None = False) -> EvalResult:
    """The vanilla-Transformer baseline of the paper (Al-Rfou et al.): no memory, every token predicted
    from a fresh window of the ``window`` tokens before it. Costs one forward per token.

    ``stride`` > 1 advances the window ``stride`` tokens at a time and scores its last ``stride``
    positions (each then sees between window - stride + 1 and window tokens): cheaper, less context.
    """
    config = eval_lengths(model.config, seg_len=window, mem_len=0, same_length=False)
    window = config.seg_len
    if not 1 <= stride <= window:
        raise TransformerXLError(f"stride must be between 1 and the window ({window}), got {stride}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    data = _as_long(tokens, max_tokens)
    n_targets = len(data) - 1
    if n_targets <= 0:
        raise TransformerXLError(f"nothing to evaluate: {len(data)} token(s); need at least 2")
    nll = torch.zeros(n_targets, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with lengths(model, config):
        # Targets 1..window come from one causal pass over the first window (growing contexts).
        head = min(window, n_targets)
        out = model(data[None, :head].to(device), targets=data[None, 1:head + 1].to(device))
        nll[:head] = out.loss[0].double().cpu()
        # Later targets in chunks of `stride`: a chunk t0..e is scored by the window tokens[e - window : e]
        # (stride 1: every target t sees exactly tokens[t - window : t]).
        from tqdm.auto import tqdm

        def score(first: Tensor, size: int) -> None:
            last = first + size - 1  # (B,) last target of each chunk
            index = last[:, None] - window + torch.arange(window)[None, :]  # (B, window) inputs
            target_index = first[:, None] + torch.arange(size)[None, :]  # (B, size)
            out = model(data[index].to(device), targets=data[target_index].to(device))
            nll[target_index - 1] = out.loss.double().cpu()

        starts = list(range(head + 1, n_targets + 1, stride))
        full = [t for t in starts if t + stride - 1 <= n_targets]
        for i in tqdm(range(0, len(full), batch_size), desc="sliding window", leave=False,
                      disable=None if progress else True):
            score(torch.tensor(full[i:i + batch_size]), stride)
        if len(full) < len(starts):  # a final, shorter chunk
            score(torch.tensor(starts[-1:]), n_targets - starts[-1] + 1)
    model.train(was_training)
    return EvalResult(loss=float(nll.mean()), n_tokens=n_targets, seg_len=window, mem_len=0,
                      clamp_len=config.clamp_len, same_length=False, batch_size=batch_size, warmup=0,
                      level=level, per_token=nll.float().numpy() if return_per_token else None)


@torch.no_grad()
def score_tokens(model: TransformerXLLM, chunks: Iterable[np.ndarray | list[int]], *, seg_len: int | None = None,
                 mem_len: int | None = None, clamp_len: int | None = None, same_length: bool | None = None,
                 device: torch.device | str | None = None) -> Iterator[tuple[int, float]]:
    """Stream (token id, log-probability) for every token after the first of a token stream given in
    chunks of any size. Memory use is bounded by seg_len and mem_len, not by the stream's length."""
    config = eval_lengths(model.config, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                          same_length=same_length)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    seg = config.seg_len
    was_training = model.training
    model.eval()
    prev: int | None = None  # the last token fed so far: the input that predicts the next target
    pending: list[int] = []  # targets not yet scored
    mems = kv_cache = None

    def run(targets: list[int]) -> Iterator[tuple[int, float]]:
        nonlocal mems, kv_cache, prev
        x = torch.tensor([[prev] + targets[:-1]], device=device)  # (1, T)
        y = torch.tensor([targets], device=device)
        with lengths(model, config):
            out = model(x, targets=y, mems=mems, kv_cache=kv_cache, use_kv_cache=model.supports_kv_cache)
        mems, kv_cache = out.mems, out.kv_cache
        prev = targets[-1]
        for token, nll in zip(targets, out.loss[0].tolist()):
            yield token, -nll

    try:
        for chunk in chunks:
            ids = [int(t) for t in np.asarray(chunk).reshape(-1)]
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
