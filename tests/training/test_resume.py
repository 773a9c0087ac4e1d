"""Exact resume: N steps == N/2 steps, stop, resume, N/2 steps (losses and weights, fp32, same seed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import TransformerXLError
from transformer_xl.training import train
from transformer_xl.training.checkpoint import load_training_state
from transformer_xl.training.schedule import learning_rate


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = tiny_data()
    # dropout > 0 (RNG matters), 2 accumulation chunks with their own memory, an epoch boundary at step 4
    full = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "full")
    first = train(tiny_run_config(max_steps=3), data=data, out=tmp_path / "split")
    second = train(tiny_run_config(max_steps=6), data=data, out=tmp_path / "split", resume=True)
    assert len(full.losses) == 6 and second.step == 6
    assert first.losses + second.losses == full.losses  # exact equality, no tolerance
    a = load_file(tmp_path / "full" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the metrics file of the split run continues the first one
    steps = [r["step"] for r in map(json.loads, (tmp_path / "split" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_training_state_holds_memory_position_and_rng(tmp_path: Path) -> None:
    train(tiny_run_config(max_steps=3), data=tiny_data(), out=tmp_path)
    state = load_training_state(tmp_path / "last")  # torch.load(weights_only=True) inside
    assert state["step"] == 3 and state["world_size"] == 1
    assert state["streams"]["position"] == 3
    assert len(state["mems"]) == 2 and state["mems"][0].shape == (4, 8, 16)  # (B, M, C) per layer
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert (tmp_path / "best" / "model.safetensors").exists()


def test_resume_refuses_incompatible_config(tmp_path: Path) -> None:
    data = tiny_data()
    train(tiny_run_config(max_steps=2), data=data, out=tmp_path)
    bad = tiny_run_config(max_steps=4, batch_size=2)
    with pytest.raises(TransformerXLError, match="train.batch_size was 4, now 2"):
        train(bad, data=data, out=tmp_path, resume=True)
    with pytest.raises(TransformerXLError, match="already holds a run"):
        train(tiny_run_config(), data=data, out=tmp_path)


def test_stop_by_time_saves_last(tmp_path: Path) -> None:
    result = train(tiny_run_config(max_steps=10_000, max_time=0.01, eval_every=0, save_every=0),
                   data=tiny_data(), out=tmp_path)
    assert result.stopped_early and 1 <= result.step < 10_000
    assert load_training_state(tmp_path / "last")["step"] == result.step


def test_resume_drops_metrics_of_steps_after_the_checkpoint(tmp_path: Path) -> None:
    """After a crash, the rows of steps past the last checkpoint (and a torn line) would appear twice."""
    data = tiny_data()
    out = tmp_path / "run"
    train(tiny_run_config(max_steps=3), data=data, out=out)
    with open(out / "metrics.jsonl", "a") as f:  # what a run killed after step 5 leaves behind
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n" + json.dumps({"step": 5, "loss": 9.0}) + "\n")
        f.write('{"step": 6, "lo')
    train(tiny_run_config(max_steps=5), data=data, out=out, resume=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5]
    assert all(r["loss"] != 9.0 for r in rows if "loss" in r)


def _sentence_data(seed: int = 0) -> dict[str, np.ndarray]:
    # sentences of 3 to 12 tokens, about 3 segments of 8 per stream and epoch: 6 steps reshuffle once
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, 18)
    return {"train": rng.integers(0, 50, int(lengths.sum())), "train_sentences": np.cumsum(lengths) - lengths,
            "valid": rng.integers(0, 50, 60)}


@pytest.mark.parametrize("streams, data, kind", [
    ("varlen", tiny_data(), "varlen"),
    ("auto", _sentence_data(), "sentences"),  # auto: the data has sentence starts (lm1b)
])
def test_resume_is_exact_for_every_kind_of_stream(tmp_path: Path, streams: str, data, kind: str) -> None:
    config = lambda steps: tiny_run_config(max_steps=steps, streams=streams)  # noqa: E731
    full = train(config(6), data=data, out=tmp_path / "full")
    first = train(config(3), data=data, out=tmp_path / "split")
    state = load_training_state(tmp_path / "split" / "last")
    assert state["streams"]["kind"] == kind and state["mems"] is not None
    second = train(config(6), data=data, out=tmp_path / "split", resume=True)
    assert first.losses + second.losses == full.losses  # exact equality, no tolerance
    a = load_file(tmp_path / "full" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_training_state(tmp_path / "full" / "last")["streams"]["epoch"] >= 1  # an epoch boundary was crossed
    # as in the original, the learning rate follows the schedule whatever a segment's length
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    optim = config(6).optim
    assert [r["lr"] for r in rows if "loss" in r] == [learning_rate(s, optim, max_steps=6) for s in range(6)]


def test_resume_refuses_other_streams(tmp_path: Path) -> None:
    train(tiny_run_config(max_steps=2, streams="varlen"), data=tiny_data(), out=tmp_path)
    with pytest.raises(TransformerXLError, match="trained on varlen streams, now ordered"):
        train(tiny_run_config(max_steps=4, streams="ordered"), data=tiny_data(), out=tmp_path, resume=True)


def test_a_time_decayed_run_ends_at_the_floor_and_resumes_its_clock(tmp_path: Path) -> None:
    """optim.decay_clock 'time': the cosine runs over train.max_time seconds, whatever the step count, and
    a resumed run continues the clock (the seconds are in the training state) instead of restarting it."""
    import dataclasses

    from transformer_xl.config import OptimConfig

    def config(max_time: float):
        base = tiny_run_config(max_steps=10 ** 6, max_time=max_time, eval_every=0, save_every=0)
        return dataclasses.replace(base, optim=OptimConfig(lr=3e-3, lr_min=3e-4, warmup_steps=1,
                                                           decay_clock="time"))

    data = tiny_data()
    result = train(config(1.5), data=data, out=tmp_path)
    assert result.stopped_early and result.step > 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    # from the peak down toward the floor within the budget (each rate reads the clock of the step before,
    # so the last one is at the floor only if steps are short: on a loaded machine they may not be)
    assert lrs[0] == pytest.approx(3e-3) and lrs[-1] < 1.5e-3
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    seconds = load_training_state(tmp_path / "last")["train_seconds"]
    assert 1.5 <= seconds < 10
    # resumed with a larger budget: the clock goes on from `seconds`, so the first rate is already decayed
    train(config(3.0), data=data, out=tmp_path, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    resumed = [r["lr"] for r in rows if "lr" in r and r["step"] > result.step]
    expected = learning_rate(result.step, config(3.0).optim, max_steps=10 ** 6, seconds=seconds, max_time=3.0)
    assert resumed[0] == pytest.approx(expected, rel=1e-6) and resumed[0] < 2e-3
    assert load_training_state(tmp_path / "last")["train_seconds"] >= 3.0


def test_a_time_decayed_run_shows_its_seconds_in_the_progress_bar(tmp_path: Path, capsys) -> None:
    """The bar of a run that train.max_time ends counts seconds to max_time (not to max_steps = 10**6)."""
    import dataclasses

    from transformer_xl.config import OptimConfig

    base = tiny_run_config(max_steps=10 ** 6, max_time=1.0, eval_every=0, save_every=0)
    config = dataclasses.replace(base, optim=OptimConfig(lr=3e-3, warmup_steps=1, decay_clock="time"))
    train(config, data=tiny_data(), out=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "| 1/1 s [" in err and "/1000000" not in err
