"""`txl score FILE`: the log-probability of every token of a text, and its perplexity.

    txl score --checkpoint runs/demo/best notes.txt            # one line per token, then the summary
    txl score --checkpoint runs/demo/best big.txt --summary-only --json
    cat notes.txt | txl score --checkpoint runs/demo/best -

The text is read in pieces and scored segment by segment with memory, so memory use stays constant
however long the file is, even a single line (text8 is one 100 MB line: word and character vocabularies
cut it between words). The first token has no context and is not scored. Symbols outside the vocabulary
are scored as <unk>, with one warning on stderr saying how many. The span is chosen as by
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
from .flags import add_span_flags, add_subcommand, add_threads_flag, span_flags
from .jsonout import json_line

READ_CHARS = 1 << 16  # text read per piece
MAX_CARRY = 1 << 22  # characters held waiting for a line end (a sentence) or a space before cutting anyway


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "score", help="per-token log-probabilities and perplexity of a text",
                            description=__doc__)
    parser.add_argument("file", metavar="FILE", help="text file to score ('-' for standard input)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (best/)")
    add_span_flags(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--summary-only", action="store_true", help="no per-token lines")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    add_threads_flag(parser)
    parser.set_defaults(func=run)


class _Encoder:
    """Text -> ids for one vocabulary, counting the symbols that fell back to <unk> (``misses``)."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab
        self.char_table = vocab.char_table() if vocab.kind == "char" else None
        self.counter = [0]
        self.lookup = vocab.lookup("in the text") if vocab.kind == "word" else None

    @property
    def misses(self) -> int:
        return self.counter[0] + (self.lookup.misses if self.lookup is not None else 0)

    def __call__(self, text: str, *, final: bool) -> np.ndarray:
        vocab = self.vocab
        if vocab.kind == "char":
            return vocab.encode_chars(vocab.prepare_text(text), table=self.char_table, counter=self.counter)
        words = vocab.tokenize(text, final=final)
        return np.fromiter(map(self.lookup.__getitem__, words), dtype=vocab.dtype, count=len(words))


def _cut(data: str, vocab: Any) -> int:
    """Where to end a piece of text: after its last line end; failing that, for a word vocabulary, after
    its last space (a sentence-level one waits for a line end up to MAX_CARRY); for a character vocabulary
    anywhere but between a carriage return and its line feed. 0: read more first."""
    cut = data.rfind("\n") + 1
    if cut:
        return cut
    if vocab.kind == "word":
        if getattr(vocab, "lines", "none") != "sentence" or len(data) > MAX_CARRY:
            cut = max(data.rfind(" "), data.rfind("\t")) + 1
        return cut or (len(data) if len(data) > MAX_CARRY else 0)
    return len(data) - 1 if data.endswith("\r") else len(data)


def read_pieces(path: str, vocab: Any, encoder: _Encoder | None = None) -> Iterator[np.ndarray]:
    """Token ids of the file, piece by piece, in constant memory (bytes raw for a byte vocabulary; text
    cut at line ends, else between words, so that no word is cut in two, even on a single long line)."""
    if vocab.kind == "byte":
        handle = sys.stdin.buffer if path == "-" else _open(path, "rb")
        with handle if path != "-" else _nullcontext(handle):
            while block := handle.read(READ_CHARS):
                yield np.frombuffer(block, dtype=np.uint8)
        return
    encode = encoder if encoder is not None else _Encoder(vocab)
    handle = sys.stdin if path == "-" else _open(path, "r")
    with handle if path != "-" else _nullcontext(handle):
        carry = ""
        while block := handle.read(READ_CHARS):
            data = carry + block
            cut = _cut(data, vocab)
            if cut <= 0:
                carry = data
                continue
            yield encode(data[:cut], final=False)
            carry = data[cut:]
        yield encode(carry, final=True)


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
    encoder = _Encoder(vocab) if vocab.kind != "byte" else None
    try:
        for token, log_prob in score_tokens(model, read_pieces(args.file, vocab, encoder), span=span):
            count += 1
            total += log_prob
            if not args.summary_only:
                out.write(f"{count}\t{token_text(vocab, token)}\t{log_prob:.4f}\n")
    except UnicodeDecodeError as exc:
        raise TransformerXLError(f"{args.file} is not UTF-8 text ({exc})") from None
    if count == 0:
        raise TransformerXLError(f"{args.file} has fewer than 2 tokens: nothing to score")
    if encoder is not None and encoder.misses:  # not silent: those tokens were scored as <unk>
        print(f"txl score: warning: {encoder.misses:,} symbol(s) of {args.file} are not in the vocabulary and "
              "were scored as <unk>", file=sys.stderr, flush=True)
    loss = -total / count
    summary = {"file": args.file, "tokens": count, "tokens_read": count + 1, "loss": loss,
               "ppl": math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan,
               "bits_per_token": loss / math.log(2),
               "bpc": loss / math.log(2) if vocab.kind in ("char", "byte") else None,
               "span": span.to_dict()}
    # one summary line: the per-token lines above it stay exactly one per scored token
    line = (f"scored {count:,} of {count + 1:,} tokens (the first has no context) with span {span.describe()}: "
            f"loss {loss:.4f} nats/token, ppl {summary['ppl']:.3f}")
    if summary["bpc"] is not None:
        line += f", bpc {summary['bpc']:.4f}"
    print(line)
    if args.json:
        print(json_line(summary))
    return 0
