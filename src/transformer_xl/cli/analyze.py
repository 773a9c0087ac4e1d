"""`txl analyze`: loss by position in the segment, loss by context length, evaluation speed.

    txl analyze position --checkpoint runs/xl --data data/wt2 --out analysis/position
    txl analyze context  --checkpoint runs/xl --data data/wt2 --contexts 64 128 256 512 --out analysis/context
    txl analyze speed    --checkpoint runs/xl --data data/wt2 --attn-lens 256 512 800

position: mean loss at each position of a segment, carrying memory and restarting every segment (context
fragmentation: without memory the first tokens are predicted almost blind). context: mean loss at each
context c (per-token losses cached for `txl recl`). speed: per-token time of cached XL evaluation against
the vanilla sliding window at the same attention length (the paper's Table 9). The span is chosen as by
`txl eval` (each flag, else the run's saved evaluation setting, else the training value) and printed.
Numbers go to JSON / CSV / Markdown in --out; PNGs too when matplotlib is installed. Python API:
transformer_xl.analysis (loss_by_position, context_losses, eval_speed, write_*_outputs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import TransformerXLError
from .flags import (
    add_context_flags,
    add_span_flags,
    add_subcommand,
    add_threads_flag,
    grid_flags,
    one_line_errors,
    span_flags,
)


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "analyze", help="loss by position / by context, evaluation speed",
                            description=__doc__)
    kinds = parser.add_subparsers(dest="analysis", metavar="ANALYSIS")
    kinds.required = True

    position = one_line_errors(kinds.add_parser("position", help="loss by position in the segment"))
    _common(position)
    position.add_argument("--split", default="test", help="split to score (default: test)")
    position.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (0: all)")
    add_span_flags(position)
    position.add_argument("--batch-size", type=int, default=8, help="parallel streams (default 8)")
    position.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    position.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    add_threads_flag(position)
    position.set_defaults(func=run_position)

    context = one_line_errors(kinds.add_parser("context", help="mean loss at each context length"))
    _common(context)
    add_context_flags(context, data=False)
    context.set_defaults(func=run_context)

    speed = one_line_errors(kinds.add_parser("speed", help="XL cached evaluation vs the vanilla sliding window"))
    _common(speed)
    speed.add_argument("--split", default="test", help="split to read tokens from (default: test)")
    speed.add_argument("--attn-lens", nargs="+", type=int, default=[256, 512, 800], help="attention lengths")
    add_span_flags(speed, fields=("seg_len", "clamp_len"))  # mem_len is each attention length, same_length on
    speed.add_argument("--xl-tokens", type=int, default=1024, help="tokens timed for XL (default 1024)")
    speed.add_argument("--vanilla-tokens", type=int, default=64, help="tokens timed for the window (default 64)")
    speed.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    speed.add_argument("--json", action="store_true", help="print the rows as JSON on the last line")
    add_threads_flag(speed)
    speed.set_defaults(func=run_speed, max_tokens=0)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--data", required=True, help="prepared data directory (the model's vocabulary)")
    parser.add_argument("--out", default=None, help="directory for the numbers, report and plots")


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(loaded checkpoint, tokens, span, device) of an analysis command."""
    from ..analysis.runs import load_for_data, open_data, split_tokens
    from ..runtime import resolve_device, resolve_span

    device = resolve_device(args.device)
    prepared = open_data(args.data)
    tokens = split_tokens(prepared, args.split, args.max_tokens)
    loaded = load_for_data(args.checkpoint, prepared, device=device)
    span = resolve_span(loaded.model.config, loaded.saved_eval, **span_flags(args))
    return loaded, tokens, span, device


def _out(args: argparse.Namespace, default: str) -> Path:
    return Path(args.out or f"analysis/{default}")


def run_position(args: argparse.Namespace) -> int:
    from ..analysis.context import loss_by_position
    from ..analysis.plots import position_report
    from ..analysis.report import write_position_outputs

    loaded, tokens, span, _ = _load(args)
    result = loss_by_position(loaded.model, tokens, span=span, batch_size=args.batch_size)
    out = _out(args, "position")
    write_position_outputs(out, result)
    print(f"span: {span.describe()} (and mem_len 0 for the pass without memory)")
    print(position_report(result))
    if args.json:
        print(json.dumps({**result.to_dict(), "out": str(out)}))
    return 0


def run_context(args: argparse.Namespace) -> int:
    from ..analysis.context import context_losses
    from ..analysis.report import (
        context_grid,
        context_record,
        context_span_text,
        context_table,
        write_context_outputs,
    )

    loaded, tokens, span, device = _load(args)
    grid = context_grid([loaded.model.config.seg_len], **grid_flags(args))
    out = _out(args, "context")
    curve = context_losses(loaded.model, tokens, grid, span=span, batch_size=args.batch_size,
                           cache_dir=Path(args.cache) if args.cache else out / "cache",
                           name=Path(args.checkpoint).name, device=device, progress=not args.no_progress)
    text = context_span_text(curve.method, span)
    write_context_outputs(out, curve, span_text=text)
    print(text)
    print(f"scored {curve.losses.shape[1]:,} tokens of {args.split} at each context")
    print(context_table(curve))
    if args.json:
        print(json.dumps({**context_record(curve), "span": span.to_dict(), "out": str(out)}))
    return 0


def run_speed(args: argparse.Namespace) -> int:
    from ..analysis.report import write_speed_outputs
    from ..analysis.speed import eval_speed, speed_table

    if any(a < 1 for a in args.attn_lens):
        raise TransformerXLError(f"--attn-lens must be positive, got {args.attn_lens}")
    loaded, tokens, span, device = _load(args)
    rows = eval_speed(loaded.model, tokens, args.attn_lens, span=span, xl_tokens=args.xl_tokens,
                      vanilla_tokens=args.vanilla_tokens)
    text = f"{span.describe()}, with mem_len = each attention length and same_length on"
    if args.out:
        write_speed_outputs(_out(args, "speed"), rows, device=device, span_text=text)
    print(f"XL span: {text}")
    print(speed_table(rows))
    if args.json:
        print(json.dumps({"device": str(device), "span": span.to_dict(), "rows": [r.to_dict() for r in rows]}))
    return 0
