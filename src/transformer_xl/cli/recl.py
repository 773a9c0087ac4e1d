"""`txl recl`: Relative Effective Context Length of a group of models (paper, Appendix C and Table 8).

    txl recl --checkpoints runs/xl runs/vanilla --data data/wt2 --split test --max-tokens 20000 \\
             --start 100 --step 100 --max-context 600 --out analysis/recl

Each model scores every token at each context c (Transformer-XL: same_length with memory c; the vanilla
model: a window of c tokens), cached under OUT/cache so reruns and other analyses reuse the pass. The
group's best loss at the short context is the shared baseline; RECL is the longest context whose step
still brings a relative gain of at least --threshold on the top-r hardest tokens. Each model's segment
length and clamp come from --seg-len/--clamp-len, else its run's saved evaluation span, else training's
(printed). Writes recl.json, gains.csv, report.md (and gains PNGs when matplotlib is installed) to --out.
Python API: transformer_xl.analysis.recl_of_checkpoints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .flags import add_context_flags, add_subcommand, grid_flags


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "recl", help="relative effective context length of a model group",
                            description=__doc__)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="checkpoint or run directories (the group)")
    parser.add_argument("--names", nargs="+", help="row names (default: the directory names)")
    add_context_flags(parser)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.5, 1.0],
                        help="fractions r of the hardest tokens (default 0.1 0.5 1.0)")
    parser.add_argument("--threshold", type=float, default=0.01, help="relative gain threshold (default 0.01)")
    parser.add_argument("--out", default="analysis/recl", help="directory for the results (default analysis/recl)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.report import context_span_text, write_recl_outputs
    from ..analysis.runs import recl_of_checkpoints
    from ..runtime import resolve_device

    out = Path(args.out)
    group = recl_of_checkpoints(args.checkpoints, args.data, split=args.split, max_tokens=args.max_tokens,
                                names=args.names, **grid_flags(args), seg_len=args.seg_len,
                                clamp_len=args.clamp_len, batch_size=args.batch_size, ratios=args.ratios,
                                threshold=args.threshold, cache_dir=Path(args.cache) if args.cache else out / "cache",
                                device=resolve_device(args.device), progress=not args.no_progress)
    write_recl_outputs(out, group.result, group.curves)
    for curve in group.curves:
        print(f"{curve.name}: {context_span_text(curve.method, group.spans[curve.name])}")
    print(group.result.table())
    print(f"scored {group.n_tokens:,} tokens of {args.split} at contexts {group.contexts}, step "
          f"{group.result.step}, threshold {group.result.threshold}; gain curves in {out}")
    if args.json:
        print(json.dumps({**group.to_dict(), "out": str(out)}))
    return 0
