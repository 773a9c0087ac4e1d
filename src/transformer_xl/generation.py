"""Sampling with memory: the prompt is read in segments, then one token at a time with the memory.

Every new token costs one forward of a single query over at most ``mem_len`` cached positions per
layer, so the cost per token stays bounded however long the text grows (a vanilla Transformer would
recompute its whole window for each token). With ``mem_len`` covering the whole text, generation is
exactly what recomputing over the full context would give. The span (segment length for reading the
prompt, memory, clamp, same_length) is an argument, as everywhere: default the model's training span.

Two calls:

* :func:`generate` streams the new token ids one by one (an iterator). The prompt is a list of ids, a
  1-D tensor or array (or one row of a batch), or a string together with ``tokenizer=``.
* :func:`generate_text` runs to the end and returns a :class:`Generation` holding both the ids and the
  text (``.ids``, ``.text``, ``.full_text``, ``.prompt_ids``), the way Hugging Face users expect::

      model, tokenizer = load_model_and_tokenizer("runs/wt103")
      out = generate_text(model, tokenizer, "The meaning of life is", max_new_tokens=40, top_p=0.9, seed=1)
      print(out.full_text)

* :func:`generate_batch` continues several prompts of different lengths at once and returns each one's new
  ids: row ``i`` gets exactly what :func:`generate` gives for prompt ``i`` alone (with seed ``seed + i``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .config import Span, TransformerXLError
from .model import Memory, TransformerXLLM
from .runner import SegmentRunner, call_span

__all__ = ["Generation", "Generator", "encode_prompt", "generate", "generate_batch", "generate_text", "sample_next"]

Prompt = Union[str, Sequence[int], Tensor, np.ndarray]


def sample_next(log_probs: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """One token id from (V,) log-probabilities. temperature 0 is greedy; top_k keeps the k likeliest
    tokens; top_p keeps the smallest set whose probability reaches p (nucleus sampling)."""
    _check_sampling(temperature, top_k, top_p)
    log_probs = log_probs.float().cpu()  # sample on the CPU: the same seed gives the same text on any device
    if not bool(torch.isfinite(log_probs).any()) or bool(torch.isnan(log_probs).any()):
        raise TransformerXLError("the model gave no finite probabilities for the next token (NaN or -inf "
                                 "everywhere): its weights are damaged or it overflowed; try --precision fp32")
    if temperature <= 0 or top_k == 1:
        return int(log_probs.argmax())
    # shift so the likeliest token is at 0 before dividing: a tiny temperature cannot turn every logit
    # into -inf (which would leave nothing to sample), it only makes sampling greedy in the limit
    logits = (log_probs - log_probs.max()) / temperature
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


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise TransformerXLError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if not isinstance(top_k, int) or top_k < 0:
        raise TransformerXLError(f"top_k must be an integer >= 0 (0 keeps every token), got {top_k}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:  # NaN fails the comparison too
        raise TransformerXLError(f"top_p must lie in (0, 1] (1 turns nucleus sampling off), got {top_p}")


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


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The ids of a text prompt. A word vocabulary ends every line with ``<eos>``; a prompt that does not
    end with a line break continues its last line, so that final ``<eos>`` is dropped."""
    if not isinstance(text, str):
        raise TransformerXLError(f"a text prompt is a string, got {type(text).__name__}")
    ids = [int(t) for t in tokenizer.encode(text)]
    eos = getattr(tokenizer, "eos_id", None)
    if tokenizer.kind == "word" and eos is not None and ids and ids[-1] == eos and not text.endswith("\n"):
        ids = ids[:-1]
    if not ids:
        raise TransformerXLError(f"the prompt {text[:40]!r} reads as no tokens at all: give some text (or ids)")
    return ids


