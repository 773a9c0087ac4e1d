"""`txl ablate`: the paper's Table 6 ablation at a size that fits this machine.

    txl ablate --data data/enwik8-sample --out runs/ablate --preset tiny --train.max_steps 300 \\
               --model.seg_len 32 --model.mem_len 32 --max-tokens 4000

Trains, with the same data, steps, batch and segment length (equal training tokens) and d_inner adjusted
so every row has the parameter count of the first (equal parameters):

    xl              recurrence + Transformer-XL relative encoding
    shaw            recurrence + Shaw et al. relative encoding
    no-recurrence   Transformer-XL relative encoding, trained with mem_len 0
    vanilla         Al-Rfou et al.: learned absolute positions, mem_len 0 (evaluated with a sliding window)

then scores the --split at contexts start, start + step, ... (default: multiples of seg_len), and reports
perplexity (bpc on character data) at the training attention length and at the best longer one, and the
group's RECL. Writes ablation.json and report.md to --out. Python API:
transformer_xl.training.ablation.run_ablation (rows and reports: transformer_xl.analysis.ablation).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..analysis.ablation import ABLATION_ROWS
from ..config import ModelConfig, OptimConfig, TrainConfig
from .flags import add_config_flags, add_context_flags, add_subcommand, grid_flags, overrides

_PER_ROW = ("n_token", "attn_type")  # set per row / from the data, not by flags


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "ablate", help="train and compare the paper's Table 6 rows",
                            description=__doc__,
                            usage="txl ablate --data DATA --out DIR [--rows ROW ...] [--preset NAME] "
                                  "[--model.FIELD V ...] [--train.FIELD V ...] [--optim.FIELD V ...]")
    parser.add_argument("--out", required=True, help="directory: one run per row, ablation.json, report.md")
    parser.add_argument("--rows", nargs="+", choices=list(ABLATION_ROWS), default=list(ABLATION_ROWS),
                        help="rows to train (default: all four)")
    parser.add_argument("--preset", default="tiny", help="model preset the rows start from (default tiny)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.5, 1.0], help="RECL ratios r")
    add_context_flags(parser)
    add_config_flags(parser, "model", ModelConfig, skip=_PER_ROW)
    add_config_flags(parser, "train", TrainConfig)
    add_config_flags(parser, "optim", OptimConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.runs import open_data
    from ..runtime import resolve_device
    from ..training.ablation import run_ablation

    prepared = open_data(args.data)
    model_flags = overrides(args, "model")
    if "cutoffs" in model_flags and "tie_projs" not in model_flags:
        model_flags["tie_projs"] = None  # the default for the new number of clusters, not the preset's
    base = ModelConfig.preset(args.preset, n_token=len(prepared.vocab)).replace(**model_flags)
    result = run_ablation(prepared, args.out, base=base, rows=args.rows,
                          train_config=TrainConfig(**{"tensorboard": False, **overrides(args, "train")}),
                          optim_config=OptimConfig(**overrides(args, "optim")), split=args.split,
                          max_tokens=args.max_tokens, **grid_flags(args), seg_len=args.seg_len,
                          clamp_len=args.clamp_len, ratios=args.ratios, batch_size=args.batch_size,
                          cache_dir=Path(args.cache) if args.cache else None, device=resolve_device(args.device),
                          progress=None if not args.no_progress else False)
    print(result.table)
    if args.json:
        print(json.dumps({"rows": result.rows, "contexts": result.contexts, "out": str(result.out)}))
    return 0
