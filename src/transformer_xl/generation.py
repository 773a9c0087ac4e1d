"""Sampling with memory: the prompt is read in segments, then one token at a time with the memory.

Every new token costs one forward of a single query over at most ``mem_len`` cached positions per
layer, so the cost per token stays bounded however long the text grows (a vanilla Transformer would
recompute its whole window for each token). With ``mem_len`` covering the whole text, generation is
exactly what recomputing over the full context would give. The span (segment length for reading the
prompt, memory, clamp, same_length) is an argument, as everywhere: default the model's training span.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from .config import Span, TransformerXLError
from .model import TransformerXLLM
from .runner import SegmentRunner, call_span

__all__ = ["Generator", "generate", "sample_next"]


def sample_next(log_probs: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """One token id from (V,) log-probabilities. temperature 0 is greedy; top_k keeps the k likeliest
    tokens; top_p keeps the smallest set whose probability reaches p (nucleus sampling)."""
    log_probs = log_probs.float().cpu()  # sample on the CPU: the same seed gives the same text on any device
    if temperature <= 0 or top_k == 1:
        return int(log_probs.argmax())
    logits = log_probs / temperature
    if top_k > 0 and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first is always kept)
        drop = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class Generator:
    """Holds the memory of one text being generated. ``feed`` reads tokens; ``log_probs`` is the
    distribution of the next token; the memory never holds more than ``span.mem_len`` positions."""

    def __init__(self, model: TransformerXLLM, *, span: Span | None = None, seg_len: int | None = None,
                 mem_len: int | None = None, clamp_len: int | None = None, same_length: bool | None = None) -> None:
        self.model = model
        self.span = call_span(model, span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                              same_length=same_length)
        self.runner = SegmentRunner(model, span=self.span)
        self.device = next(model.parameters()).device
        self.log_probs: Tensor | None = None
        # mem_len 0 has no recurrence: keep a sliding window of recent tokens and recompute over it
        self.window: list[int] = []

    @torch.no_grad()
    def feed(self, tokens: Sequence[int]) -> Tensor:
        """Read ``tokens`` (in segments of seg_len) and return the (V,) log-probs of the next token."""
        if not tokens:
            raise TransformerXLError("nothing to feed: the prompt is empty")
        self.model.eval()
        seg = self.span.seg_len
        if self.span.mem_len == 0:
            self.window = (self.window + list(tokens))[-seg:]
            x = torch.tensor([self.window], device=self.device)
            out = self.runner.step(x, return_hidden=True)
        else:
            for start in range(0, len(tokens), seg):
                x = torch.tensor([list(tokens[start:start + seg])], device=self.device)  # (1, T)
                out = self.runner.step(x, return_hidden=True)
        # the softmax only for the last position: (1, C) -> (V,)
        self.log_probs = self.model.crit.log_probs(out.hidden[:, -1])[0]
        return self.log_probs

    @property
    def memory_length(self) -> int:
        return self.runner.memory_length


def generate(model: TransformerXLLM, prompt: Sequence[int], *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None, span: Span | None = None,
             seg_len: int | None = None, mem_len: int | None = None, clamp_len: int | None = None,
             same_length: bool | None = None, stop_id: int | None = None,
             generator: Generator | None = None) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` sampled token ids, one at a time, as soon as each is drawn.

    The span the model reads with: ``span`` (default: its training span) with the fields given here
    replacing its own. ``generator`` continues an earlier text (its own span then applies).
    """
    if max_new_tokens < 0:
        raise TransformerXLError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise TransformerXLError(f"need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got {temperature}, "
                                 f"{top_k}, {top_p}")
    if not prompt:
        raise TransformerXLError("the prompt is empty: give at least one token")
    if min(prompt) < 0 or max(prompt) >= model.config.n_token:
        raise TransformerXLError(f"prompt token ids must lie in [0, {model.config.n_token})")
    state = generator or Generator(model, span=span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                                   same_length=same_length)
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    log_probs = state.feed(list(prompt))
    for _ in range(max_new_tokens):
        token = sample_next(log_probs, temperature=temperature, top_k=top_k, top_p=top_p, generator=rng)
        yield token
        if token == stop_id:
            return
        log_probs = state.feed([token])
