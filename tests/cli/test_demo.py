"""`make demo` (cli/demo.py) on a machine too busy to train: it says so plainly instead of claiming success."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transformer_xl.cli import demo

TINY_DEMO = """
[model]
n_layer = 1
d_model = 16
n_head = 2
d_head = 8
d_inner = 32
seg_len = 16
mem_len = 16
[train]
batch_size = 4
max_steps = 100000
max_time = 1.0
eval_every = 0
save_every = 0
log_every = 10
tensorboard = false
[eval]
batch_size = 8
"""


@pytest.mark.slow
def test_too_busy_machine_is_reported_not_dressed_as_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(TINY_DEMO)
    # the calibration promised 100,000 steps in 1 s; train.max_time (1.5 s) stops far short of them
    monkeypatch.setattr(demo, "_calibrate", lambda path, budget: (100_000, 0.00001, 1))
    code = demo.main(["--config", str(config), "--out", str(tmp_path / "demo"), "--sample-tokens", "20"])
    out, err = capsys.readouterr()
    assert "THE MACHINE WAS TOO BUSY" in out and "expect junk" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["machine_too_busy"] is True and results["planned_steps"] == 100_000
    if code == 3:  # the usual outcome: the gain of a model trained for a second means nothing
        assert "too busy to train enough" in err and "memory did not improve" not in err
    else:  # a lucky gain above the bar still names the shortfall above
        assert code == 0 and results["improvement_bpc"] > 0
    assert "loss" in out  # a loss plot, or the line that says how to get matplotlib


def test_calibration_keeps_the_faster_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from transformer_xl import runtime

    config = tmp_path / "demo.toml"
    config.write_text(TINY_DEMO)
    monkeypatch.setattr(runtime, "default_threads", lambda: 2)
    monkeypatch.setattr(demo, "_time_steps", lambda path: 0.5 if torch.get_num_threads() == 2 else 0.1)
    before = torch.get_num_threads()
    try:
        steps, seconds, threads = demo._calibrate(str(config), 30.0)
        assert (steps, seconds, threads) == (1200, 0.1, 1) and torch.get_num_threads() == 1  # MIN_STEPS
        assert demo._calibrate(str(config), 500.0)[0] == 5000  # the budget's steps when it allows more
    finally:
        torch.set_num_threads(before)
