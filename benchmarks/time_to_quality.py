"""Time to quality: test bits per character after the same wall-clock training budget, side by side.

    python benchmarks/time_to_quality.py                          # make speedrun: 3 corpora x 3 recipes, 7 min each
    python benchmarks/time_to_quality.py --corpora enwik8 --budget 120 --out runs/speedrun-2min
    # tuning a candidate recipe: ours only, scored on the validation split (the test split stays unseen)
    python benchmarks/time_to_quality.py --recipes ours --split valid --model.dropout 0.1 --out runs/tune-a

Recipes, each trained for ``--budget`` seconds on the same training split, then scored on the whole test
split (evaluation time is not counted):
  a. ours   the project's recipe for a CPU budget (configs/cpu-7min.toml), its evaluation span;
  b. paper  the original's small-model settings (4 layers, d_model 256, 8x32 heads, d_inner 1024, seg 64,
            mem 64, Adam 5e-4, warmup 100, cosine, clip 0.25, dropout 0.1), evaluated at seg 64 / mem 64;
  c. gpt    a nanoGPT-style GPT (benchmarks/gpt_baseline.py: 4 layers, 128 wide, learned positions, no
            memory) whose window equals recipe a's attention span (seg_len + mem_len).
Cosine schedules decay over the budget's seconds (optim.decay_clock "time"), reaching their floor when it ends.
Corpora (bytes): the enwik8 and text8 samples of ../shared/data (90/5/5 % splits) and the demo corpus
(pystdlib). Writes OUT/results.json, OUT/results.md and OUT/curves.csv (+ a loss-vs-seconds PNG per corpus
when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpt_baseline import GPTConfig, evaluate_gpt, train_gpt  # noqa: E402  (benchmarks/ is not a package)

from transformer_xl import evaluate, train  # noqa: E402
from transformer_xl.cli.flags import add_config_flags, overrides  # noqa: E402
from transformer_xl.config import (  # noqa: E402
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    load_toml,
)
from transformer_xl.data import prepare_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CORPORA = {
    "enwik8": ("enwik8", SHARED / "enwik8-sample" / "enwik8_small"),
    "text8": ("text", SHARED / "text8-sample" / "text8_small"),
    "pystdlib": ("pystdlib", None),
}
RECIPES = ("ours", "paper", "gpt")
CONFIG_SECTIONS = {"model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}
LN2 = math.log(2)


def prepared(corpus: str, work: Path):
    kind, path = CORPORA[corpus]
    if path is not None and not path.exists():
        raise SystemExit(f"{path} is missing: the {corpus} sample lives in ../shared/data (see its README)")
    return prepare_corpus(kind, path, work / "data" / corpus, level="byte", progress=False)


def recipe_config(name: str, recipe_file: Path, *, n_token: int, budget: float, seed: int,
                  overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """The run config of recipe ours / paper (``overrides``, {section: {field: value}}, change ours only)."""
    if name == "paper":
        model = ModelConfig(n_token=n_token, n_layer=4, d_model=256, n_head=8, d_head=32, d_inner=1024,
                            dropout=0.1, attn_dropout=0.0, seg_len=64, mem_len=64)
        optim = OptimConfig(lr=5e-4, warmup_steps=100, schedule="cosine", clip=0.25)
        return RunConfig(model=model, optim=optim,
                         train=TrainConfig(batch_size=16, max_steps=10 ** 6, max_time=budget, eval_every=0,
                                           save_every=0, log_every=10 ** 6, seed=seed, tensorboard=False))
    data = load_toml(recipe_file)
    preset = data.pop("preset", None)
    model = dict(ModelConfig.preset(preset).to_dict()) if preset else {}
    model.update(data.pop("model", {}))
    model["n_token"] = n_token
    sections = {k: dict(v) for k, v in data.items()}
    for section, values in (overrides or {}).items():
        (model if section == "model" else sections.setdefault(section, {})).update(values)
    sections.setdefault("train", {}).update(max_steps=10 ** 6, max_time=budget, eval_every=0, save_every=0,
                                            log_every=10 ** 6, seed=seed, tensorboard=False)
    return RunConfig.from_dict({"model": model, **sections})


def run_xl(name: str, config: RunConfig, corpus, budget: float, curve: list, run_dir: Path,
           split: str = "test") -> dict[str, Any]:
    import dataclasses
    import shutil

    from transformer_xl.runtime import load_checkpoint

    tokens = corpus.split("train")
    # the cosine decays over the budget's seconds (optim.decay_clock "time"), so it ends at the floor
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, decay_clock="time"))
    start = time.perf_counter()

    def on_step(step: int, loss: float) -> None:
        curve.append((name, step, time.perf_counter() - start, loss))

    shutil.rmtree(run_dir, ignore_errors=True)  # each speedrun trains from scratch
    result = train(config, data={"train": tokens}, out=run_dir, progress=False, on_step=on_step)
    seconds = curve[-1][2] if curve else time.perf_counter() - start
    model = load_checkpoint(run_dir / "last").model
    span = dict(seg_len=config.eval.seg_len or config.model.seg_len, mem_len=config.eval.mem_len
                if config.eval.mem_len is not None else config.model.mem_len)
    if config.eval.clamp_len is not None:
        span["clamp_len"] = config.eval.clamp_len
    if config.eval.same_length is not None:
        span["same_length"] = config.eval.same_length
    test = evaluate(model, corpus.split(split), batch_size=8, warmup=span["mem_len"], level="byte", **span)
    return {"recipe": name, "steps": result.step, "seconds": seconds,
            "tokens_trained": result.step * config.train.batch_size * config.model.seg_len,
            "parameters": model.num_parameters(), "bpc": test.bpc, "split": split, "span": test.span.to_dict()}


def run_gpt(context: int, corpus, budget: float, curve: list, split: str = "test") -> dict[str, Any]:
    vocab = len(corpus.vocab)
    config = GPTConfig(vocab=vocab, context=context)
    model, steps = train_gpt(config, corpus.split("train"), seconds=budget,
                             on_step=lambda step, seconds, loss: curve.append(("gpt", step, seconds, loss)))
    seconds = curve[-1][2] if curve else budget
    nll = evaluate_gpt(model, corpus.split(split))
    return {"recipe": "gpt", "steps": steps, "seconds": seconds, "tokens_trained": steps * 12 * context,
            "parameters": sum(p.numel() for p in model.parameters()), "bpc": nll / LN2, "split": split,
            "span": {"context": context}}


def plot(curves: list, corpus: str, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for recipe in RECIPES:
        points = [(s, loss / LN2) for name, _, s, loss in curves if name == recipe]
        if points:
            xs, ys = zip(*points)
            window = max(1, len(ys) // 50)  # a running mean keeps the curve readable
            smooth = np.convolve(ys, np.ones(window) / window, mode="valid")
            ax.plot(xs[window - 1:], smooth, label=recipe)
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("training loss (bits per byte)")
    ax.set_title(f"time to quality: {corpus}")
    ax.legend()
    path = out / f"curve-{corpus}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def replot(curves_csv: Path, out: Path) -> None:
    """Draw the loss-versus-seconds picture of every corpus in a curves.csv."""
    by_corpus: dict[str, list] = {}
    with open(curves_csv, encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            corpus, recipe, step, seconds, loss = line.rstrip("\n").split(",")
            by_corpus.setdefault(corpus, []).append((recipe, int(step), float(seconds), float(loss)))
    for corpus, curves in by_corpus.items():
        path = plot(curves, corpus, out)
        if path is None:
            raise SystemExit("--replot needs matplotlib: pip install -e '.[plot]'")
        print(path)


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
            if line.startswith("Model name"))
    except StopIteration:
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--budget", type=float, default=420.0, help="training seconds per recipe (default 7 min)")
    parser.add_argument("--recipe-file", type=Path, default=ROOT / "configs" / "cpu-7min.toml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "speedrun")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="split scored after training (tune on valid, report test)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--replot", type=Path, default=None, metavar="CURVES_CSV",
                        help="only draw OUT/curve-CORPUS.png from a curves.csv an earlier run wrote (needs matplotlib)")
    # recipe ours, changed for tuning with txl train's own flags: --model.dropout 0.1 --optim.weight_decay 0.2
    for section, cls in CONFIG_SECTIONS.items():
        add_config_flags(parser, section, cls, skip=("n_token",))
    args = parser.parse_args()
    changes = {section: values for section in CONFIG_SECTIONS if (values := overrides(args, section))}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.replot:
        replot(args.replot, args.out)
        return
    report: dict[str, Any] = {"date": date.today().isoformat(), "machine": machine(), "budget_s": args.budget,
                              "split": args.split, "overrides": changes,
                              "torch": torch.__version__, "corpora": {}}
    all_curves = []
    for corpus_name in args.corpora:
        corpus = prepared(corpus_name, args.out)
        n_token = len(corpus.vocab)
        ours = recipe_config("ours", args.recipe_file, n_token=n_token, budget=args.budget, seed=args.seed,
                             overrides=changes)
        rows, curves = [], []
        for recipe in args.recipes:
            print(f"== {corpus_name}: {recipe} for {args.budget:.0f} s", flush=True)
            if recipe == "gpt":
                row = run_gpt(ours.model.seg_len + ours.model.mem_len, corpus, args.budget, curves, args.split)
            else:
                config = ours if recipe == "ours" else recipe_config("paper", args.recipe_file, n_token=n_token,
                                                                     budget=args.budget, seed=args.seed)
                row = run_xl(recipe, config, corpus, args.budget, curves, args.out / "runs" / corpus_name / recipe,
                             args.split)
            print(f"   {row['steps']} steps, {row['tokens_trained']:,} tokens, {args.split} {row['bpc']:.4f} bpc",
                  flush=True)
            rows.append(row)
        picture = plot(curves, corpus_name, args.out)
        report["corpora"][corpus_name] = {"rows": rows, "plot": str(picture) if picture else None}
        all_curves += [(corpus_name, *c) for c in curves]
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with open(args.out / "curves.csv", "w", encoding="utf-8") as handle:
        handle.write("corpus,recipe,step,seconds,loss_nats\n")
        handle.writelines(f"{c},{r},{s},{t:.3f},{loss:.5f}\n" for c, r, s, t, loss in all_curves)
    lines = [f"Time to quality, {report['date']}, {report['machine']}, budget {args.budget:.0f} s per recipe.", "",
             f"| corpus | recipe | parameters | steps | tokens trained | {args.split} bpc |", "|---|---|---:|---:|---:|---:|"]
    for corpus_name, entry in report["corpora"].items():
        for row in entry["rows"]:
            lines.append(f"| {corpus_name} | {row['recipe']} | {row['parameters']:,} | {row['steps']:,} | "
                         f"{row['tokens_trained']:,} | {row['bpc']:.4f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
