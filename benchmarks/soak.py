"""Long-run soak: train a small model on the CPU for 20+ minutes with evaluation and checkpoints and
check that memory stays flat.

    .venv/bin/python benchmarks/soak.py --minutes 21 --out /tmp/txl-soak   # 1 thread, ~21 minutes

Samples, every ``--sample-every`` steps: resident memory now (VmRSS) and its peak (VmHWM) from
/proc/self/status, and the number of live tensors the garbage collector sees. A leak in the memory
carried across segments (a graph kept alive through undetached mems, a growing mems list) shows as a
rising tensor count and RSS; every checkpoint's saved mems must stay (B, mem_len, C).
Writes soak.jsonl (one sample a line) and soak.json (the summary) under --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _live_tensors() -> int:
    # counts plain tensors only; parameters and optimiser state are constant, so growth means a leak
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=21.0, help="training time (train.max_time)")
    parser.add_argument("--out", default="/tmp/txl-soak", help="working directory (data, run, logs)")
    parser.add_argument("--sample-every", type=int, default=250, help="steps between memory samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: leave the machine to others)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformer_xl.config import ModelConfig, OptimConfig, RunConfig, TrainConfig
    from transformer_xl.data.cache import prepare_corpus
    from transformer_xl.training import train
    from transformer_xl.training.checkpoint import load_training_state

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_corpus("pystdlib", None, out / "data", level="byte", progress=False)
    run_dir = out / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a soak always starts from scratch
    model = ModelConfig(n_token=len(corpus.vocab), n_layer=2, n_head=4, d_model=64, d_head=16, d_inner=256,
                        dropout=0.1, seg_len=32, mem_len=64)
    train_cfg = TrainConfig(batch_size=8, max_steps=10_000_000, max_time=args.minutes * 60, log_every=50,
                            eval_every=1000, eval_batch_size=4, eval_max_tokens=8192, save_every=500,
                            seed=1, device="cpu", tensorboard=False)
    config = RunConfig(model=model, optim=OptimConfig(lr=1e-3, warmup_steps=100, decay_steps=200_000),
                       train=train_cfg)

    samples: list[dict] = []
    log = open(out / "soak.jsonl", "w", encoding="utf-8")
    start = time.perf_counter()
    mem_shapes: set[tuple] = set()

    def on_step(step: int, loss: float) -> None:
        if step % args.sample_every and step != 1:
            return
        gc.collect()
        sample = {"step": step, "elapsed_s": round(time.perf_counter() - start, 1), "loss": round(loss, 4),
                  "rss_mb": _proc_status_kb("VmRSS") / 1024, "peak_rss_mb": _proc_status_kb("VmHWM") / 1024,
                  "live_tensors": _live_tensors()}
        last = run_dir / "last"
        if last.exists() and step % train_cfg.save_every == 0:
            try:
                state = load_training_state(last)
                mem_shapes.add(tuple(tuple(m.shape) for m in state["mems"]))
            except Exception:  # the save of this very step may not have happened yet
                pass
        samples.append(sample)
        log.write(json.dumps(sample) + "\n")
        log.flush()

    result = train(config, data=corpus, out=run_dir, progress=False, on_step=on_step)
    log.close()
    elapsed = time.perf_counter() - start
    # "start" = after the first evaluation and checkpoint, once the allocator has warmed up
    warm = next((s for s in samples if s["step"] >= max(train_cfg.eval_every, train_cfg.save_every) + 50), samples[0])
    end = samples[-1]
    tensors = [s["live_tensors"] for s in samples if s["step"] >= warm["step"]]
    summary = {
        "minutes": round(elapsed / 60, 2), "steps": result.step, "threads": args.threads,
        "tokens": result.step * train_cfg.batch_size * model.seg_len,
        "evaluations": sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                           if "valid_loss" in line),
        "checkpoints_written": result.step // train_cfg.save_every + 1,
        "first_loss": samples[0]["loss"], "last_train_loss": result.losses[-1] if result.losses else None,
        "valid_loss": result.valid_loss, "best_valid_loss": result.best_valid_loss,
        "rss_start_mb": round(warm["rss_mb"], 1), "rss_end_mb": round(end["rss_mb"], 1),
        "peak_rss_start_mb": round(warm["peak_rss_mb"], 1), "peak_rss_end_mb": round(end["peak_rss_mb"], 1),
        "rss_min_after_warmup_mb": round(min(s["rss_mb"] for s in samples if s["step"] >= warm["step"]), 1),
        "rss_max_after_warmup_mb": round(max(s["rss_mb"] for s in samples if s["step"] >= warm["step"]), 1),
        "live_tensors_start": warm["live_tensors"], "live_tensors_end": end["live_tensors"],
        "live_tensors_max": max(tensors), "saved_mem_shapes": sorted(mem_shapes),
        "warm_step": warm["step"],
    }
    (out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    growth = summary["rss_end_mb"] - summary["rss_start_mb"]
    flat = (growth < 0.1 * summary["rss_start_mb"] + 20
            and summary["live_tensors_end"] <= summary["live_tensors_start"] + 50)
    ok = flat and len(mem_shapes) <= 1
    print("soak: memory flat" if ok else f"soak: MEMORY GREW by {growth:.1f} MB or mems changed shape {mem_shapes}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
