"""DDP on 2 gloo processes (CPU) equals one process on the same global batch."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from training.tiny import ddp_worker, tiny_data, tiny_run_config
from transformer_xl.training import train
from transformer_xl.training.checkpoint import load_training_state

# Tolerance: DDP averages the two ranks' gradients (a sum in another order than one process's mean),
# so parameters agree to float32 rounding amplified by Adam's normalisation over K steps.
ATOL = 2e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    # dropout 0: the ranks draw their own dropout masks, which one process cannot reproduce
    config = tiny_run_config(dropout=0.0, max_steps=5, batch_size=4, grad_accum=2, eval_every=5, save_every=5)
    data = tiny_data()
    single = train(config, data=data, out=tmp_path / "single")
    mp.start_processes(ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config.to_dict(), data),
                       nprocs=2, join=True, start_method="spawn")
    a = load_file(tmp_path / "single" / "last" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "last" / "model.safetensors")
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest parameter difference after 5 steps: {worst:.2e}")
    assert worst < ATOL, worst
    # the logged losses are all-reduced means over the global batch
    np.testing.assert_allclose(json.loads((tmp_path / "ddp" / "losses.json").read_text()), single.losses,
                               rtol=1e-5)
    # the checkpoint holds the memory of both ranks as one global batch, in rank order
    sm, dm = load_training_state(tmp_path / "single" / "last"), load_training_state(tmp_path / "ddp" / "last")
    assert dm["world_size"] == 2 and len(dm["rng"]) == 2
    for x, y in zip(sm["mems"], dm["mems"]):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_two_gloo_processes_share_one_time_clock(tmp_path: Path) -> None:
    """optim.decay_clock 'time' on 2 ranks: the ranks agree on the clock (the slowest one's) every step and
    stop together when the budget is spent (a rank left behind would hang the collectives); the rate decays
    and the agreed seconds are saved."""
    import dataclasses

    from transformer_xl.config import OptimConfig

    base = tiny_run_config(dropout=0.0, max_steps=10 ** 6, max_time=2.0, batch_size=4, grad_accum=1,
                           eval_every=0, save_every=0)
    config = dataclasses.replace(base, optim=OptimConfig(lr=3e-3, lr_min=3e-4, warmup_steps=1, decay_clock="time"))
    mp.start_processes(ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp"), config.to_dict(), tiny_data()),
                       nprocs=2, join=True, start_method="spawn")
    state = load_training_state(tmp_path / "ddp" / "last")
    assert state["world_size"] == 2 and state["train_seconds"] >= 2.0
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert len(lrs) >= 2 and lrs[0] == pytest.approx(3e-3) and lrs[-1] < lrs[0]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
