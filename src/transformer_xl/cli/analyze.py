"""`txl analyze`: loss by position in the segment, loss by context length, evaluation speed.

    txl analyze position --checkpoint runs/xl --data data/wt2 --out analysis/position
    txl analyze context  --checkpoint runs/xl --data data/wt2 --contexts 64 128 256 512 --out analysis/context
    txl analyze speed    --checkpoint runs/xl --data data/wt2 --attn-lens 256 512 800

position: mean loss at each position of a segment, carrying memory and restarting every segment (context
fragmentation: without memory the first tokens are predicted almost blind). context: mean loss at each
context c (per-token losses cached for `txl recl`). speed: per-token time of cached XL evaluation against
the vanilla sliding window at the same attention length (the paper's Table 9). Numbers go to JSON / CSV /
Markdown in --out; PNGs too when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import TransformerXLError
from .flags import add_subcommand, one_line_errors
from .recl import add_context_flags, context_grid, load_checkpoint, load_tokens


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "analyze", help="loss by position / by context, evaluation speed",
                            description=__doc__)
    kinds = parser.add_subparsers(dest="analysis", metavar="ANALYSIS")
    kinds.required = True

    position = one_line_errors(kinds.add_parser("position", help="loss by position in the segment"))
    _common(position)
    position.add_argument("--split", default="test", help="split to score (default: test)")
    position.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (0: all)")
    position.add_argument("--seg-len", type=int, help="segment length (default: the model's)")
    position.add_argument("--mem-len", type=int, help="memory length (default: the model's)")
    position.add_argument("--batch-size", type=int, default=8, help="parallel streams (default 8)")
    position.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    position.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    position.set_defaults(func=run_position)

    context = one_line_errors(kinds.add_parser("context", help="mean loss at each context length"))
    _common(context)
    add_context_flags(context, data=False)
    context.set_defaults(func=run_context)

    speed = one_line_errors(kinds.add_parser("speed", help="XL cached evaluation vs the vanilla sliding window"))
    _common(speed)
    speed.add_argument("--split", default="test", help="split to read tokens from (default: test)")
    speed.add_argument("--attn-lens", nargs="+", type=int, default=[256, 512, 800], help="attention lengths")
    speed.add_argument("--seg-len", type=int, default=64, help="XL evaluation segment (default 64)")
    speed.add_argument("--xl-tokens", type=int, default=1024, help="tokens timed for XL (default 1024)")
    speed.add_argument("--vanilla-tokens", type=int, default=64, help="tokens timed for the window (default 64)")
    speed.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    speed.add_argument("--json", action="store_true", help="print the rows as JSON on the last line")
    speed.set_defaults(func=run_speed, max_tokens=0)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--data", required=True, help="prepared data directory (the model's vocabulary)")
    parser.add_argument("--out", default=None, help="directory for the numbers, report and plots")


def _out(args: argparse.Namespace, default: str) -> Path:
    out = Path(args.out or f"analysis/{default}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_position(args: argparse.Namespace) -> int:
    from ..analysis.context import loss_by_position
    from ..analysis.plots import have_matplotlib, plot_loss_by_position, position_report
    from ..training.distributed import resolve_device

    device = resolve_device(args.device)
    prepared, tokens = load_tokens(args)
    model = load_checkpoint(args.checkpoint, prepared, device)
    result = loss_by_position(model, tokens, seg_len=args.seg_len, mem_len=args.mem_len, batch_size=args.batch_size)
    out = _out(args, "position")
    (out / "position.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    (out / "position.csv").write_text(result.to_csv(), encoding="utf-8")
    report = position_report(result)
    (out / "report.md").write_text(report, encoding="utf-8")
    if have_matplotlib():
        plot_loss_by_position(result, out / "position.png")
    print(report)
    if args.json:
        print(json.dumps({**result.to_dict(), "out": str(out)}))
    return 0


def run_context(args: argparse.Namespace) -> int:
    from ..analysis.context import context_losses
    from ..analysis.plots import have_matplotlib, plot_context_curves
    from ..training.distributed import resolve_device

    device = resolve_device(args.device)
    prepared, tokens = load_tokens(args)
    model = load_checkpoint(args.checkpoint, prepared, device)
    grid = context_grid(args, [model.config.seg_len])
    out = _out(args, "context")
    curve = context_losses(model, tokens, grid, seg_len=args.seg_len, batch_size=args.batch_size,
                           cache_dir=Path(args.cache) if args.cache else out / "cache",
                           name=Path(args.checkpoint).name, device=device, progress=not args.no_progress)
    means = curve.mean()
    record = {"method": curve.method, "contexts": grid, "effective": curve.effective,
              "mean_loss": {str(c): v for c, v in means.items()}, "n_tokens": int(curve.losses.shape[1])}
    (out / "context.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    lines = ["| context c | mean loss |", "|---:|---:|"] + [f"| {c} | {v:.4f} |" for c, v in means.items()]
    (out / "report.md").write_text(f"# Loss by context ({curve.method})\n\n" + "\n".join(lines) + "\n",
                                   encoding="utf-8")
    if have_matplotlib():
        plot_context_curves([curve], out / "loss_by_context.png")
    print("\n".join(lines))
    if args.json:
        print(json.dumps({**record, "out": str(out)}))
    return 0


def run_speed(args: argparse.Namespace) -> int:
    from ..analysis.speed import eval_speed, speed_table
    from ..training.distributed import resolve_device

    device = resolve_device(args.device)
    prepared, tokens = load_tokens(args)
    model = load_checkpoint(args.checkpoint, prepared, device)
    if any(a < 1 for a in args.attn_lens):
        raise TransformerXLError(f"--attn-lens must be positive, got {args.attn_lens}")
    rows = eval_speed(model, tokens, args.attn_lens, seg_len=args.seg_len, xl_tokens=args.xl_tokens,
                      vanilla_tokens=args.vanilla_tokens)
    table = speed_table(rows)
    if args.out:
        out = _out(args, "speed")
        (out / "speed.json").write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n", encoding="utf-8")
        (out / "report.md").write_text(f"# Evaluation speed ({device})\n\n{table}\n", encoding="utf-8")
    print(table)
    if args.json:
        print(json.dumps({"device": str(device), "rows": [r.to_dict() for r in rows]}))
    return 0
