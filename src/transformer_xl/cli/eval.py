"""`txl eval`: perplexity and bits per character of a checkpoint on a split, at any span.

    txl eval --checkpoint runs/wt103 --data data/wt103 --split test --seg-len 64 --mem-len 640 --clamp-len 400
    txl eval --checkpoint runs/demo/best --data data/pystdlib --mem-len 0 --json

Every token of the split is scored exactly once, in order; --max-tokens N scores only the first N (and
the output says so). The span: each flag, else the run's saved evaluation setting (a preset's published
span), else the training value; it is printed. --batch-size and --warmup default to the run's saved
evaluation settings. --warmup N feeds up to N earlier tokens before each stream so that its first scored
tokens already have a full memory.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EvalConfig
from .flags import add_span_flags, add_subcommand, add_threads_flag, span_flags
from .jsonout import json_line


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "eval", help="perplexity / bits per character with any memory length",
                            description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (best/)")
    parser.add_argument("--data", required=True, help="prepared data directory (same vocabulary)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    add_span_flags(parser)
    parser.add_argument("--batch-size", type=int, help="parallel streams (default: the run's, else 1)")
    parser.add_argument("--warmup", type=int, help="unscored tokens of context before each stream")
    parser.add_argument("--max-tokens", type=int, default=0,
                        help="score only the first N tokens of the split (default: all of them)")
    parser.add_argument("--sliding-window", action="store_true",
                        help="vanilla baseline: no memory, every token from a fresh window of seg-len tokens")
    parser.add_argument("--stride", type=int, default=1,
                        help="with --sliding-window: advance the window this many tokens at a time (1: the paper)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--per-token", metavar="FILE", help="write the per-token losses (nats) as .npy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    add_threads_flag(parser)
    parser.set_defaults(func=run)


def coverage(n_scored: int, n_available: int, *, max_tokens: int) -> str:
    """'scored N of M tokens', saying loudly when that is only part of the split."""
    text = f"scored {n_scored:,} of {n_available:,} tokens"
    if n_scored < n_available:
        text += (f" (PARTIAL: only the first {n_scored:,}, as --max-tokens {max_tokens} asked; "
                 "not the whole split's result)")
    return text


def run(args: argparse.Namespace) -> int:
    from ..analysis.runs import check_vocabulary
    from ..data.cache import load_prepared
    from ..evaluation import evaluate, sliding_window_evaluate
    from ..runtime import load_checkpoint, resolve_device, resolve_span

    loaded = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    model = loaded.model
    prepared = load_prepared(args.data)
    check_vocabulary(loaded.vocab, prepared.vocab, model.config.n_token, checkpoint=loaded.path, data=args.data)
    tokens = prepared.split(args.split)
    span = resolve_span(model.config, loaded.saved_eval, **span_flags(args))
    saved = loaded.saved_eval or EvalConfig()
    batch_size = args.batch_size if args.batch_size is not None else saved.batch_size
    warmup = args.warmup if args.warmup is not None else saved.warmup
    # validates the ranges with messages that name the field; max_tokens only ever comes from the command line
    EvalConfig(split=args.split, batch_size=batch_size, warmup=warmup, max_tokens=args.max_tokens)
    progress = False if args.no_progress else None
    if args.sliding_window:
        result = sliding_window_evaluate(model, tokens, window=span.seg_len, stride=args.stride,
                                         max_tokens=args.max_tokens, level=prepared.vocab.kind,
                                         return_per_token=bool(args.per_token), progress=progress)
        used = f"sliding window of {result.seg_len} tokens (stride {args.stride}), no memory"
    else:
        result = evaluate(model, tokens, span=span, batch_size=batch_size, warmup=warmup,
                          max_tokens=args.max_tokens, level=prepared.vocab.kind, precision=args.precision,
                          return_per_token=bool(args.per_token), progress=progress)
        used = result.span.describe()
    if args.per_token:
        np.save(Path(args.per_token), result.per_token)
    n_available = result.n_available if result.n_available is not None else result.n_tokens
    print(f"span: {used}")
    line = (f"{args.split}: {coverage(result.n_tokens, n_available, max_tokens=args.max_tokens)}: "
            f"loss {result.loss:.4f}, ppl {result.ppl:.3f}")
    if result.bpc is not None:
        line += f", bpc {result.bpc:.4f}"
    print(line)
    if args.json:
        print(json_line({"checkpoint": str(loaded.path), "split": args.split,
                          "sliding_window": bool(args.sliding_window), "span": used, **result.to_dict(),
                          "partial": result.partial}))
    return 0
