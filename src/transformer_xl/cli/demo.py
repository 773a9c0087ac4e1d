"""`make demo`: prepare the embedded corpus, train a small model, show what memory buys, generate.

    python -m transformer_xl.cli.demo --config configs/demo.toml --out runs/demo

Steps (each has its `txl` equivalent, printed as it runs): prepare the Python standard library's
sources at byte level; train for a bounded time; evaluate bits per character on the test split with
no memory and with the trained memory length (and a longer one), side by side; sample a continuation.
The numbers go to OUT/results.json and OUT/results.md. Exits 1 if memory does not improve the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import TransformerXLError

PROMPT = "def "
MIN_STEPS = 1200  # fewer and memory's gain is a few per cent, the sample junk: a slow machine takes longer
BUSY_FRACTION = 0.5  # trained fewer than this share of the planned steps: the machine got busier
MIN_GAIN_PERCENT = 5.0  # a quiet machine gains ~16 %; below this an undertrained model shows nothing


def _say(text: str) -> None:
    print(text, flush=True)


def _calibrate(config_path: str, budget: float) -> tuple[int, float, int]:
    """(steps that fit ``budget`` seconds, seconds per step, threads): time a few optimiser steps of the
    configured model with the CPUs this process may use and with one thread, and keep the faster. On a
    machine that other jobs share, one thread can be many times faster than several fighting for the same
    cores. The schedule is a function of the step, so the run is sized in steps (and stays reproducible)."""
    from ..runtime import default_threads, set_threads

    candidates = sorted({default_threads(), 1}, reverse=True)
    timings = []
    for threads in candidates:
        set_threads(threads)
        timings.append((_time_steps(config_path), threads))
    step_seconds, threads = min(timings)
    if len(timings) > 1:
        _say("   calibration: " + ", ".join(f"{t} thread{'s' * (t > 1)} {s * 1000:.0f} ms/step" for s, t in timings))
    set_threads(threads)
    config_steps = _config_max_steps(config_path)
    steps = int(budget / step_seconds)
    return max(min(MIN_STEPS, config_steps), min(steps, config_steps)), step_seconds, threads


def _config_max_time(config_path: str) -> float:
    from ..config import TrainConfig, load_toml

    return float(load_toml(config_path).get("train", {}).get("max_time", TrainConfig().max_time))


def _config_max_steps(config_path: str) -> int:
    from ..config import TrainConfig, load_toml

    return int(load_toml(config_path).get("train", {}).get("max_steps", TrainConfig().max_steps))


def _time_steps(config_path: str) -> float:
    """Seconds per optimiser step of the configured model (after warm-up, a low quantile)."""
    import torch

    from ..config import RunConfig, load_toml
    from ..kernels import apply_device_kernels
    from ..model import TransformerXLLM
    from ..runner import SegmentRunner

    raw = load_toml(config_path)
    config = RunConfig.from_dict({k: v for k, v in raw.items() if k != "preset"} | {
        "model": {"n_token": 256, **raw.get("model", {})}})
    model = apply_device_kernels(TransformerXLLM(config.model), "cpu")  # as training applies them
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (config.train.batch_size, config.model.seg_len))
    runner, times = SegmentRunner(model), []  # the training span, memory carried as in training
    for _ in range(6):
        start = time.perf_counter()
        out = runner.step(x, targets=x)
        out.loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[1]  # after warm-up; a low quantile resists a momentary hiccup


def _run(args: argparse.Namespace) -> int:
    from ..data.cache import prepare_corpus
    from ..evaluation import evaluate
    from ..generation import generate
    from ..runtime import load_checkpoint, resolve_span
    from . import main as txl

    out = Path(args.out)
    data, run = out / "data", out / "run"
    started = time.perf_counter()

    _say(f"== 1/4 prepare    txl prepare --corpus pystdlib --level {args.level} --out {data}")
    prepared = prepare_corpus("pystdlib", None, data, level=args.level, progress=False)
    _say(prepared.summary())

    _say("\n== 2/4 train      (timing a few steps first)")
    steps, step_seconds, threads = _calibrate(args.config, args.train_seconds)
    _say(f"   txl train --data {data} --out {run} --config {args.config} --train.max_steps {steps} "
         f"--threads {threads} --overwrite")  # (+ --train.max_time from the measured speed)
    needed = steps * step_seconds
    max_time = max(_config_max_time(args.config), 1.5 * needed)  # room for hiccups, not for a machine twice as busy
    if needed > 1.2 * args.train_seconds:
        _say(f"   ({step_seconds * 1000:.0f} ms per step on this machine now, slower than the "
             f"~{args.train_seconds:.0f} s budget allows: the {steps} steps the demo needs to show memory at work "
             f"take ~{needed / 60:.1f} min; "
             f"train.max_time {max_time:.0f} s stops it if the machine gets busier still)")
    else:
        _say(f"   ({step_seconds * 1000:.0f} ms per step on this machine now: {steps} steps for a "
             f"~{args.train_seconds:.0f} s budget; train.max_time stops it early if the machine gets busier)")
    train_started = time.perf_counter()
    code = txl(["train", "--data", str(data), "--out", str(run), "--config", args.config,
                "--train.max_steps", str(steps), "--train.max_time", f"{max_time:.0f}", "--threads", str(threads),
                "--overwrite",
                "--expected-step-seconds", f"{step_seconds:.6f}"])  # a fresh run each time: a whole training
    if code:
        return code
    train_seconds = time.perf_counter() - started
    trained = _trained_steps(run)
    busy = trained < BUSY_FRACTION * steps
    if busy:
        actual = (time.perf_counter() - train_started) / max(trained, 1)
        _say(f"\n   THE MACHINE WAS TOO BUSY: training reached step {trained} of the {steps} planned before "
             f"train.max_time ({actual:.2f} s per step instead of the {step_seconds:.2f} s measured just before; "
             "another process is using these cores). The numbers below come from an undertrained model.")

    _say("\n== 3/4 evaluate   bits per character on the test split, same segments, different memory")
    loaded = load_checkpoint(run / "last")
    model, vocab, run_config = loaded.model, loaded.vocab, loaded.run_config
    assert run_config is not None
    ev, trained_mem = run_config.eval, run_config.model.mem_len
    test = prepared.split("test")
    rows = []  # the whole test split, every byte scored once (as txl eval does without --max-tokens)
    for mem_len in (0, trained_mem, 3 * trained_mem):
        span = resolve_span(model.config, loaded.saved_eval, mem_len=mem_len)
        command = (f"txl eval --checkpoint {run}/last --data {data} --seg-len {span.seg_len} --mem-len {mem_len} "
                   f"--batch-size {ev.batch_size} --warmup {ev.warmup}")
        result = evaluate(model, test, span=span, batch_size=ev.batch_size, warmup=ev.warmup, level=vocab.kind)
        label = "no memory" if mem_len == 0 else ("trained memory" if mem_len == trained_mem else "longer memory")
        rows.append({"label": label, "mem_len": mem_len, "seg_len": span.seg_len, "span": span.to_dict(),
                     "bpc": result.bpc, "loss": result.loss, "tokens": result.n_tokens,
                     "tokens_available": result.n_available, "command": command})
        _say(f"   {label:<15} {span.describe()}: {result.bpc:.4f} bpc over {result.n_tokens:,} of "
             f"{result.n_available:,} test bytes   ({command})")
    base, trained = rows[0]["bpc"], rows[1]["bpc"]
    gain = base - trained
    _say(f"   memory improves the test set by {gain:.4f} bpc ({100 * gain / base:.1f}%)")

    _say(f"\n== 4/4 generate   txl generate --checkpoint {run}/last --prompt {PROMPT!r} --max-new-tokens "
         f"{args.sample_tokens} --mem-len {trained_mem} --temperature 0.8 --top-p 0.95 --seed 0")
    span = resolve_span(model.config, loaded.saved_eval, mem_len=trained_mem)
    _say(f"   span: {span.describe()}")
    tokens = list(generate(model, [int(t) for t in vocab.encode(PROMPT)], max_new_tokens=args.sample_tokens,
                           temperature=0.8, top_p=0.95, seed=0, span=span))
    sample = PROMPT + vocab.decode(tokens)
    _say(sample if not busy else sample + "\n   (from the undertrained model: expect junk)")

    trained_steps = trained
    results = {"machine_too_busy": busy, "planned_steps": steps, "threads": threads,
               "calibrated_step_seconds": round(step_seconds, 4),
               "corpus": "pystdlib", "level": args.level, "model": run_config.model.to_dict(),
               "steps": trained_steps, "train_seconds": round(train_seconds, 1),
               "total_seconds": round(time.perf_counter() - started, 1), "eval": rows,
               "improvement_bpc": gain, "sample": sample}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = ["| memory | mem_len | seg_len | test bpc |", "|---|---:|---:|---:|"]
    table += [f"| {r['label']} | {r['mem_len']} | {r['seg_len']} | {r['bpc']:.4f} |" for r in rows]
    (out / "results.md").write_text(
        f"# make demo\n\nByte-level Transformer-XL ({run_config.model.n_layer} layers, d_model "
        f"{run_config.model.d_model}) trained {trained_steps} steps ({train_seconds:.0f} s) on pystdlib; "
        f"test bits per character over all {rows[0]['tokens']:,} scored bytes of the test split:\n\n"
        + "\n".join(table)
        + f"\n\nMemory improves bpc by {gain:.4f}.\n\nSample:\n\n```\n{sample}\n```\n", encoding="utf-8")
    _say(f"\nresults written to {out / 'results.json'} and {out / 'results.md'} "
         f"({time.perf_counter() - started:.0f} s in all)")
    _plot(run, out)
    if busy and 100 * gain / base < MIN_GAIN_PERCENT:
        print(f"demo: the machine was too busy to train enough ({trained} of {steps} steps): memory gained only "
              f"{100 * gain / base:.1f}%, which says nothing. Run `make demo` again when the machine is quieter, "
              "or give it longer: DEMO_ARGS='--train-seconds 600' make demo", file=sys.stderr)
        return 3
    if gain <= 0:
        print("demo: error: memory did not improve bits per character", file=sys.stderr)
        return 1
    if 100 * gain / base < MIN_GAIN_PERCENT:
        _say(f"   note: memory gained only {100 * gain / base:.1f}% here ({trained} steps); a quiet machine trains "
             "more steps in the budget and shows ~15%")
    return 0


def _trained_steps(run: Path) -> int:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=0)


def _plot(run: Path, out: Path) -> None:
    """OUT/loss.png when matplotlib is installed; otherwise say how to get it."""
    from ..config import TransformerXLError
    from .plot import INSTALL_HINT, plot_runs

    try:
        path = plot_runs([run], out / "loss.png")
    except TransformerXLError as exc:
        _say(f"(no loss plot: {exc})" if "matplotlib" not in str(exc) else
             f"(no loss plot: matplotlib is not installed; {INSTALL_HINT}; then txl plot {run})")
        return
    _say(f"loss curves: {path}   (txl plot {run})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transformer_xl.cli.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.toml", help="TOML run file for the training")
    parser.add_argument("--out", default="runs/demo", help="where data, run and results go")
    parser.add_argument("--level", choices=("byte", "char"), default="byte")
    parser.add_argument("--sample-tokens", type=int, default=300)
    parser.add_argument("--train-seconds", type=float, default=150.0, help="training budget (default 150)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except TransformerXLError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
