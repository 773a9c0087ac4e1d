"""`txl recl`: Relative Effective Context Length of a group of models (paper, Appendix C and Table 8).

    txl recl --checkpoints runs/xl runs/vanilla --data data/wt2 --split test --max-tokens 20000 \\
             --start 100 --step 100 --max-context 600 --out analysis/recl

Each model scores every token at each context c (Transformer-XL: same_length with memory c; the vanilla
model: a window of c tokens), cached under OUT/cache so reruns and other analyses reuse the pass. The
group's best loss at the short context is the shared baseline; RECL is the longest context whose step
still brings a relative gain of at least --threshold on the top-r hardest tokens. Writes recl.json,
gains.csv, report.md (and gains PNGs when matplotlib is installed) to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import TransformerXLError
from .flags import add_subcommand


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


# Shared by recl, ablate and analyze ------------------------------------------------------------------
def add_context_flags(parser: argparse.ArgumentParser, *, data: bool = True) -> None:
    if data:
        parser.add_argument("--data", required=True, help="prepared data directory (the models' vocabulary)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--max-tokens", type=int, default=0, help="score only the first N tokens (0: all)")
    parser.add_argument("--contexts", nargs="+", type=int, help="context lengths c (evenly spaced)")
    parser.add_argument("--start", type=int, help="smallest context (default: the smallest training seg_len)")
    parser.add_argument("--step", type=int, help="step Delta between contexts (default: the same)")
    parser.add_argument("--max-context", type=int, help="largest context (default: start + 5 steps)")
    parser.add_argument("--seg-len", type=int, help="evaluation segment of the memory method")
    parser.add_argument("--batch-size", type=int, default=8, help="parallel streams / windows (default 8)")
    parser.add_argument("--cache", help="per-token loss cache (default: OUT/cache)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on the last line")


def context_grid(args: argparse.Namespace, seg_lens: Sequence[int]) -> list[int]:
    """--contexts, or start, start + step, ..., max-context (defaults from the models' segment length)."""
    if args.contexts:
        grid = sorted(set(args.contexts))
    else:
        step = args.step or min(seg_lens)
        start = args.start or step
        stop = args.max_context or start + 5 * step
        if step <= 0 or start < 0 or stop < start:
            raise TransformerXLError(f"need --step > 0 and 0 <= --start <= --max-context; got {step}, {start}, {stop}")
        grid = list(range(start, stop + 1, step))
    if len(grid) < 2 or grid[0] < 1:
        raise TransformerXLError(f"need at least two positive context lengths, got {grid}")
    return grid


def load_tokens(args: argparse.Namespace) -> tuple[Any, np.ndarray]:
    from ..data.cache import load_prepared

    prepared = load_prepared(args.data)
    tokens = prepared.split(args.split)
    if args.max_tokens:
        tokens = tokens[:args.max_tokens + 1]
    return prepared, np.asarray(tokens)


def load_checkpoint(path: str, prepared: Any, device: Any) -> Any:
    from ..training.checkpoint import load_model, resolve_checkpoint
    from .eval import check_vocabulary

    checkpoint = resolve_checkpoint(path)
    model, vocab, _ = load_model(checkpoint, device=device)
    check_vocabulary(vocab, prepared.vocab, model.config.n_token, checkpoint=checkpoint, data=prepared.path)
    return model


def default_name(path: str) -> str:
    p = Path(path).resolve()
    return p.parent.name if p.name in ("best", "last") else p.name


def write_recl_outputs(out: Path, result: Any, curves: Sequence[Any], *, title: str = "RECL") -> list[Path]:
    """recl.json, gains.csv, context_means.json, report.md, and PNGs when matplotlib is installed."""
    from ..analysis.plots import have_matplotlib, plot_context_curves, plot_gain_curves, recl_report

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "recl.json", out / "gains.csv", out / "context_means.json", out / "report.md"]
    (out / "recl.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    rows = ["model,r,c,c_prime,gain"]
    for curve in result.curves:
        rows += [f"{curve.name},{curve.r},{c},{c2},{g:.6g}" for (c, c2), g in zip(curve.pairs, curve.gains)]
    (out / "gains.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    means = {c.name: {"method": c.method, "effective": c.effective, "mean_loss": c.mean()} for c in curves}
    (out / "context_means.json").write_text(json.dumps(means, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(recl_report(result, curves, title=title), encoding="utf-8")
    if have_matplotlib():
        for r in result.ratios:
            written.append(plot_gain_curves(result, out / f"gains_r{r}.png", r=r))
        written.append(plot_context_curves(curves, out / "loss_by_context.png"))
    return written


def run(args: argparse.Namespace) -> int:
    from ..analysis.context import context_losses
    from ..analysis.recl import recl
    from ..training.distributed import resolve_device

    names = args.names or [default_name(p) for p in args.checkpoints]
    if len(names) != len(args.checkpoints) or len(set(names)) != len(names):
        raise TransformerXLError(f"--names needs one distinct name per checkpoint; got {names}")
    device = resolve_device(args.device)
    prepared, tokens = load_tokens(args)
    models = [load_checkpoint(p, prepared, device) for p in args.checkpoints]
    grid = context_grid(args, [m.config.seg_len for m in models])
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    if len(tokens) - 1 <= grid[-1]:
        raise TransformerXLError(f"{len(tokens) - 1} tokens scored but the longest context is {grid[-1]}: "
                                 "RECL needs tokens that see the whole context; raise --max-tokens")
    curves = [context_losses(model, tokens, grid, seg_len=args.seg_len, batch_size=args.batch_size,
                             cache_dir=cache, name=name, device=device, progress=not args.no_progress)
              for model, name in zip(models, names)]
    result = recl({c.name: c.as_mapping() for c in curves}, ratios=args.ratios, threshold=args.threshold)
    write_recl_outputs(out, result, curves)
    print(result.table())
    print(f"contexts {grid}, step {result.step}, threshold {result.threshold}; gain curves in {out}")
    if args.json:
        print(json.dumps({"recl": result.to_dict()["recl"], "capped": result.to_dict()["capped"],
                          "contexts": grid, "out": str(out)}))
    return 0
