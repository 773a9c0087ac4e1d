"""`txl generate`: sample text with memory, streamed to the terminal as it is produced.

    txl generate --checkpoint runs/demo/best --prompt "def main(" --max-new-tokens 300 --top-p 0.9 --seed 1
    txl generate --checkpoint runs/wt103 --prompt-file intro.txt --temperature 0.8 --top-k 40
    txl generate --checkpoint runs/demo/best --prompt "def a(" --prompt "class B" --seed 1
    txl generate --checkpoint runs/wt103 --prompts-file prompts.txt --max-new-tokens 64 --json

Each new token is one forward of a single position over at most mem_len cached positions, so the cost
per token does not grow with the length generated. The span is chosen as by `txl eval` (each flag, else
the run's saved evaluation setting, else the training value) and printed on stderr, so the text on
stdout is only the text; --mem-len can extend the memory beyond training's.

Several prompts (--prompt repeated, or --prompts-file with one prompt per line, blank lines skipped) are
generated together as one batch, each exactly as it would be alone (prompt i with seed --seed + i); the
results are printed when all are done, each after a line `### prompt I/N`.
"""

from __future__ import annotations

import argparse
import codecs
import itertools
import json
import os
import sys
import time
from typing import Any

from ..config import TransformerXLError
from .flags import add_span_flags, add_subcommand, add_threads_flag, span_flags


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "generate", help="sample text with memory (streaming)",
                            description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (best/)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", action="append", help="text to continue (repeat it for several prompts)")
    prompt.add_argument("--prompt-file", help="file whose text to continue")
    prompt.add_argument("--prompts-file", help="file with one prompt per line, generated together as a batch")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1.0: off)")
    parser.add_argument("--seed", type=int, help="random seed (same seed, same text; prompt i uses seed + i)")
    parser.add_argument("--stop-at-eos", action="store_true", help="stop after an end-of-line token (word level)")
    parser.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    add_span_flags(parser)
    add_threads_flag(parser)
    parser.set_defaults(func=run)


MAX_NEW_TOKENS = 10_000_000  # a bound that still means hours of sampling; beyond it is a typo


class TextStream:
    """Turns token ids into text piece by piece: a UTF-8 character may span several byte tokens; words
    need spaces between them, and a WikiText vocabulary detokenizes (``Hello , world`` -> ``Hello, world``).

    Words are shown as the vocabulary decodes the current line: only the part that the last two decodings
    agree on is printed, the rest when the line ends. ``context``: the prompt's ids, whose last line the
    continuation extends (so the first word gets its space, or none before punctuation)."""

    def __init__(self, vocab: Any, context: list[int] | None = None) -> None:
        self.vocab = vocab
        self.bytes = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.line: list[int] = []
        self.shown = ""  # text of the current line printed so far (or given by the prompt)
        self.previous = ""
        if vocab.kind == "word" and context:
            for token in context:
                if self._ends_line(token):
                    self.line = []
                else:
                    self.line.append(token)
            self.shown = self.previous = self._line_text()

    def _ends_line(self, token: int) -> bool:
        return token == self.vocab.eos_id or (self.vocab.lines == "sentence" and token == self.vocab.bos_id)

    def _line_text(self) -> str:
        return self.vocab.decode(self.line) if self.line else ""

    def push(self, token: int) -> str:
        if self.vocab.kind == "byte":
            return self.bytes.decode(bytes([token]))
        if self.vocab.kind == "char":
            return self.vocab.decode([token])
        if self._ends_line(token):
            rest = self.flush()
            self.line, self.shown, self.previous = [], "", ""
            return rest + "\n"
        self.line.append(token)
        current = self._line_text()
        if self.vocab.normalization == "none":
            stable = current  # words joined by spaces: a new word never changes the text before it
        else:  # detokenized text may still change at its end (spacing around the next word)
            stable = os.path.commonprefix([self.previous, current]) if self.line[:-1] else ""
        self.previous = current
        return self._show(stable)

    def _show(self, text: str) -> str:
        if len(text) <= len(self.shown) or not text.startswith(self.shown):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def flush(self) -> str:
        if self.vocab.kind == "byte":
            return self.bytes.decode(b"", final=True)
        return self._show(self._line_text()) if self.vocab.kind == "word" else ""


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise TransformerXLError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise TransformerXLError(f"{what} {path} is not UTF-8 text ({exc})") from None


def _read_prompts(args: argparse.Namespace) -> list[str] | None:
    """The prompt texts the flags give, or None for none (start at the beginning of a line)."""
    if args.prompts_file is not None:
        prompts = [line for line in _read_text(args.prompts_file, "prompts file").splitlines() if line.strip()]
        if not prompts:
            raise TransformerXLError(f"the prompts file {args.prompts_file} has no prompt: write one per line")
        return prompts
    if args.prompt_file is not None:
        return [_read_text(args.prompt_file, "prompt file")]
    return args.prompt


