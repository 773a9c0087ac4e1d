"""Where one training step's time goes: matrix products against everything else (issue 14's "a profile says
what bounds it").

    python benchmarks/profile_step.py --config C --precision fp32
    python benchmarks/profile_step.py --config W --precision bf16 --steps 6

Runs benchmarks/bench.py's training step (ours, same model, inputs and optimiser) under torch.profiler and
groups the operators' self CPU time into matrix products, softmax, layer norm, dropout, the optimiser, copies
and casts, and the rest. Against the matmul peak measured in the same process it prints: the model FLOPs
utilisation (MFU) of the step, the rate the products themselves reach, and the MFU the step would have if
everything but the products took no time, the ceiling that the non-product work leaves.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/ is not a package)

from transformer_xl import SegmentRunner  # noqa: E402

CATEGORIES = (
    ("matrix products", ("mm", "bmm", "addmm", "matmul", "linear", "baddbmm", "onednn", "mkldnn")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("dropout", ("dropout", "bernoulli", "rand", "uniform")),
    ("optimiser", ("adam", "lerp", "addcdiv", "addcmul", "sqrt", "_foreach", "clip", "norm")),
    ("copies and casts", ("copy_", "to_copy", "contiguous", "clone", "cat", "_to_copy")),
)


def category(name: str) -> str:
    lowered = name.lower().removeprefix("aten::")
    for label, keys in CATEGORIES:
        if any(key == lowered or key in lowered for key in keys):
            return label
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="C", help="C, W or a preset name")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=12, help="operators listed")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = bench.spec_for(args.config, None)
    config, batch, seg = spec.config, spec.batch_size, spec.config.seg_len
    bf16 = args.precision == "bf16"
    peak = bench.worker_matmul(args.precision, repeats=5)["gflops"]  # best of torch.mm and oneDNN, 2048^3
    model = bench.build("ours", config).train()
    optim = torch.optim.Adam(model.parameters(), lr=2.5e-4)
    torch.manual_seed(1)
    warmup = 3
    data = bench.make_tokens(config, (batch, seg * (warmup + args.steps) + 1))
    runner = SegmentRunner(model)

    def step(i: int) -> None:
        x, y = data[:, i * seg:(i + 1) * seg], data[:, i * seg + 1:(i + 1) * seg + 1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = runner.step(x, y).loss.float().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optim.step()
        optim.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(warmup, warmup + args.steps):
            step(i)
    wall = (time.perf_counter() - start) / args.steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    by_category: dict[str, float] = collections.defaultdict(float)
    for event in events:
        by_category[category(event.key)] += event.self_cpu_time_total
    flops = 3 * bench.model_flops(config, batch=batch, seg_len=seg, mem_len=config.mem_len)
    gemm_s = by_category["matrix products"] / total * wall  # the products' share of the profiled step
    result = {
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), platform.machine()),
        "threads": torch.get_num_threads(), "load": os.getloadavg()[0], "config": args.config,
        "precision": args.precision, "step_s": wall, "tokens_per_s": batch * seg / wall,
        "matmul_peak_gflops": peak, "mfu": flops / wall / (peak * 1e9),
        "matrix_product_gflops": flops / gemm_s / 1e9 if gemm_s else 0.0,
        "mfu_ceiling_products_only": flops / gemm_s / (peak * 1e9) if gemm_s else 0.0,
        "shares": {k: v / total for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])},
    }
    print(f"{result['cpu']}, {result['threads']} threads, load {result['load']:.2f}; config {args.config}, "
          f"{args.precision}: step {wall * 1e3:.0f} ms ({result['tokens_per_s']:.0f} tok/s, under the profiler)")
    print(f"matmul peak {peak:.0f} GFLOP/s; MFU {result['mfu']:.1%}; the products run at "
          f"{result['matrix_product_gflops']:.0f} GFLOP/s ({result['mfu_ceiling_products_only']:.0%} of peak: the MFU "
          "ceiling if nothing else took time)")
    for label, share in result["shares"].items():
        print(f"  {label:<18} {share:6.1%}")
    print("top operators (self CPU):")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f"  {event.key:<44} {event.self_cpu_time_total / total:6.1%}  x{event.count // args.steps}/step  "
              f"[{category(event.key)}]")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
