"""Long-range analysis figures for RESULTS.md: the Table 6 ablation with RECL, and the Table 9 speed table.

    python benchmarks/bench_analysis.py --data-dir /tmp/an --steps 300            # enwik8 sample (bytes)
    python benchmarks/bench_analysis.py --data-dir /tmp/an --corpus wikitext-2 --steps 300

Prepares the corpus from ../shared/data (or --source), runs `txl ablate` at a CPU-affordable size, then
`txl analyze speed` on the trained XL row, and prints a Markdown section with the exact commands. Every
number comes from the run it prints; nothing is copied from the paper.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from transformer_xl.cli import main as txl

SOURCES = {"enwik8": "../shared/data/enwik8-sample/enwik8_small", "wikitext-2": "../shared/data/wikitext-2"}


def run(args: list[str], commands: list[str]) -> str:
    """Run a txl command in-process, keep its command line for the report, return its stdout JSON line."""
    commands.append("txl " + " ".join(shlex.quote(a) for a in args))
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = txl(args)
    if code != 0:
        sys.exit(f"failed ({code}): {commands[-1]}")
    return buffer.getvalue().strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=sorted(SOURCES), default="enwik8")
    parser.add_argument("--source", help="corpus path (default: the sample in ../shared/data)")
    parser.add_argument("--data-dir", default="data/bench-analysis")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seg-len", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=4000)
    parser.add_argument("--attn-lens", nargs="+", default=["128", "256", "512"])
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    root = Path(options.data_dir)
    data = root / options.corpus
    commands: list[str] = []
    source = options.source or SOURCES[options.corpus]
    run(["prepare", "--corpus", options.corpus, "--path", source, "--out", str(data)], commands)

    seg = str(options.seg_len)
    model = ["--preset", "tiny", "--model.seg_len", seg, "--model.mem_len", seg, "--model.dropout", "0.1"]
    if options.corpus == "wikitext-2":
        model += ["--model.cutoffs", "2000,10000", "--model.div_val", "2"]
    started = time.perf_counter()
    ablate = json.loads(run(["ablate", "--data", str(data), "--out", str(root / f"ablate-{options.corpus}-{options.steps}"), *model,
                             "--train.max_steps", str(options.steps), "--train.batch_size", "8",
                             "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "50",
                             "--optim.lr", "2.5e-3", "--optim.warmup_steps", "20", "--split", "valid",
                             "--max-tokens", str(options.max_tokens), "--start", seg, "--step", seg,
                             "--max-context", str(4 * options.seg_len), "--no-progress", "--json"], commands))
    ablate_s = time.perf_counter() - started
    report = (root / f"ablate-{options.corpus}-{options.steps}" / "report.md").read_text()
    speed = json.loads(run(["analyze", "speed", "--checkpoint", str(root / f"ablate-{options.corpus}-{options.steps}" / "xl"),
                            "--data", str(data), "--split", "valid", "--attn-lens", *options.attn_lens,
                            "--seg-len", seg, "--xl-tokens", "512", "--vanilla-tokens", "32", "--json"], commands))

    print(f"### {options.corpus}: ablation, RECL and evaluation speed\n")
    print(f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{options.threads} thread(s), device {speed['device']}. Ablation wall time {ablate_s:.0f} s.\n")
    print("```\n" + "\n".join(commands) + "\n```\n")
    print("\n".join(report.splitlines()[2:]))
    print("\nEvaluation speed (ms per token, batch 1; the speed test reuses the XL row's weights):\n")
    print("| Attn len | XL ms/token | vanilla ms/token | speedup |\n|---:|---:|---:|---:|")
    for row in speed["rows"]:
        print(f"| {row['attn_len']} | {row['xl_ms_per_token']:.3f} | {row['vanilla_ms_per_token']:.3f} | "
              f"{row['speedup']:.1f}x |")
    print("\nContexts scored: " + ", ".join(str(c) for c in ablate["contexts"]))


if __name__ == "__main__":
    main()
