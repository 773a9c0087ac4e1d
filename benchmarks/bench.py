"""Speed and memory of transformer-xl against Hugging Face's TransfoXL, same config, weights and inputs.

    python benchmarks/bench.py                      # configs C and W, every workload (make bench)
    python benchmarks/bench.py --configs C --workloads train eval640
    python benchmarks/bench.py --config enwik8-base  # any preset (batch from --batch-size)
    python benchmarks/bench.py --device cuda          # on a GPU (peak memory: torch.cuda.max_memory_allocated)
    python benchmarks/bench.py --configs C --workloads train train_recompute  # recompute_attention off/on

Every measurement runs in a fresh subprocess (so peak resident memory is that workload's own) and is
repeated; the table shows medians and the ratio ours / Hugging Face measured in the same run. Model
FLOPs utilisation is reported against the matrix-multiply peak measured in the same run.
Requires the `bench` extra (transformers 4.37.2, psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from transformer_xl import ModelConfig, SegmentRunner, Span, TransformerXLLM, apply_device_kernels

# The configs: C byte level, W word level with an adaptive softmax.
CONFIGS = {
    "C": dict(preset="char-small", batch_size=16),
    "W": dict(preset="word-small", batch_size=8),
}
WORKLOADS = ("train", "train_bf16", "eval128", "eval640", "gen")
# Run only when named: fp32 training of ours with recompute_attention on (HF as in "train").
EXTRA_WORKLOADS = ("train_recompute",)
EVAL_SEG_LEN = 64
THREADS: int | None = None  # threads per worker (--threads); None: torch's default
DEVICE = torch.device("cpu")  # --device: where every worker runs


@dataclass
class Spec:
    config: ModelConfig
    batch_size: int


def spec_for(name: str, batch_size: int | None) -> Spec:
    if name in CONFIGS:
        entry = CONFIGS[name]
        return Spec(ModelConfig.preset(entry["preset"]), batch_size or entry["batch_size"])
    return Spec(ModelConfig.preset(name), batch_size or 8)


# Models -------------------------------------------------------------------------------------------
def build(impl: str, config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """Ours with the original initialisation, or Hugging Face's TransfoXL holding the very same weights."""
    torch.manual_seed(seed)
    ours = TransformerXLLM(config)
    if impl == "ours":
        return apply_device_kernels(ours.to(DEVICE), DEVICE)  # as training and load_checkpoint do
    from transformers import TransfoXLConfig, TransfoXLLMHeadModel

    from transformer_xl.interop.hf import config_to_hf, state_dict_to_hf

    hf = TransfoXLLMHeadModel(TransfoXLConfig(**config_to_hf(config)))
    hf.load_state_dict(state_dict_to_hf(ours), strict=False)
    return hf.to(DEVICE)


def make_tokens(config: ModelConfig, shape: tuple[int, int]) -> torch.Tensor:
    """Benchmark input. Word-level configs (with an adaptive softmax) get Zipf-distributed ids, as real
    text has (frequency ~ 1/rank): uniform ids would put 75% of the tokens of config W in its rarest
    cluster and time a workload no corpus produces. Byte-level configs get uniform ids."""
    if not config.cutoffs:
        return torch.randint(0, config.n_token, shape)
    weights = 1.0 / torch.arange(1, config.n_token + 1, dtype=torch.float64)
    return torch.multinomial(weights, shape[0] * shape[1], replacement=True).view(shape)


class HFRunner:
    """Hugging Face's TransfoXL carrying its memory, with the interface of our SegmentRunner's step."""

    def __init__(self, model, *, mem_len: int | None = None) -> None:
        self.model, self.mems = model, None
        if mem_len is not None:
            model.reset_memory_length(mem_len)

    def step(self, x, targets=None, **_):
        out = self.model(x, mems=self.mems, labels=targets)
        self.mems = out.mems
        return out


def make_runner(impl: str, model, *, span: Span | None = None):
    """Ours: the SegmentRunner that training, evaluate and generate use (memory keys/values reused when
    gradients are off). Hugging Face: its model with its memory (zero-filled at the start, as it does)."""
    if impl == "ours":
        return SegmentRunner(model, span=span)
    return HFRunner(model, mem_len=None if span is None else span.mem_len)


def step_loss(impl: str, runner, x, y):
    """Mean loss of one segment (memory carried by the runner)."""
    out = runner.step(x, y)
    return (out.loss if impl == "ours" else out.losses).mean()


