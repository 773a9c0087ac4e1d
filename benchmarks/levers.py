"""Speed levers, each measured against the same step without it, in the same run (issue 14, item 2).

    python benchmarks/levers.py                                  # configs C and W, every lever
    python benchmarks/levers.py --configs C --levers compile bf16_weights --repeats 5

Levers (each row: baseline -> with the lever, medians of ``--repeats`` fresh processes):
  compile        torch.compile (inductor) of the model: fp32 training, bf16-autocast training, evaluation at
                 memory 640. Compilation time is reported apart and not counted in the step time.
  bf16_weights   bf16 parameters with fp32 master weights in the optimiser, against bf16 autocast (fp32
                 parameters, each product in bf16); plus the loss of both after 200 steps on real text
                 against fp32 (the lever is only worth having at equal loss: within 1%).
  (`model.recompute_attention` against HF and without it: `bench.py --workloads train train_recompute`.)
Every worker process builds the model with the same seed and feeds the same tokens as benchmarks/bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (benchmarks/ is not a package)

from transformer_xl import SegmentRunner, Span  # noqa: E402

LEVERS = ("compile", "bf16_weights")


# Master weights -----------------------------------------------------------------------------------
class MasterWeights:
    """bf16 parameters in the model, fp32 copies in the optimiser: gradients are widened to fp32, the
    optimiser updates the fp32 copies, and the model gets them back rounded to bf16 after every step."""

    def __init__(self, model: torch.nn.Module, lr: float) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        model.to(torch.bfloat16)
        self.optim = torch.optim.Adam(self.master, lr=lr)

    def step(self, clip: float) -> None:
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.float()
        torch.nn.utils.clip_grad_norm_(self.master, clip)
        self.optim.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)
                p.grad = None


def train_step(runner: SegmentRunner, x: torch.Tensor, y: torch.Tensor, *, precision: str, model: torch.nn.Module,
               master: MasterWeights | None, optim: torch.optim.Optimizer | None) -> torch.Tensor:
    """One training step (forward with memory, backward, clip 0.25, Adam); the mean loss."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "autocast"):
        loss = runner.step(x, y).loss.float().mean()
    loss.backward()
    if master:
        master.step(0.25)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optim.step()
        optim.zero_grad(set_to_none=True)
    return loss


def worker_train(name: str, *, precision: str, compile_model: bool, steps: int,
                 warmup: int) -> dict:
    """Median step time of training (forward, backward, clip, Adam) with memory carried."""
    spec = bench.spec_for(name, None)
    config, batch, seg = spec.config, spec.batch_size, spec.config.seg_len
    model = bench.build("ours", config).train()
    master = MasterWeights(model, 2.5e-4) if precision == "bf16_weights" else None
    optim = None if master else torch.optim.Adam(model.parameters(), lr=2.5e-4)
    forward = torch.compile(model) if compile_model else model
    torch.manual_seed(1)
    data = bench.make_tokens(config, (batch, seg * (steps + warmup) + 1))
    runner, times, compile_s = SegmentRunner(forward), [], 0.0
    for step in range(steps + warmup):
        x, y = data[:, step * seg:(step + 1) * seg], data[:, step * seg + 1:(step + 1) * seg + 1]
        start = time.perf_counter()
        train_step(runner, x, y, precision=precision, model=model, master=master, optim=optim)
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
        else:
            compile_s += elapsed
    flops = 3 * bench.model_flops(config, batch=batch, seg_len=seg, mem_len=config.mem_len)
    step_time = statistics.median(times)
    return {"tokens_per_s": batch * seg / step_time, "flops_per_s": flops / step_time,
            "peak_rss_mb": bench.peak_rss_mb(), "warmup_s": compile_s}