def _encode(vocab: Any, text: str, label: str = "") -> list[int]:
    from ..generation import encode_prompt

    if not text or (vocab.kind == "word" and not text.strip()):
        raise TransformerXLError(f"the prompt{label} is empty: give some text with --prompt/--prompt-file, or "
                                 "leave both out to start at the beginning of a line")
    prompt = encode_prompt(vocab, text)
    unknown = sum(1 for t in prompt if t == getattr(vocab, "unk_id", None))
    if unknown:  # not silent: the continuation conditions on <unk>, not on what the user typed
        print(f"txl generate: warning: {unknown} prompt{label} symbol(s) are not in the vocabulary and were "
              "replaced by <unk>", file=sys.stderr, flush=True)
    return prompt


def run(args: argparse.Namespace) -> int:
    from ..data.vocab import check_vocab_size
    from ..generation import generate
    from ..runtime import load_checkpoint, resolve_device, resolve_span

    loaded = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    model, vocab = loaded.model, loaded.vocab
    if vocab is None:
        raise TransformerXLError(f"{args.checkpoint} has no vocab.json: cannot encode a prompt for it")
    check_vocab_size(vocab, model.config.n_token, source=loaded.path)
    span = resolve_span(model.config, loaded.saved_eval, **span_flags(args))
    if args.max_new_tokens > MAX_NEW_TOKENS:
        raise TransformerXLError(f"--max-new-tokens {args.max_new_tokens} is more than {MAX_NEW_TOKENS:,}; "
                                 "generate in several calls (or stop a long run with Ctrl-C)")
    texts = _read_prompts(args)
    if texts is not None and len(texts) > 1:
        return _run_batch(args, model, vocab, span, texts)
    text = None if texts is None else texts[0]
    if text is not None:
        prompt = _encode(vocab, text)
    else:
        start = vocab.eos_id if vocab.eos_id is not None else (vocab.encode("\n")[:1].tolist() or [0])[0]
        prompt, text = [int(start)], ""
    stream = TextStream(vocab, context=prompt)
    pieces: list[str] = []
    out = sys.stdout
    started = time.perf_counter()
    tokens = generate(model, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed, span=span,
                      stop_id=vocab.eos_id if args.stop_at_eos else None)
    first = next(tokens, None)  # reads the prompt; a bad sampling setting fails here, before anything is printed
    print(f"txl generate: span {span.describe()}; prompt {len(prompt):,} tokens", file=sys.stderr, flush=True)
    if args.echo:
        out.write(text)
    ids: list[int] = []
    for token in itertools.chain([] if first is None else [first], tokens):
        ids.append(token)
        piece = stream.push(token)
        if piece:
            pieces.append(piece)
            out.write(piece)
            out.flush()
    tail = stream.flush()
    pieces.append(tail)
    out.write(tail + "\n")
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({"prompt": text, "text": "".join(pieces), "tokens": len(ids), "ids": ids,
                          "prompt_ids": prompt, "tokens_per_s": len(ids) / max(elapsed, 1e-9), "seed": args.seed,
                          "span": span.to_dict()}))
    return 0


def _run_batch(args: argparse.Namespace, model: Any, vocab: Any, span: Any, texts: list[str]) -> int:
    """Several prompts as one batch; each result printed after a `### prompt I/N` line once all are done."""
    from ..generation import generate_batch

    n = len(texts)
    prompts = [_encode(vocab, text, f" {i + 1}/{n}") for i, text in enumerate(texts)]
    lengths = sorted(len(p) for p in prompts)
    print(f"txl generate: span {span.describe()}; {n} prompts of {lengths[0]:,} to {lengths[-1]:,} tokens, "
          "generated as one batch", file=sys.stderr, flush=True)
    started = time.perf_counter()
    rows = generate_batch(model, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, span=span,
                          stop_id=vocab.eos_id if args.stop_at_eos else None)
    elapsed = time.perf_counter() - started
    out = sys.stdout
    results = []
    for i, (text, prompt, ids) in enumerate(zip(texts, prompts, rows)):
        stream = TextStream(vocab, context=prompt)
        continuation = "".join(stream.push(token) for token in ids) + stream.flush()
        out.write(f"### prompt {i + 1}/{n}\n" + (text if args.echo else "") + continuation + "\n")
        results.append({"prompt": text, "text": continuation, "tokens": len(ids), "ids": ids, "prompt_ids": prompt,
                        "seed": None if args.seed is None else args.seed + i})
    out.flush()
    if args.json:
        total = sum(len(ids) for ids in rows)
        print(json.dumps({"results": results, "tokens": total, "tokens_per_s": total / max(elapsed, 1e-9),
                          "seed": args.seed, "span": span.to_dict()}))
    return 0