def model_flops(config: ModelConfig, *, batch: int, seg_len: int, mem_len: int) -> float:
    """Matrix-multiply FLOPs of one forward over a (batch, seg_len) segment with mem_len of memory."""
    c, hd, t, k = config.d_model, config.n_head * config.d_head, seg_len, seg_len + mem_len
    per_seq = (2 * t * c * hd  # queries
               + 2 * k * c * 2 * hd  # keys and values over [memory ; segment]
               + 3 * 2 * t * k * hd  # content scores, position scores, probabilities x values
               + 2 * t * hd * c  # output projection
               + 2 * 2 * t * c * config.d_inner)  # feed-forward
    layers = config.n_layer * (batch * per_seq + 2 * k * c * hd)  # r_net once per forward
    if config.cutoffs:  # adaptive softmax: head for every token, tails for their share (approx.)
        softmax = 2 * t * config.d_embed * (config.cutoffs[0] + len(config.cutoffs))
    else:
        softmax = 2 * t * config.d_embed * config.n_token
    return layers + batch * softmax


# Workers (each in its own process) ---------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident memory of this process; on CUDA the peak of tensors allocated on the GPU."""
    if DEVICE.type == "cuda":
        return torch.cuda.max_memory_allocated(DEVICE) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def now() -> float:
    """A timestamp after the device has finished the work queued so far."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return time.perf_counter()


def worker_matmul(dtype: str, repeats: int) -> dict:
    """The best of torch's fp32 matmul (MKL) and oneDNN's (what our dense layers use) on 2048^3; on CUDA
    torch.mm on 8192^3."""
    from transformer_xl.kernels.linear import linear

    n = 8192 if DEVICE.type == "cuda" else 2048
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=kind, device=DEVICE), torch.randn(n, n, dtype=kind, device=DEVICE)
    best = {}
    candidates = [("torch.mm", lambda: a @ b)] + ([("onednn", lambda: linear(a, b))] if DEVICE.type == "cpu" else [])
    for name, fn in candidates:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = now()
            for _ in range(5):
                fn()
            times.append((now() - start) / 5)
        best[name] = 2 * n ** 3 / statistics.median(times) / 1e9
    return {"gflops": max(best.values()), "by_backend": best}


def _stdlib_bytes(n: int) -> torch.Tensor:
    """The first n bytes of this Python's standard library sources (sorted paths): text on every machine."""
    import sysconfig

    chunks, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunk = path.read_bytes()
        chunks.append(chunk)
        total += len(chunk)
        if total >= n:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:n]), dtype=torch.uint8).long()


