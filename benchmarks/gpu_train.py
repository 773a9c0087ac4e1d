"""Train a preset-shaped model for a fixed wall-clock time and report tokens/s and MFU.

    python benchmarks/gpu_train.py --device cuda --preset wt103-base --seconds 120   # (gpu_check.sh)
    python benchmarks/gpu_train.py --device cpu --preset tiny --seconds 10            # dry run

Synthetic Zipf-distributed word ids (frequency ~ 1/rank, as real text; see bench.make_tokens), Adam,
clipping 0.25, memory carried by the SegmentRunner, bf16 autocast by default. MFU is the model's matmul
FLOPs per second (bench.model_flops, forward + backward = 3x forward) over the matmul peak of the same
dtype measured in the same process. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_tokens, model_flops  # noqa: E402  (benchmarks/ is not a package)

from transformer_xl import ModelConfig, SegmentRunner, TransformerXLLM, apply_device_kernels  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of the largest square matmul that is quick to time on this device."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="wt103-base")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120.0, help="wall-clock training budget")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    config: ModelConfig = ModelConfig.preset(args.preset)
    torch.manual_seed(0)
    model = apply_device_kernels(TransformerXLLM(config).to(device).train(), device)
    forward = torch.compile(model) if args.compile else model
    optim = torch.optim.Adam(model.parameters(), lr=2.5e-4)
    runner = SegmentRunner(forward, precision=args.precision)
    seg, batch = config.seg_len, args.batch_size
    chunk = 64  # segments drawn at a time
    times, steps, losses = [], 0, []
    start_all = time.perf_counter()
    while time.perf_counter() - start_all < args.seconds:
        data = make_tokens(config, (batch, seg * chunk + 1)).to(device)
        for i in range(chunk):
            sync(device)
            start = time.perf_counter()
            out = runner.step(data[:, i * seg:(i + 1) * seg], data[:, i * seg + 1:(i + 1) * seg + 1])
            loss = out.loss.float().mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optim.step()
            sync(device)
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
            steps += 1
            if time.perf_counter() - start_all >= args.seconds:
                break
    timed = times[3:] or times  # the first steps include allocator warm-up (and compilation)
    step_time = statistics.median(timed)
    flops = 3 * model_flops(config, batch=batch, seg_len=seg, mem_len=config.mem_len)
    peak = matmul_peak(device, torch.bfloat16 if args.precision == "bf16" else torch.float32)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "preset": args.preset, "parameters": model.num_parameters(), "batch_size": batch, "seg_len": seg,
              "precision": args.precision, "compile": args.compile, "steps": steps,
              "tokens_per_s": batch * seg / step_time, "step_ms": step_time * 1e3,
              "mfu": flops / step_time / peak, "matmul_peak_tflops": peak / 1e12,
              "first_loss": losses[0], "last_loss": statistics.mean(losses[-10:]),
              "peak_memory_gb": (torch.cuda.max_memory_allocated(device) / 2 ** 30) if device.type == "cuda" else None}
    print(f"{args.preset} on {result['device']}: {steps} steps, {result['tokens_per_s']:.0f} tok/s, "
          f"MFU {result['mfu']:.1%} of the measured {args.precision} peak ({result['matmul_peak_tflops']:.1f} TFLOP/s), "
          f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
