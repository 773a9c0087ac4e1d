"""`txl score FILE`: the log-probability of every token of a text, and its perplexity.

    txl score --checkpoint runs/demo/best notes.txt            # one line per token, then the summary
    txl score --checkpoint runs/demo/best big.txt --summary-only --json
    cat notes.txt | txl score --checkpoint runs/demo/best -

The text is read in pieces and scored segment by segment with memory, so memory use stays constant
however long the file is. The first token has no context and is not scored. The span is chosen as by
`txl eval` (each flag, else the run's saved evaluation setting, else the training value), so the same
checkpoint gives the same loss on the same text as `txl eval --batch-size 1`; it is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Iterator

import numpy as np

from ..config import TransformerXLError
from .flags import add_span_flags, add_subcommand, span_flags

READ_CHARS = 1 << 16  # text read per piece


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "score", help="per-token log-probabilities and perplexity of a text",
                            description=__doc__)
    parser.add_argument("file", metavar="FILE", help="text file to score ('-' for standard input)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (best/)")
    add_span_flags(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--summary-only", action="store_true", help="no per-token lines")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    parser.set_defaults(func=run)


def read_pieces(path: str, vocab: Any) -> Iterator[np.ndarray]:
    """Token ids of the file, piece by piece (bytes raw for a byte vocabulary; text by whole lines
    otherwise, so that no word is cut in two)."""
    if vocab.kind == "byte":
        handle = sys.stdin.buffer if path == "-" else _open(path, "rb")
        with handle if path != "-" else _nullcontext(handle):
            while block := handle.read(READ_CHARS):
                yield np.frombuffer(block, dtype=np.uint8)
        return
    handle = sys.stdin if path == "-" else _open(path, "r")
    with handle if path != "-" else _nullcontext(handle):
        lines: list[str] = []
        size = 0
        for line in handle:
            lines.append(line)
            size += len(line)
            if size >= READ_CHARS:
                yield vocab.encode("".join(lines))
                lines, size = [], 0
        if lines:
            yield vocab.encode("".join(lines))


class _nullcontext:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        return None


def _open(path: str, mode: str) -> Any:
    try:
        return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise TransformerXLError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise TransformerXLError(f"{path} is a directory; give a text file") from None


def token_text(vocab: Any, token: int) -> str:
    """A readable, one-line rendering of one token."""
    if vocab.kind == "byte" and token >= 0x80:
        return vocab.symbol(token)  # part of a multi-byte character: show the byte, e.g. <0xC3>
    text = vocab.decode([token]) if vocab.kind != "word" else vocab.symbol(token)
    return json.dumps(text, ensure_ascii=False)[1:-1]


def run(args: argparse.Namespace) -> int:
    from ..evaluation import score_tokens
    from ..runtime import load_checkpoint, resolve_device, resolve_span

    loaded = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    model, vocab = loaded.model, loaded.vocab
    if vocab is None:
        raise TransformerXLError(f"{args.checkpoint} has no vocab.json: cannot encode text for it")
    span = resolve_span(model.config, loaded.saved_eval, **span_flags(args))
    total, count = 0.0, 0
    out = sys.stdout
    try:
        for token, log_prob in score_tokens(model, read_pieces(args.file, vocab), span=span):
            count += 1
            total += log_prob
            if not args.summary_only:
                out.write(f"{count}\t{token_text(vocab, token)}\t{log_prob:.4f}\n")
    except UnicodeDecodeError as exc:
        raise TransformerXLError(f"{args.file} is not UTF-8 text ({exc})") from None
    if count == 0:
        raise TransformerXLError(f"{args.file} has fewer than 2 tokens: nothing to score")
    loss = -total / count
    summary = {"file": args.file, "tokens": count, "tokens_read": count + 1, "loss": loss,
               "ppl": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2),
               "bpc": loss / math.log(2) if vocab.kind in ("char", "byte") else None,
               "span": span.to_dict()}
    # one summary line: the per-token lines above it stay exactly one per scored token
    line = (f"scored {count:,} of {count + 1:,} tokens (the first has no context) with span {span.describe()}: "
            f"loss {loss:.4f} nats/token, ppl {summary['ppl']:.3f}")
    if summary["bpc"] is not None:
        line += f", bpc {summary['bpc']:.4f}"
    print(line)
    if args.json:
        print(json.dumps(summary))
    return 0