def _prompt_ids(prompt: Prompt, tokenizer: Any, n_token: int) -> list[int]:
    """A list of ids from any accepted prompt, checked against the model's vocabulary size."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise TransformerXLError("a text prompt needs the model's tokenizer: pass tokenizer= (see "
                                     "load_model_and_tokenizer), or give token ids")
        if not prompt:
            raise TransformerXLError("the prompt is empty: give some text, or token ids to start from")
        ids = encode_prompt(tokenizer, prompt)
    else:
        if isinstance(prompt, Tensor):
            if prompt.is_floating_point() or prompt.is_complex():
                raise TransformerXLError(f"prompt token ids must be integers, got a {prompt.dtype} tensor")
            array = prompt.detach().cpu().numpy()
        else:
            array = np.asarray(prompt)
            if array.dtype == object or array.size and not np.issubdtype(array.dtype, np.integer):
                raise TransformerXLError("prompt token ids must be integers (or give a string with tokenizer=)")
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]  # one row of a batch, as tokenizers return
        if array.ndim != 1:
            raise TransformerXLError(f"the prompt must be one sequence of ids, got shape {tuple(array.shape)}; "
                                     "generate one text at a time")
        ids = [int(t) for t in array]
    if not ids:
        raise TransformerXLError("the prompt is empty: give at least one token")
    if min(ids) < 0 or max(ids) >= n_token:
        raise TransformerXLError(f"prompt token ids must lie in [0, {n_token})")
    return ids


def generate(model: TransformerXLLM, prompt: Prompt, *, max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None, span: Span | None = None,
             seg_len: int | None = None, mem_len: int | None = None, clamp_len: int | None = None,
             same_length: bool | None = None, stop_id: int | None = None,
             generator: Generator | None = None, tokenizer: Any = None) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` sampled token ids, one at a time, as soon as each is drawn.

    ``prompt``: a list of ids, a 1-D tensor or array (or a (1, T) batch of one), or a string with
    ``tokenizer`` (the model's vocabulary). The span the model reads with: ``span`` (default: its training
    span) with the fields given here replacing its own. ``generator`` continues an earlier text (its own
    span then applies). Bad arguments raise at the call, before the iterator is consumed.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise TransformerXLError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")
    _check_sampling(temperature, top_k, top_p)
    ids = _prompt_ids(prompt, tokenizer, model.config.n_token)
    return _sample(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, span=span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len,
                   same_length=same_length, stop_id=stop_id, generator=generator)


def _sample(model: TransformerXLLM, prompt: list[int], *, max_new_tokens: int, temperature: float, top_k: int,
            top_p: float, seed: int | None, span: Span | None, seg_len: int | None, mem_len: int | None,
            clamp_len: int | None, same_length: bool | None, stop_id: int | None,
            generator: Generator | None) -> Iterator[int]:
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


def generate_batch(model: TransformerXLLM, prompts: Sequence[Prompt] | Tensor | np.ndarray, *, max_new_tokens: int,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   seed: int | Sequence[int] | None = None, span: Span | None = None, seg_len: int | None = None,
                   mem_len: int | None = None, clamp_len: int | None = None, same_length: bool | None = None,
                   stop_id: int | None = None, tokenizer: Any = None) -> list[list[int]]:
    """Continue several prompts at once; the new ids of each, in the order of ``prompts``.

    Row ``i`` is what :func:`generate` gives for ``prompts[i]`` alone with the same span and ``seed + i``
    (or ``seed[i]`` when ``seed`` is a sequence; None draws from torch's global generator): the same
    arithmetic, only batched. Each prompt is read in segments of ``seg_len`` from its own start, exactly as
    alone (prompts of equal length share those forwards); the memories are then left-padded to one length,
    with ``Memory.padding`` masking the padded positions, and every new token of all rows is one forward of
    the batch. A row ends at ``stop_id`` (included) and leaves the batch; the others go on. With
    ``mem_len`` 0 (no memory to pad) the rows are generated one after the other.

    ``prompts``: a list of prompts as :func:`generate` takes them (ids, 1-D tensors or arrays, or strings
    with ``tokenizer``), or a (B, T) tensor or array of B prompts of equal length.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise TransformerXLError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")
    _check_sampling(temperature, top_k, top_p)
    if isinstance(prompts, (Tensor, np.ndarray)) and prompts.ndim == 2:
        prompts = list(prompts)
    if isinstance(prompts, (str, bytes, Tensor, np.ndarray)) or not isinstance(prompts, Sequence) or any(
            isinstance(p, (int, np.integer)) for p in prompts):
        raise TransformerXLError("generate_batch takes a list of prompts (each a list of ids, a 1-D tensor or a "
                                 "string); for a single prompt use generate()")
    rows = [_prompt_ids(p, tokenizer, model.config.n_token) for p in prompts]
    seeds = _row_seeds(seed, len(rows))
    resolved = call_span(model, span, seg_len=seg_len, mem_len=mem_len, clamp_len=clamp_len, same_length=same_length)
    if not rows or max_new_tokens == 0:
        return [[] for _ in rows]
    if resolved.mem_len == 0:  # a sliding window per row, nothing carried: one row at a time
        return [list(_sample(model, ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                             top_p=top_p, seed=row_seed, span=resolved, seg_len=None, mem_len=None,
                             clamp_len=None, same_length=None, stop_id=stop_id, generator=None))
                for ids, row_seed in zip(rows, seeds)]
    rngs = [None if s is None else torch.Generator().manual_seed(s) for s in seeds]
    model.eval()
    device = next(model.parameters()).device
    outputs: list[list[int]] = [[] for _ in rows]
    with torch.no_grad():
        log_probs, memory = _read_prompts(model, rows, resolved, device)
        runner = SegmentRunner(model, span=resolved, memory=memory)
        active = list(range(len(rows)))  # the prompt index of each row of the batch
        for step in range(max_new_tokens):
            table = log_probs.float().cpu()  # sampled on the CPU, as generate() does
            tokens = [sample_next(table[j], temperature=temperature, top_k=top_k, top_p=top_p, generator=rngs[r])
                      for j, r in enumerate(active)]
            for r, token in zip(active, tokens):
                outputs[r].append(token)
            if step == max_new_tokens - 1:
                break
            keep = [j for j, token in enumerate(tokens) if token != stop_id]
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch (and their memory with them)
                runner.memory = runner.memory.rows(torch.tensor(keep, device=device))
                active, tokens = [active[j] for j in keep], [tokens[j] for j in keep]
            out = runner.step(torch.tensor(tokens, device=device).unsqueeze(1), return_hidden=True)  # (B', 1)
            log_probs = model.crit.log_probs(out.hidden[:, -1])  # (B', V)
    return outputs


def _row_seeds(seed: int | Sequence[int] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed) if isinstance(seed, Sequence) else None
    if seeds is None or len(seeds) != n or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise TransformerXLError(f"seed must be an integer (row i uses seed + i) or one integer per prompt "
                                 f"({n}), got {seed!r}")
    return [int(s) for s in seeds]


def _read_prompts(model: TransformerXLLM, rows: list[list[int]], span: Span,
                  device: torch.device) -> tuple[Tensor, Memory]:
    """Read every prompt in segments from its own start (prompts of one length together): the (B, V)
    log-probs of each row's next token and one memory, each row's states right-aligned behind
    ``padding`` empty positions."""
    by_length: dict[int, list[int]] = {}
    for index, ids in enumerate(rows):
        by_length.setdefault(len(ids), []).append(index)
    order: list[int] = []
    parts: list[tuple[Tensor, Memory]] = []
    for length, indices in by_length.items():
        runner = SegmentRunner(model, span=span)
        x = torch.tensor([rows[i] for i in indices], device=device)  # (k, P)
        for start in range(0, length, span.seg_len):
            out = runner.step(x[:, start:start + span.seg_len], return_hidden=True)
        parts.append((model.crit.log_probs(out.hidden[:, -1]), runner.memory))
        order.extend(indices)
    longest = max(memory.length for _, memory in parts)
    memory = Memory.cat([m.left_pad(longest) for _, m in parts])  # each row right-aligned, padding counted
    back = torch.argsort(torch.tensor(order, device=device))  # batch row of each prompt
    log_probs = torch.cat([lp for lp, _ in parts])[back]
    return log_probs, memory.rows(back)


@dataclass(frozen=True)
class Generation:
    """What :func:`generate_text` returns: the prompt and the continuation, as ids and as text."""

    prompt_ids: list[int]
    ids: list[int]  # the new tokens only
    text: str  # the new tokens decoded
    full_text: str  # prompt and continuation decoded together (spacing and detokenization across the join)

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.ids


def generate_text(model: TransformerXLLM, tokenizer: Any, prompt: Prompt, *, max_new_tokens: int,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                  span: Span | None = None, stop_at_eos: bool = False, **span_fields: Any) -> Generation:
    """Generate to the end and return ids and text together (see :class:`Generation`).

    ``prompt``: text (encoded with ``tokenizer``) or ids; ``stop_at_eos`` ends at the first end-of-line
    token. ``span_fields``: seg_len, mem_len, clamp_len, same_length, as for :func:`generate`.
    """
    unknown = sorted(set(span_fields) - {"seg_len", "mem_len", "clamp_len", "same_length"})
    if unknown:
        raise TransformerXLError(f"generate_text() got unexpected arguments {unknown}")
    prompt_ids = _prompt_ids(prompt, tokenizer, model.config.n_token)
    stop_id = getattr(tokenizer, "eos_id", None) if stop_at_eos else None
    ids = list(generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, seed=seed, span=span, stop_id=stop_id, **span_fields))
    full = tokenizer.decode(prompt_ids + ids)
    head = tokenizer.decode(prompt_ids)
    text = full[len(head):] if full.startswith(head) else tokenizer.decode(ids)
    return Generation(prompt_ids=prompt_ids, ids=ids, text=text, full_text=full)
