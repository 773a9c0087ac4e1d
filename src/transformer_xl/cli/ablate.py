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
group's RECL. Writes ablation.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..config import ModelConfig, OptimConfig, RunConfig, TrainConfig, TransformerXLError
from .flags import add_config_flags, add_subcommand, overrides
from .recl import add_context_flags, context_grid, load_tokens, write_recl_outputs

# row name -> (attention type, trained with recurrence)
ROWS = {"xl": ("xl", True), "shaw": ("shaw", True), "no-recurrence": ("xl", False), "vanilla": ("al-rfou", False)}
_LENGTHS = ("n_token", "attn_type")  # set per row / from the data, not by flags


def register(subparsers: Any) -> None:
    parser = add_subcommand(subparsers, "ablate", help="train and compare the paper's Table 6 rows",
                            description=__doc__,
                            usage="txl ablate --data DATA --out DIR [--rows ROW ...] [--preset NAME] "
                                  "[--model.FIELD V ...] [--train.FIELD V ...] [--optim.FIELD V ...]")
    parser.add_argument("--out", required=True, help="directory: one run per row, ablation.json, report.md")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS),
                        help="rows to train (default: all four)")
    parser.add_argument("--preset", default="tiny", help="model preset the rows start from (default tiny)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.5, 1.0], help="RECL ratios r")
    add_context_flags(parser)
    add_config_flags(parser, "model", ModelConfig, skip=_LENGTHS)
    add_config_flags(parser, "train", TrainConfig)
    add_config_flags(parser, "optim", OptimConfig)
    parser.set_defaults(func=run)


def _row_config(base: ModelConfig, row: str) -> ModelConfig:
    attn_type, recurrence = ROWS[row]
    return base.replace(attn_type=attn_type, mem_len=base.mem_len if recurrence else 0,
                        same_length=False if not recurrence else base.same_length)


def _count(config: ModelConfig) -> int:
    from ..model import TransformerXLLM

    return TransformerXLLM(config).num_parameters()


def equal_parameters(config: ModelConfig, target: int) -> ModelConfig:
    """``config`` with the d_inner whose parameter count is closest to ``target`` (counts are linear in it)."""
    low, high = _count(config.replace(d_inner=1)), _count(config.replace(d_inner=2))
    per_unit = high - low
    d_inner = max(1, round(1 + (target - low) / per_unit))
    return config.replace(d_inner=d_inner)


def _finished(run_dir: Path, config: RunConfig) -> bool:
    """True when ``run_dir`` holds a finished run of exactly ``config`` (an ablation rerun reuses it)."""
    from ..training.checkpoint import load_run_config, load_training_state, resolve_checkpoint

    if not (run_dir / "last").exists():
        return False
    last = resolve_checkpoint(run_dir / "last")
    saved = load_run_config(last)
    if saved is None or saved.to_dict() != config.to_dict():
        raise TransformerXLError(f"{run_dir} holds another run than this ablation row; choose another --out")
    return int(load_training_state(last)["step"]) >= config.train.max_steps


def _train_attention(config: ModelConfig) -> int:
    """Tokens a prediction saw in training: memory (or the segment) for recurrent rows, the segment otherwise."""
    return max(config.seg_len, config.mem_len) if config.mem_len > 0 else config.seg_len


def run(args: argparse.Namespace) -> int:
    from ..analysis.context import context_losses
    from ..analysis.recl import recl
    from ..training import load_model, train
    from ..training.distributed import resolve_device

    out = Path(args.out)
    prepared, tokens = load_tokens(args)
    level = prepared.vocab.kind
    model_flags = overrides(args, "model")
    if "cutoffs" in model_flags and "tie_projs" not in model_flags:
        model_flags["tie_projs"] = None  # the default for the new number of clusters, not the preset's
    base = ModelConfig.preset(args.preset, n_token=len(prepared.vocab)).replace(**model_flags)
    if base.mem_len == 0:
        raise TransformerXLError("the recurrent rows need --model.mem_len > 0")
    train_config = TrainConfig(**{"tensorboard": False, **overrides(args, "train")})
    optim_config = OptimConfig(**overrides(args, "optim"))
    device = resolve_device(args.device)

    configs = {}
    target = None
    for row in args.rows:
        config = _row_config(base, row)
        target = target or _count(config)
        configs[row] = config if len(configs) == 0 else equal_parameters(config, target)
    grid = context_grid(args, [base.seg_len])
    for row, config in configs.items():
        if _train_attention(config) not in grid:
            raise TransformerXLError(f"row {row} trained with attention length {_train_attention(config)}, which "
                                     f"is not among the contexts {grid}: choose --start/--step to include it")
    if len(tokens) - 1 <= grid[-1]:
        raise TransformerXLError(f"{len(tokens) - 1} tokens scored but the longest context is {grid[-1]}; "
                                 "raise --max-tokens")

    rows, curves = [], []
    for row, config in configs.items():
        run_dir = out / row
        print(f"== {row}: attn_type {config.attn_type}, mem_len {config.mem_len}, d_inner {config.d_inner}")
        run_config = RunConfig(model=config, optim=optim_config, train=train_config)
        if _finished(run_dir, run_config):
            print(f"   {run_dir} already holds this run: reusing it")
        else:
            train(run_config, data=args.data, out=run_dir, progress=None if not args.no_progress else False)
        model, _, _ = load_model(run_dir, device=device)
        curve = context_losses(model, tokens, grid, seg_len=args.seg_len, batch_size=args.batch_size,
                               cache_dir=Path(args.cache) if args.cache else out / "cache", name=row,
                               device=device, progress=not args.no_progress)
        curves.append(curve)
        means = curve.mean()
        at_train = _train_attention(config)
        best_c = min((c for c in grid if c >= at_train), key=lambda c: means[c])
        rows.append({"row": row, "attn_type": config.attn_type, "recurrence": config.mem_len > 0,
                     "params": model.num_parameters(), "d_inner": config.d_inner, "train_attn_len": at_train,
                     "loss_at_train_len": means[at_train], "best_attn_len": best_c, "best_loss": means[best_c],
                     "method": curve.method})
    result = recl({c.name: c.as_mapping() for c in curves}, ratios=args.ratios)
    for entry in rows:
        entry["recl"] = {str(r): result.recl[r][entry["row"]] for r in result.ratios}
        entry["recl_capped"] = {str(r): result.capped[r][entry["row"]] for r in result.ratios}
    write_recl_outputs(out / "recl", result, curves, title="RECL of the ablation rows")
    tokens_trained = train_config.max_steps * train_config.batch_size * base.seg_len
    table = _table(rows, result.ratios, level)
    report = "\n".join([f"# Ablation (paper Table 6) on {args.data}, split {args.split}", "",
                        f"Each row: {train_config.max_steps} steps x {train_config.batch_size} streams x "
                        f"{base.seg_len} tokens = {tokens_trained:,} training tokens; parameters matched by "
                        f"d_inner. Scored {len(tokens) - 1:,} tokens at contexts {grid}.", "", table, ""])
    (out / "report.md").write_text(report, encoding="utf-8")
    (out / "ablation.json").write_text(json.dumps({"rows": rows, "contexts": grid, "level": level,
                                                   "training_tokens": tokens_trained}, indent=1) + "\n",
                                       encoding="utf-8")
    print(table)
    if args.json:
        print(json.dumps({"rows": rows, "contexts": grid, "out": str(out)}))
    return 0


def _metric(loss: float, level: str | None) -> str:
    return f"{loss / math.log(2):.4f}" if level in ("char", "byte") else f"{math.exp(min(loss, 700.0)):.2f}"


def _table(rows: list[dict[str, Any]], ratios: tuple[float, ...], level: str | None) -> str:
    unit = "bpc" if level in ("char", "byte") else "ppl"
    head = (f"| Row | recurrence | encoding | params | {unit} at train len | best {unit} | attn len | "
            + " | ".join(f"RECL r={r}" for r in ratios) + " |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(ratios)]
    for e in rows:
        lines.append(f"| {e['row']} | {'yes' if e['recurrence'] else 'no'} | {e['attn_type']} | {e['params']:,} | "
                     f"{_metric(e['loss_at_train_len'], level)} ({e['train_attn_len']}) | "
                     f"{_metric(e['best_loss'], level)} | {e['best_attn_len']} | "
                     + " | ".join((">= " if e["recl_capped"][str(r)] else "") + str(e["recl"][str(r)])
                                  for r in ratios) + " |")
    return "\n".join(lines)
