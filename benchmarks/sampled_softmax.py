"""Training step of the output layer over an lm1b-sized vocabulary: full softmax vs sampled softmax
(``model.sample_softmax``) vs the adaptive softmax of the lm1b presets.

    python benchmarks/sampled_softmax.py                          # V 793,471, d 512, 1024 tokens, N 8192
    python benchmarks/sampled_softmax.py --d 1024 --tokens 2048   # lm1b-base's width
    python benchmarks/sampled_softmax.py --device cuda
    python benchmarks/sampled_softmax.py --vocab 5000 --tokens 64 --n-sample 512 --repeats 2   # smoke run

One step is what training does after the last layer: the loss of every position (forward) and its
backward into the hidden states and the output weights, with the kernels training installs
(``apply_device_kernels``). The three layers:

- ``full``: a plain softmax (cutoffs empty) over the whole vocabulary, as evaluation computes it;
- ``sampled``: the same weights, trained through the sampled softmax with ``--n-sample`` log-uniform tries
  per step (the distinct ones scored; the count is printed);
- ``adaptive``: the lm1b presets' adaptive softmax (cutoffs 60k/100k/640k, div_val 4), its cutoffs scaled
  to ``--vocab`` when that is smaller.

Targets are drawn from the log-uniform (Zipf-like) distribution, so tail clusters see as many targets as
word frequencies would send them. Each layer is built, warmed up, timed ``--repeats`` times (median, min,
max), and freed before the next; the ratios full / sampled and adaptive / sampled come from the same run.
The full softmax's (tokens x vocab) logits and gradients need about 4 x tokens x vocab x 4 bytes: with too
little free memory it is skipped (say which with ``--methods``). The header names the CPU (``lscpu``), the
thread count and the load average: time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from transformer_xl import ModelConfig, apply_device_kernels
from transformer_xl.config import LM1B_VOCAB
from transformer_xl.model.sampled_softmax import LogUniformSampler, sampled_softmax_nll
from transformer_xl.model.softmax import ProjectedAdaptiveLogSoftmax

LM1B_CUTOFFS = (60_000, 100_000, 640_000)
METHODS = ("full", "sampled", "adaptive")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else (platform.processor() or "unknown CPU")


def available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def scaled_cutoffs(vocab: int) -> tuple[int, ...]:
    """The lm1b cutoffs, scaled to a smaller vocabulary (kept strictly increasing inside (0, vocab))."""
    if vocab >= LM1B_VOCAB:
        return LM1B_CUTOFFS
    out: list[int] = []
    for c in LM1B_CUTOFFS:
        c = max(c * vocab // LM1B_VOCAB, (out[-1] if out else 0) + 1)
        if c < vocab:
            out.append(c)
    return tuple(out)


def build(method: str, args: argparse.Namespace, device: torch.device) -> tuple[Callable, list[torch.Tensor]]:
    """The step function ``loss(hidden, targets) -> (N,)`` of one method and its parameters."""
    common = dict(n_token=args.vocab, d_model=args.d, n_layer=1, n_head=1, d_head=args.d, d_inner=args.d)
    if method == "adaptive":
        cutoffs = scaled_cutoffs(args.vocab)
        config = ModelConfig(**common, cutoffs=cutoffs, div_val=args.div_val, tie_projs=(False,) * (len(cutoffs) + 1))
    else:
        config = ModelConfig(**common)
    crit = ProjectedAdaptiveLogSoftmax(config)
    with torch.no_grad():
        for p in crit.parameters():
            p.normal_(0.0, 0.02)
    crit = crit.to(device)
    apply_device_kernels(crit, device)
    if method != "sampled":
        return crit, list(crit.parameters())
    sampler = LogUniformSampler(args.vocab)
    weight, bias, proj = crit._cluster_params(0)  # what TransformerXLLM.forward passes

    def sampled(hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sampled_softmax_nll(hidden, targets, weight, bias, sampler, args.n_sample, proj=proj,
                                   dense=crit.dense)

    return sampled, list(crit.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_method(method: str, args: argparse.Namespace, device: torch.device) -> dict:
    step, params = build(method, args, device)
    gen = torch.Generator().manual_seed(0)
    targets = torch.multinomial(LogUniformSampler(args.vocab).probs(), args.tokens, replacement=True,
                                generator=gen).to(device)
    hidden = torch.randn(args.tokens, args.d, generator=gen).to(device).requires_grad_(True)
    times = []
    for i in range(args.warmup + args.repeats):
        for p in params + [hidden]:
            p.grad = None
        sync(device)
        start = time.perf_counter()
        step(hidden, targets).mean().backward()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    row = {"method": method, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
           "repeats": len(times)}
    if method == "sampled":
        row["distinct_negatives"] = int(LogUniformSampler(args.vocab).sample(args.n_sample, device)[0].numel())
    if method == "adaptive":
        row["cutoffs"] = list(scaled_cutoffs(args.vocab))
    del step, params, hidden
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=LM1B_VOCAB, help="vocabulary size (default: lm1b's)")
    parser.add_argument("--d", type=int, default=512, help="hidden size (default 512)")
    parser.add_argument("--tokens", type=int, default=1024, help="positions per step (batch x seg_len)")
    parser.add_argument("--n-sample", type=int, default=8192, help="sample_softmax tries per step")
    parser.add_argument("--div-val", type=int, default=4, help="adaptive softmax div_val (lm1b presets: 4)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of full,sampled,adaptive")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods takes a comma-separated subset of {','.join(METHODS)}")
    if not 0 < args.n_sample < args.vocab:
        parser.error(f"--n-sample must be in (0, --vocab={args.vocab})")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    header = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
              "torch": torch.__version__, "load_before": round(os.getloadavg()[0], 2), "vocab": args.vocab,
              "d": args.d, "tokens": args.tokens, "n_sample": args.n_sample}
    print(f"# {header['cpu']}, {header['cores']} cores, {header['threads']} threads, device {header['device']}, "
          f"torch {header['torch']}, load {header['load_before']}")
    print(f"# vocab {args.vocab:,}, d {args.d}, {args.tokens} tokens per step, sample_softmax {args.n_sample}, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    rows = []
    for method in methods:
        need = 4 * args.tokens * args.vocab * 4
        free = available_bytes(device)
        if method == "full" and free is not None and need > 0.8 * free:
            print(f"{method:>9}: skipped, its logits need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free "
                  "(lower --tokens)")
            continue
        row = time_method(method, args, device)
        extra = (f", {row['distinct_negatives']} distinct negatives" if "distinct_negatives" in row else "") + \
                (f", cutoffs {row['cutoffs']}" if "cutoffs" in row else "")
        print(f"{method:>9}: median {row['median_s'] * 1e3:10.2f} ms  (min {row['min_s'] * 1e3:.2f}, "
              f"max {row['max_s'] * 1e3:.2f}){extra}")
        rows.append(row)
    medians = {r["method"]: r["median_s"] for r in rows}
    ratios = {f"{m}/sampled": medians[m] / medians["sampled"] for m in ("full", "adaptive")
              if m in medians and "sampled" in medians}
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}x")
    header["load_after"] = round(os.getloadavg()[0], 2)
    print(f"# load after {header['load_after']}")
    if args.json:
        print(json.dumps({**header, "rows": rows, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
