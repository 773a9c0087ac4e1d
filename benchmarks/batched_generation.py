"""Batched generation against one prompt at a time: N prompts of different lengths, T new tokens each.

    .venv/bin/python benchmarks/batched_generation.py                      # preset char-small, 8 x 64 tokens
    .venv/bin/python benchmarks/batched_generation.py --preset word-small --threads 4 --repeats 7
    .venv/bin/python benchmarks/batched_generation.py --preset tiny --prompts 4 --new-tokens 8 --repeats 2

Sequential: ``generate`` for each prompt in turn. Batched: ``generate_batch`` for all of them (each prompt
read alone, then one forward of the batch per new token). Both are greedy from a randomly initialised
model of the preset's shape, at the preset's evaluation span; the script first checks that the two give the
same tokens, then reports the median of ``--repeats`` timings of each, their ratio, the CPU (lscpu's model
name), the threads and the load average before and after, as a table and as JSON on the last line.
Prompt lengths are spread over [--min-len, --max-len].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch

from transformer_xl import ModelConfig, TransformerXLLM
from transformer_xl.config import preset_eval_span
from transformer_xl.generation import generate, generate_batch


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="char-small", help="model shape and evaluation span (default char-small)")
    parser.add_argument("--prompts", type=int, default=8, help="number of prompts (default 8)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    parser.add_argument("--min-len", type=int, default=3, help="shortest prompt (default 3)")
    parser.add_argument("--max-len", type=int, default=200, help="longest prompt (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each (median; default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig.preset(args.preset, dropout=0.0, attn_dropout=0.0)
    model = TransformerXLLM(config).to(args.device).eval()
    span = preset_eval_span(args.preset)
    n = args.prompts
    lengths = [args.min_len + (args.max_len - args.min_len) * i // max(n - 1, 1) for i in range(n)]
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, config.n_token, (length,), generator=gen).tolist() for length in lengths]
    kwargs = dict(max_new_tokens=args.new_tokens, temperature=0.0, span=span)

    def sequential() -> list[list[int]]:
        return [list(generate(model, p, **kwargs)) for p in prompts]

    def batched() -> list[list[int]]:
        return generate_batch(model, prompts, **kwargs)

    load_before = os.getloadavg()[0]
    same = sequential() == batched()  # also the warm-up of both
    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    for _ in range(args.repeats):
        for name, fn in (("sequential", sequential), ("batched", batched)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    seq, bat = statistics.median(times["sequential"]), statistics.median(times["batched"])
    tokens = n * args.new_tokens
    report = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "device": args.device, "preset": args.preset,
              "span": span.to_dict(), "prompts": n, "prompt_lengths": lengths, "new_tokens": args.new_tokens,
              "repeats": args.repeats, "same_tokens": same, "sequential_s": seq, "batched_s": bat,
              "speedup": seq / bat, "sequential_tok_s": tokens / seq, "batched_tok_s": tokens / bat,
              "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
              "torch": torch.__version__}
    print(f"# {report['cpu']}, {report['threads']} threads, torch {torch.__version__}, load "
          f"{report['load_before']} -> {report['load_after']}")
    print(f"# preset {args.preset}, span {span.describe()}, {n} prompts of {lengths[0]}..{lengths[-1]} tokens, "
          f"{args.new_tokens} new tokens each, median of {args.repeats}; same tokens: {same}")
    print(f"{'mode':<12}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'sequential':<12}{seq:>10.3f}{tokens / seq:>12.1f}")
    print(f"{'batched':<12}{bat:>10.3f}{tokens / bat:>12.1f}")
    print(f"speedup {seq / bat:.2f}x")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
