"""Which weights to keep after a time-budgeted run: the final ones or an average, scored side by side.

    python benchmarks/weight_averages.py --corpus text8 --out runs/averages-text8       # 7 min + scoring
    python benchmarks/weight_averages.py --corpus pystdlib --decays 0.997 0.998 --budget 120

One training run of the time-to-quality recipe (configs/cpu-7min.toml, its own train.ema_decay switched
off) keeps, beside its weights, a bias-corrected exponential moving average for each of ``--decays``
(transformer_xl.training.averaging.WeightAverage, what train.ema_decay uses) and uniform averages of the
weights of the last quarter and the last half of the budget's seconds. After training, the final weights
and every average are scored on ``--split`` (default valid: choose on it, report test elsewhere) at the
recipe's evaluation span, the way benchmarks/time_to_quality.py scores recipe "ours". Since all of them come
from the same run, their differences carry none of the run-to-run noise. Writes OUT/averages.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_quality import CORPORA, ROOT, machine, prepared, recipe_config  # noqa: E402

from transformer_xl import evaluate  # noqa: E402
from transformer_xl.runtime import resolve_device  # noqa: E402
from transformer_xl.training import distributed as D  # noqa: E402
from transformer_xl.training import loop  # noqa: E402
from transformer_xl.training.averaging import WeightAverage  # noqa: E402

TAILS = (0.25, 0.5)  # uniform averages over these last fractions of the budget's seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=list(CORPORA), default="text8")
    parser.add_argument("--decays", type=float, nargs="+", default=[0.997, 0.998, 0.999, 0.9995])
    parser.add_argument("--budget", type=float, default=420.0, help="training seconds (default 7 min)")
    parser.add_argument("--recipe-file", type=Path, default=ROOT / "configs" / "cpu-7min.toml")
    parser.add_argument("--split", choices=("valid", "test"), default="valid")
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "averages")
    args = parser.parse_args()
    if not all(0 < d < 1 for d in args.decays):
        parser.error("--decays must lie in (0, 1)")
    torch.set_num_threads(args.threads)
    corpus = prepared(args.corpus, args.out)
    config = recipe_config("ours", args.recipe_file, n_token=len(corpus.vocab), budget=args.budget, seed=args.seed,
                           overrides={"train": {"ema_decay": 0.0}})
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, decay_clock="time"))
    device = resolve_device("cpu")
    state = loop.setup(config, loop.load_data({"train": corpus.split("train")}), out=args.out / "run", resume=False,
                       overwrite=True, device=device, info=D.init_distributed(device, timeout_s=60))
    model = state.model
    averages = {f"moving average, decay {d}": WeightAverage(model, d) for d in args.decays}
    tails: dict[float, tuple[dict[str, torch.Tensor], int]] = {}

    @torch.no_grad()
    def on_step(step: int, loss: float) -> None:
        for average in averages.values():
            average.update()
        done = state.budget_seconds() / args.budget
        for fraction in TAILS:
            if done < 1 - fraction:
                continue
            if fraction not in tails:
                tails[fraction] = ({n: p.detach().clone() for n, p in model.named_parameters()}, 1)
            else:
                mean, count = tails[fraction]
                for n, p in model.named_parameters():
                    mean[n].lerp_(p.detach(), 1.0 / (count + 1))
                tails[fraction] = (mean, count + 1)

    started = time.perf_counter()
    result = loop.run(state, progress=False, on_step=on_step)
    seconds = time.perf_counter() - started
    candidates = {"final weights": {n: p.detach().clone() for n, p in model.named_parameters()}}
    candidates.update({name: average.average for name, average in averages.items()})
    candidates.update({f"uniform average, last {int(f * 100)}% of the seconds ({n} steps)": mean
                       for f, (mean, n) in tails.items()})
    span = dict(seg_len=config.eval.seg_len or config.model.seg_len,
                mem_len=config.eval.mem_len if config.eval.mem_len is not None else config.model.mem_len)
    rows = []
    for name, weights in candidates.items():
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(weights[n])
        scored = evaluate(model, corpus.split(args.split), batch_size=8, warmup=span["mem_len"], level="byte", **span)
        rows.append({"weights": name, "bpc": scored.bpc})
        print(f"{name}: {args.split} {scored.bpc:.4f} bpc", flush=True)
    report = {"corpus": args.corpus, "machine": machine(), "budget_s": args.budget, "steps": result.step,
              "seconds": seconds, "split": args.split, "span": span, "rows": rows}
    (args.out / "averages.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    final = rows[0]["bpc"]
    print(f"\n{args.corpus}, {result.step} steps in {seconds:.0f} s ({report['machine']})\n")
    print(f"| weights | {args.split} bpc | vs final |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['weights']} | {row['bpc']:.4f} | {row['bpc'] - final:+.4f} |")


if __name__ == "__main__":
    main()
