"""A training process for the fault tests to kill: the tiny run of training/tiny.py through train().

    python tests/training/fault_worker.py OUT MAX_STEPS SAVE_EVERY [STEP_SLEEP_S]

Always passes resume=True: continues OUT/last (or .last.old), or starts when there is none. Prints "step N" after every step (flushed), so a test
knows where the run is, and "done N" at the end; exits 128 + signum when a signal stopped it, like
`txl train`. Shared by tests/training/test_faults.py and benchmarks/fault_kill.py.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for training.tiny

from training.tiny import tiny_data, tiny_run_config  # noqa: E402


def reference_config(max_steps: int, save_every: int):
    # eval every 2 steps: validation (and best/) is part of what a resume must reproduce
    return tiny_run_config(max_steps=max_steps, save_every=save_every, eval_every=2, device="cpu")


def main(argv: list[str]) -> int:
    import torch

    from transformer_xl.training import train

    torch.set_num_threads(1)
    out, max_steps, save_every = Path(argv[0]), int(argv[1]), int(argv[2])
    sleep = float(argv[3]) if len(argv) > 3 else 0.0

    def on_step(step: int, loss: float) -> None:
        print(f"step {step}", flush=True)
        if sleep:
            time.sleep(sleep)  # spreads the steps out so that random kills land anywhere

    # resume=True always: it continues from last/, or starts the run when killed before the first save
    result = train(reference_config(max_steps, save_every), data=tiny_data(), out=out, resume=True,
                   progress=False, on_step=on_step)
    print(f"done {result.step}", flush=True)
    if result.interrupted is not None:
        return 128 + int(getattr(signal, result.interrupted))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
