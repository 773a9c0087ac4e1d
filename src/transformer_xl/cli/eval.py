"""`txl eval`: perplexity and bits per character of a checkpoint on a split, at any attention lengths.

    txl eval --checkpoint runs/wt103 --data data/wt103 --split test --seg-len 64 --mem-len 640 --clamp-len 400
    txl eval --checkpoint runs/demo/best --data data/pystdlib --mem-len 0 --json

Every token of the split is scored exactly once, in order. Lengths default to the run's evaluation
lengths (a preset's published ones) or else its training lengths. --warmup N feeds up to N earlier
tokens before each stream so that its first scored tokens already have a full memory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import EvalConfig, TransformerXLError
from .flags import add_subcommand


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "eval", help="perplexity / bits per character with any memory length",
                            description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run directory (best/)")
    parser.add_argument("--data", required=True, help="prepared data directory (same vocabulary)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--seg-len", type=int, help="tokens per evaluation segment")
    parser.add_argument("--mem-len", type=int, help="memory length (0: no recurrence)")
    parser.add_argument("--clamp-len", type=int, help="relative distances beyond this share one encoding")
    parser.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None,
                        help="every query attends to the same number of keys")
    parser.add_argument("--batch-size", type=int, help="parallel streams (default 1)")
    parser.add_argument("--warmup", type=int, help="unscored tokens of context before each stream")
    parser.add_argument("--max-tokens", type=int, help="score only the first N tokens of the split")
    parser.add_argument("--sliding-window", action="store_true",
                        help="vanilla baseline: no memory, every token from a fresh window of seg-len tokens")
    parser.add_argument("--stride", type=int, default=1,
                        help="with --sliding-window: advance the window this many tokens at a time (1: the paper)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--per-token", metavar="FILE", help="write the per-token losses (nats) as .npy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    parser.set_defaults(func=run)


def check_vocabulary(checkpoint_vocab: Any, data_vocab: Any, n_token: int, *, checkpoint: Any, data: Any) -> None:
    """A checkpoint scores only data encoded with its own vocabulary."""
    if checkpoint_vocab is not None and data_vocab is not None and checkpoint_vocab != data_vocab:
        raise TransformerXLError(
            f"{checkpoint} was trained with another vocabulary than {data} ({checkpoint_vocab.kind}, "
            f"{len(checkpoint_vocab)} symbols vs {data_vocab.kind}, {len(data_vocab)}); prepare the data with "
            f"`txl prepare ... --vocab {checkpoint}/vocab.json`")
    if data_vocab is not None and len(data_vocab) != n_token:
        raise TransformerXLError(f"{data} has {len(data_vocab)} symbols but the model {checkpoint} predicts "
                                 f"{n_token}: the data was prepared with another vocabulary")


def run(args: argparse.Namespace) -> int:
    from ..data.cache import load_prepared
    from ..evaluation import evaluate, sliding_window_evaluate
    from ..training.checkpoint import load_model, resolve_checkpoint
    from ..training.distributed import resolve_device

    device = resolve_device(args.device)
    checkpoint = resolve_checkpoint(args.checkpoint)
    model, vocab, run_config = load_model(checkpoint, device=device)
    prepared = load_prepared(args.data)
    check_vocabulary(vocab, prepared.vocab, model.config.n_token, checkpoint=checkpoint, data=args.data)
    tokens = prepared.split(args.split)
    saved = run_config.eval if run_config is not None else EvalConfig()
    given = dict(seg_len=args.seg_len, mem_len=args.mem_len, clamp_len=args.clamp_len,
                 same_length=args.same_length, batch_size=args.batch_size, warmup=args.warmup,
                 max_tokens=args.max_tokens)
    values = {k: (v if v is not None else getattr(saved, k)) for k, v in given.items()}
    EvalConfig(split=args.split, **values)  # validates ranges with messages that name the flag's field
    progress = False if args.no_progress else None
    if args.sliding_window:
        result = sliding_window_evaluate(model, tokens, window=values["seg_len"], stride=args.stride,
                                         max_tokens=values["max_tokens"],
                                         level=prepared.vocab.kind, return_per_token=bool(args.per_token),
                                         progress=progress)
    else:
        result = evaluate(model, tokens, batch_size=values["batch_size"], seg_len=values["seg_len"],
                          mem_len=values["mem_len"], clamp_len=values["clamp_len"],
                          same_length=values["same_length"], warmup=values["warmup"],
                          max_tokens=values["max_tokens"], level=prepared.vocab.kind, precision=args.precision,
                          return_per_token=bool(args.per_token), progress=progress)
    if args.per_token:
        np.save(Path(args.per_token), result.per_token)
    mode = "sliding window" if args.sliding_window else f"mem_len {result.mem_len}"
    line = (f"{args.split}: {result.n_tokens:,} tokens, seg_len {result.seg_len}, {mode}, clamp_len "
            f"{result.clamp_len}, same_length {result.same_length}: loss {result.loss:.4f}, ppl {result.ppl:.3f}")
    if result.bpc is not None:
        line += f", bpc {result.bpc:.4f}"
    print(line)
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "split": args.split,
                          "sliding_window": bool(args.sliding_window), **result.to_dict()}))
    return 0