def worker_bf16_loss(spec: Spec, *, steps: int) -> dict:
    """Losses of the same 200-step run on real text in fp32 and under bf16 autocast (same init, data and
    dropout seed): the mean of the last 10 steps' losses, compared."""
    config, batch = spec.config, spec.batch_size
    seg = config.seg_len
    if config.n_token < 256:
        raise SystemExit("the bf16 check trains on bytes: use a config with n_token >= 256 (e.g. C)")
    data = _stdlib_bytes(batch * (seg * steps + 1)).view(batch, seg * steps + 1).to(DEVICE)  # real text
    result = {}
    for precision in ("fp32", "bf16"):
        model = build("ours", config).train()
        optim = torch.optim.Adam(model.parameters(), lr=2.5e-4)
        torch.manual_seed(2)
        runner, losses = SegmentRunner(model, precision=precision), []
        for step in range(steps):
            x, y = data[:, step * seg:(step + 1) * seg], data[:, step * seg + 1:(step + 1) * seg + 1]
            loss = step_loss("ours", runner, x, y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optim.step()
            losses.append(loss.item())
        result[precision] = statistics.mean(losses[-10:])
    result["relative_difference"] = abs(result["bf16"] - result["fp32"]) / result["fp32"]
    return result


def worker_train(impl: str, spec: Spec, *, steps: int, warmup: int, bf16: bool, recompute: bool = False) -> dict:
    config, batch = spec.config, spec.batch_size
    if recompute and impl == "ours":
        config = config.replace(recompute_attention=True)
    model = build(impl, config).train()
    optim = torch.optim.Adam(model.parameters(), lr=2.5e-4)
    seg = config.seg_len
    torch.manual_seed(1)  # the same inputs for both implementations
    data = make_tokens(config, (batch, seg * (steps + warmup) + 1)).to(DEVICE)
    runner, times = make_runner(impl, model), []
    for step in range(steps + warmup):
        x, y = data[:, step * seg:(step + 1) * seg], data[:, step * seg + 1:(step + 1) * seg + 1]
        start = now()
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
            loss = step_loss(impl, runner, x, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optim.step()
        if step >= warmup:
            times.append(now() - start)
    tokens = batch * seg
    flops = 3 * model_flops(config, batch=batch, seg_len=seg, mem_len=config.mem_len)
    step_time = statistics.median(times)
    return {"tokens_per_s": tokens / step_time, "flops_per_s": flops / step_time, "peak_rss_mb": peak_rss_mb()}


@torch.no_grad()
def worker_eval(impl: str, spec: Spec, *, mem_len: int, steps: int) -> dict:
    config, batch = spec.config, spec.batch_size
    model = build(impl, config).eval()
    runner = make_runner(impl, model, span=Span(seg_len=EVAL_SEG_LEN, mem_len=mem_len))
    warmup = -(-mem_len // EVAL_SEG_LEN)  # fill the memory before timing
    torch.manual_seed(1)  # the same inputs for both implementations
    data = make_tokens(config, (batch, EVAL_SEG_LEN * (warmup + steps) + 1)).to(DEVICE)
    times = []
    for step in range(warmup + steps):
        x = data[:, step * EVAL_SEG_LEN:(step + 1) * EVAL_SEG_LEN]
        y = data[:, step * EVAL_SEG_LEN + 1:(step + 1) * EVAL_SEG_LEN + 1]
        start = now()
        runner.step(x, y)  # ours as evaluate() runs it: memory keys/values reused
        if step >= warmup:
            times.append(now() - start)
    return {"tokens_per_s": batch * EVAL_SEG_LEN / statistics.median(times), "peak_rss_mb": peak_rss_mb()}


@torch.no_grad()
def worker_gen(impl: str, spec: Spec, *, positions: tuple[int, ...], mem_len: int, timed: int) -> dict:
    """Per-token latency of greedy decoding (one token at a time, memory carried) at given positions."""
    config = spec.config
    model = build(impl, config).eval()
    runner = make_runner(impl, model, span=Span(seg_len=1, mem_len=mem_len))
    token = torch.zeros(1, 1, dtype=torch.long, device=DEVICE)
    latency, times = {}, []
    last = max(positions) + timed
    for pos in range(last):
        start = now()
        if impl == "ours":
            log_probs = runner.step(token, return_log_probs=True).log_probs[:, -1]
        else:
            log_probs = runner.step(token).prediction_scores[:, -1]
        token = log_probs.argmax(-1, keepdim=True)
        times.append(now() - start)
    for pos in positions:
        latency[str(pos)] = statistics.median(times[pos:pos + timed]) * 1e3
    return {"latency_ms": latency, "tokens_per_s": 1e3 / statistics.median(latency.values()),
            "peak_rss_mb": peak_rss_mb()}


def run_worker(args: argparse.Namespace) -> None:
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    spec = spec_for(args.config_name, args.batch_size)
    if args.worker == "matmul":
        result = worker_matmul(args.dtype, args.repeats)
    elif args.worker in ("train", "train_bf16", "train_recompute"):
        result = worker_train(args.impl, spec, steps=args.steps, warmup=2, bf16=args.worker == "train_bf16",
                              recompute=args.worker == "train_recompute")
    elif args.worker in ("eval128", "eval640"):
        result = worker_eval(args.impl, spec, mem_len=int(args.worker[4:]), steps=args.steps)
    elif args.worker == "bf16_loss":
        result = worker_bf16_loss(spec, steps=args.steps)
    elif args.worker == "gen":
        result = worker_gen(args.impl, spec, positions=(100, 2000), mem_len=spec.config.mem_len, timed=20)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    print(json.dumps(result))


# Driver -------------------------------------------------------------------------------------------
def measure(worker: str, *, impl: str = "ours", config_name: str = "C", batch_size: int | None = None,
            steps: int = 5, repeats: int = 3, dtype: str = "fp32") -> list[dict]:
    results = []
    for _ in range(repeats):
        cmd = [sys.executable, __file__, "--worker", worker, "--impl", impl, "--config-name", config_name,
               "--steps", str(steps), "--dtype", dtype, "--repeats", "5", "--device", str(DEVICE)]
        if THREADS:
            cmd += ["--threads", str(THREADS)]
        if batch_size:
            cmd += ["--batch-size", str(batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"worker {worker}/{impl} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["C", "W"], help="C, W or preset names")
    parser.add_argument("--config", dest="extra", default=None, help="also benchmark this preset")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS + EXTRA_WORKLOADS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "latest.json")
    parser.add_argument("--threads", type=int, default=None, help="threads per measurement process")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every worker runs there)")
    # worker mode (internal)
    parser.add_argument("--worker", default=None)
    parser.add_argument("--impl", default="ours")
    parser.add_argument("--config-name", default="C")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--bf16-check", action="store_true",
                        help="also train config C 200 steps in fp32 and bf16 and compare the losses")
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    global THREADS, DEVICE
    THREADS = args.threads
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")

    configs = list(args.configs) + ([args.extra] if args.extra else [])
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    if DEVICE.type == "cuda":
        machine += f", {torch.cuda.get_device_name(DEVICE)} (peak memory columns: GPU allocations, not RSS)"
    report = {"date": date.today().isoformat(), "machine": machine, "device": str(DEVICE),
              "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
              "repeats": args.repeats}
    peaks = {d: max(r["gflops"] for r in measure("matmul", dtype=d, repeats=args.repeats)) for d in ("fp32", "bf16")}
    report["matmul_peak_gflops"] = peaks
    rows = []
    for name in configs:
        for workload in args.workloads:
            ours = measure(workload, impl="ours", config_name=name, batch_size=args.batch_size,
                           steps=args.steps, repeats=args.repeats)
            # Hugging Face is always measured in fp32: the bf16 target is against its fp32 speed.
            hf_workload = "train" if workload in ("train_bf16", "train_recompute") else workload
            hf = measure(hf_workload, impl="hf", config_name=name, batch_size=args.batch_size,
                         steps=args.steps, repeats=args.repeats)
            row = {"config": name, "workload": workload, "ours": ours, "hf": hf}
            if workload == "gen":
                for pos in ("100", "2000"):
                    row[f"ours_ms_{pos}"] = statistics.median(r["latency_ms"][pos] for r in ours)
                    row[f"hf_ms_{pos}"] = statistics.median(r["latency_ms"][pos] for r in hf)
            row["ours_tps"], row["hf_tps"] = median_of(ours, "tokens_per_s"), median_of(hf, "tokens_per_s")
            row["ours_rss"], row["hf_rss"] = median_of(ours, "peak_rss_mb"), median_of(hf, "peak_rss_mb")
            if workload.startswith("train"):
                peak = peaks["bf16" if workload == "train_bf16" else "fp32"]
                row["ours_mfu"] = median_of(ours, "flops_per_s") / (peak * 1e9)
                row["hf_mfu"] = median_of(hf, "flops_per_s") / (peaks["fp32"] * 1e9)
            rows.append(row)
            print_row(row, flush=True)
    report["rows"] = rows
    if args.bf16_check:
        check = measure("bf16_loss", config_name="C", steps=200, repeats=1)[0]
        report["bf16_loss_check"] = check
        print(f"bf16 loss check (config C, 200 steps): fp32 {check['fp32']:.4f}, bf16 {check['bf16']:.4f}, "
              f"relative difference {check['relative_difference']:.2%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print()
    print(markdown(report))


def print_row(row: dict, flush: bool = False) -> None:
    print(f"{row['config']:>12} {row['workload']:>10}: ours {row['ours_tps']:9.0f} tok/s, "
          f"hf {row['hf_tps']:9.0f} tok/s, ratio {row['ours_tps'] / row['hf_tps']:.2f}x", flush=flush)


def markdown(report: dict) -> str:
    lines = [f"Date {report['date']}, {report['machine']}, torch {report['torch']}, {report['threads']} threads, "
             f"median of {report['repeats']} runs. Matmul peak: fp32 {report['matmul_peak_gflops']['fp32']:.0f} "
             f"GFLOP/s, bf16 {report['matmul_peak_gflops']['bf16']:.0f} GFLOP/s.", "",
             "| config | workload | ours tok/s | HF tok/s | ratio | ours peak RSS MB | HF peak RSS MB | RSS ratio | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        notes = ""
        if "ours_mfu" in row:
            notes = f"MFU ours {row['ours_mfu']:.0%}, HF {row['hf_mfu']:.0%}"
        if row["workload"] == "gen":
            notes = (f"latency ms @100/@2000: ours {row['ours_ms_100']:.2f}/{row['ours_ms_2000']:.2f} "
                     f"({row['ours_ms_2000'] / row['ours_ms_100']:.2f}x), HF {row['hf_ms_100']:.2f}/"
                     f"{row['hf_ms_2000']:.2f}")
        workload = row["workload"] + (" (HF fp32)" if row["workload"] == "train_bf16" else "")
        lines.append(f"| {row['config']} | {workload} | {row['ours_tps']:.0f} | {row['hf_tps']:.0f} | "
                     f"{row['ours_tps'] / row['hf_tps']:.2f}x | {row['ours_rss']:.0f} | {row['hf_rss']:.0f} | "
                     f"{row['ours_rss'] / row['hf_rss']:.2f}x | {notes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