@torch.no_grad()
def worker_eval(name: str, *, compile_model: bool, steps: int, mem_len: int = 640) -> dict:
    spec = bench.spec_for(name, None)
    config, batch, seg = spec.config, spec.batch_size, bench.EVAL_SEG_LEN
    model = bench.build("ours", config).eval()
    forward = torch.compile(model) if compile_model else model
    runner = SegmentRunner(forward, span=Span(seg_len=seg, mem_len=mem_len))
    warmup = -(-mem_len // seg) + 2
    torch.manual_seed(1)
    data = bench.make_tokens(config, (batch, seg * (warmup + steps) + 1))
    times, compile_s = [], 0.0
    for step in range(warmup + steps):
        start = time.perf_counter()
        runner.step(data[:, step * seg:(step + 1) * seg], data[:, step * seg + 1:(step + 1) * seg + 1])
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
        else:
            compile_s += elapsed
    return {"tokens_per_s": batch * seg / statistics.median(times), "peak_rss_mb": bench.peak_rss_mb(),
            "warmup_s": compile_s}


def worker_loss(name: str, *, precision: str, steps: int) -> dict:
    """Mean loss of the last 10 of ``steps`` training steps on real text (bench.py's bf16 check, any precision)."""
    spec = bench.spec_for(name, None)
    config, batch, seg = spec.config, spec.batch_size, spec.config.seg_len
    data = bench._stdlib_bytes(batch * (seg * steps + 1)).view(batch, seg * steps + 1) % config.n_token
    model = bench.build("ours", config).train()
    master = MasterWeights(model, 2.5e-4) if precision == "bf16_weights" else None
    optim = None if master else torch.optim.Adam(model.parameters(), lr=2.5e-4)
    torch.manual_seed(2)
    runner, losses = SegmentRunner(model), []
    for step in range(steps):
        x, y = data[:, step * seg:(step + 1) * seg], data[:, step * seg + 1:(step + 1) * seg + 1]
        loss = train_step(runner, x, y, precision=precision, model=model, master=master, optim=optim)
        losses.append(loss.item())
    return {"loss": statistics.mean(losses[-10:])}


# Driver -------------------------------------------------------------------------------------------
def measure(args: argparse.Namespace, **worker: object) -> list[dict]:
    results = []
    for _ in range(1 if worker.get("kind") == "loss" else args.repeats):
        cmd = [sys.executable, __file__, "--worker", json.dumps(worker)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"worker {worker} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def run_worker(spec: dict, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    kind = spec.pop("kind")
    if kind == "train":
        result = worker_train(**spec)
    elif kind == "eval":
        result = worker_eval(**spec)
    else:
        result = worker_loss(**spec)
    print(json.dumps(result))


def med(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def pairs(config: str, lever: str, steps: int) -> list[tuple[str, dict, dict]]:
    """(label, baseline worker, lever worker) for one lever on one config."""
    train = dict(kind="train", name=config, steps=steps, warmup=3, compile_model=False)
    if lever == "compile":
        return [("train fp32", {**train, "precision": "fp32"}, {**train, "precision": "fp32", "compile_model": True}),
                ("train bf16", {**train, "precision": "autocast"},
                 {**train, "precision": "autocast", "compile_model": True}),
                ("eval640", dict(kind="eval", name=config, steps=steps, compile_model=False),
                 dict(kind="eval", name=config, steps=steps, compile_model=True))]
    return [("train bf16", {**train, "precision": "autocast"}, {**train, "precision": "bf16_weights"})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["C", "W"])
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per process")
    parser.add_argument("--loss-steps", type=int, default=200, help="steps of the bf16-weights loss check")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "levers.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(json.loads(args.worker), args.threads)
        return
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    report = {"date": date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
              "threads": args.threads or torch.get_num_threads(), "repeats": args.repeats,
              "load_before": os.getloadavg()[0], "rows": []}
    print(f"{cpu}, {report['threads']} threads, load {report['load_before']:.2f}", flush=True)
    for config in args.configs:
        for lever in args.levers:
            for label, base_spec, lever_spec in pairs(config, lever, args.steps):
                base, with_lever = measure(args, **base_spec), measure(args, **lever_spec)
                row = {"config": config, "lever": lever, "workload": label,
                       "base_tps": med(base, "tokens_per_s"), "lever_tps": med(with_lever, "tokens_per_s"),
                       "base_rss": med(base, "peak_rss_mb"), "lever_rss": med(with_lever, "peak_rss_mb"),
                       "lever_warmup_s": med(with_lever, "warmup_s"), "base_warmup_s": med(base, "warmup_s")}
                report["rows"].append(row)
                print(f"{config} {lever:>12} {label:>10}: {row['base_tps']:8.0f} -> {row['lever_tps']:8.0f} tok/s "
                      f"({row['lever_tps'] / row['base_tps']:.2f}x), peak RSS {row['base_rss']:.0f} -> "
                      f"{row['lever_rss']:.0f} MB ({row['lever_rss'] / row['base_rss']:.2f}x), warm-up "
                      f"{row['base_warmup_s']:.1f} -> {row['lever_warmup_s']:.1f} s", flush=True)
            if lever == "bf16_weights" and args.loss_steps:
                losses = {p: measure(args, kind="loss", name=config, precision=p, steps=args.loss_steps)[0]["loss"]
                          for p in ("fp32", "autocast", "bf16_weights")}
                report.setdefault("loss_check", {})[config] = losses
                print(f"{config} loss after {args.loss_steps} steps: " + ", ".join(
                    f"{p} {v:.4f} ({(v - losses['fp32']) / losses['fp32']:+.2%})" for p, v in losses.items()),
                    flush=True)
    report["load_after"] = os.getloadavg()[0]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
