"""kill -9 a training process at random moments, ten times, and check that nothing is lost.

    .venv/bin/python benchmarks/fault_kill.py --kills 10 --seed 0 --out /tmp/txl-fault-kill

Each attempt starts tests/training/fault_worker.py (the tiny run of tests/training/tiny.py, one thread,
resuming from RUN/last when it exists), waits a random time after its first step and sends SIGKILL.
Every third attempt instead waits for a checkpoint write (TXL_TEST_CHECKPOINT_PAUSE) and kills inside
it, at the "write" or the "swap" phase. After each kill: the checkpoint on disk must be the last one
that was complete, and the next attempt must continue from it. Then a final attempt runs to the end,
and its parameters must equal, bit for bit, those of an uninterrupted run with the same seed.
Prints a markdown table and writes fault_kill.json under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "training" / "fault_worker.py"


def _start(out: Path, steps: int, every: int, sleep: float, pause: str | None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TXL_TEST_CHECKPOINT_PAUSE", None)
    if pause:
        env["TXL_TEST_CHECKPOINT_PAUSE"] = pause
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(steps), str(every), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)


def _checkpoint_step(run: Path) -> int | None:
    from transformer_xl.runtime import resolve_checkpoint
    from transformer_xl.training.checkpoint import load_training_state

    try:
        return int(load_training_state(resolve_checkpoint(run / "last"))["step"])
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--steps", type=int, default=200, help="steps of the run")
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--step-sleep", type=float, default=0.05, help="seconds after each step")
    parser.add_argument("--out", default="/tmp/txl-fault-kill")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    from safetensors.torch import load_file

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ref, run = out / "ref", out / "run"
    start = time.perf_counter()
    proc = _start(ref, args.steps, args.save_every, 0.0, None)
    assert proc.communicate()[0].strip().endswith(f"done {args.steps}"), "the reference run failed"

    rows = []
    for attempt in range(1, args.kills + 1):
        before = _checkpoint_step(run)
        phase = ("write", "swap")[(attempt // 3) % 2] if attempt % 3 == 0 else None
        proc = _start(run, args.steps, args.save_every, args.step_sleep, f"{phase}:30" if phase else None)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(line.strip() for line in proc.stdout), daemon=True)
        reader.start()
        if phase:
            while not any("checkpoint paused" in line for line in lines) and proc.poll() is None:
                time.sleep(0.01)
            delay = None
        else:
            while not any(line.startswith("step") for line in lines) and proc.poll() is None:
                time.sleep(0.01)
            delay = rng.uniform(0.0, 1.5)
            time.sleep(delay)
        finished = proc.poll() is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=5)
        steps = [int(line.split()[1]) for line in lines if line.startswith("step ")]
        after = _checkpoint_step(run)
        first = steps[0] if steps else None
        resumed_from = first - 1 if first is not None else None
        # the checkpoint left must be the last complete one: the newest multiple of save_every reached,
        # or the one before when the kill landed inside that save
        last_step = steps[-1] if steps else (before or 0)
        newest = last_step // args.save_every * args.save_every
        ok_ckpt = (after == before or after in (newest, newest - args.save_every)) and \
            (after is not None or newest <= args.save_every)
        rows.append({"attempt": attempt, "kill": f"inside save ({phase})" if phase else f"{delay:.2f} s after step 1",
                     "resumed_from": resumed_from if before is not None else "fresh", "ckpt_before": before,
                     "last_step_seen": last_step, "ckpt_after": after, "finished_before_kill": finished,
                     "resumed_from_last_complete": (before is None and resumed_from == 0) or resumed_from == before,
                     "ckpt_is_last_complete": bool(ok_ckpt)})
        print(json.dumps(rows[-1]), flush=True)

    before = _checkpoint_step(run)
    proc = _start(run, args.steps, args.save_every, 0.0, None)
    text = proc.communicate()[0]
    steps = [int(line.split()[1]) for line in text.splitlines() if line.startswith("step ")]
    a = load_file(ref / "last" / "model.safetensors")
    b = load_file(run / "last" / "model.safetensors")
    import torch

    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    summary = {"kills": args.kills, "steps": args.steps, "save_every": args.save_every,
               "final_resumed_from": (steps[0] - 1) if steps else None, "final_ckpt_before": before,
               "final_exit": proc.returncode, "parameters_equal": equal, "max_abs_diff": worst,
               "all_resumed_from_last_complete": all(r["resumed_from_last_complete"] for r in rows),
               "all_ckpts_last_complete": all(r["ckpt_is_last_complete"] for r in rows),
               "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    (out / "fault_kill.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("| # | kill moment | resumed from step | last step seen | checkpoint left | last complete? |")
    print("|---:|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['attempt']} | {r['kill']} | {r['resumed_from']} | {r['last_step_seen']} | {r['ckpt_after']} | "
              f"{'yes' if r['ckpt_is_last_complete'] and r['resumed_from_last_complete'] else 'NO'} |")
    print(f"final run resumed from step {summary['final_resumed_from']} (checkpoint {before}), exit "
          f"{proc.returncode}; parameters equal to the uninterrupted run: {equal} (max |diff| {worst:g})")
    ok = equal and summary["all_resumed_from_last_complete"] and summary["all_ckpts_last_complete"]
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
