"""Faults lose nothing: kill -9, SIGTERM/SIGINT, a full disk and non-finite steps (issue 8).

The long version of the kill test (ten random kills) is benchmarks/fault_kill.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import TransformerXLError
from transformer_xl.runtime import load_checkpoint, resolve_checkpoint
from transformer_xl.training import checkpoint as ckpt
from transformer_xl.training import loop, train
from transformer_xl.training.checkpoint import load_training_state

WORKER = Path(__file__).with_name("fault_worker.py")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(resolve_checkpoint(run / "last") / "model.safetensors")


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # exact, no tolerance


def _start(out: Path, max_steps: int, save_every: int, *, pause: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TXL_TEST_CHECKPOINT_PAUSE", None)
    if pause:
        env["TXL_TEST_CHECKPOINT_PAUSE"] = pause
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(max_steps), str(save_every)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(proc: subprocess.Popen, line: str) -> list[str]:
    seen = []
    for got in proc.stdout:
        seen.append(got.strip())
        if got.strip() == line:
            return seen
    raise AssertionError(f"process ended before {line!r}: {seen} {proc.stderr.read()[-2000:]}")


def _reference(out: Path, max_steps: int, save_every: int) -> None:
    # in a process like the workers' (one thread): thread count changes float reductions
    proc = _start(out, max_steps, save_every)
    assert proc.communicate(timeout=120)[0].strip().endswith(f"done {max_steps}")


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)


@pytest.mark.slow
def test_kill9_three_times_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    steps, every = 8, 2
    _reference(tmp_path / "ref", steps, every)
    run = tmp_path / "run"
    # 1: between checkpoints (last/ holds step 2); 2: inside the write of step 4's checkpoint;
    # 3: between the two renames of the next save (last/ aside as .last.old)
    plans = [(None, "step 3", 2), ("write:60", "checkpoint paused at write", 2), ("swap:60", "checkpoint paused at swap", 2)]
    for pause, line, expect in plans:
        proc = _start(run, steps, every, pause=pause)
        seen = _wait_for(proc, line)
        _kill(proc)
        assert load_training_state(resolve_checkpoint(run / "last"))["step"] == expect, seen
    # every resume started from the last complete checkpoint (step 2): its first step is 3
    proc = _start(run, steps, every)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split()[:2] == ["step", "3"] and out.strip().endswith(f"done {steps}")
    _assert_same_weights(tmp_path / "ref", run)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best", "last", "metrics.jsonl"]  # nothing half-written


@pytest.mark.slow
def test_sigterm_saves_then_resume_is_exact(tmp_path: Path) -> None:
    steps, every = 8, 4
    _reference(tmp_path / "ref", steps, every)
    run = tmp_path / "run"
    # step 2's save of best/ pauses: SIGTERM arrives during a checkpoint write, the write completes,
    # the flag is seen at the end of step 3, and last/ is saved there
    proc = _start(run, steps, every, pause="write:1")
    _wait_for(proc, "checkpoint paused at write")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: saved" in err and "--resume" in err and "Traceback" not in err
    assert out.strip().endswith("done 3") and load_training_state(run / "last")["step"] == 3
    proc = _start(run, steps, every)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.split()[:2] == ["step", "4"]
    _assert_same_weights(tmp_path / "ref", run)


@pytest.mark.slow
def test_sigint_in_process_saves_restores_handler_and_resumes_exactly(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    full = train(tiny_run_config(max_steps=6, save_every=5), data=tiny_data(), out=tmp_path / "full")

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after step 3: the loop sees it at the end of step 4

    first = train(tiny_run_config(max_steps=6, save_every=5), data=tiny_data(), out=tmp_path / "split",
                  on_step=interrupt)
    assert first.interrupted == "SIGINT" and first.stopped_early and first.step == 4
    assert signal.getsignal(signal.SIGINT) is before
    assert load_training_state(tmp_path / "split" / "last")["step"] == 4
    second = train(tiny_run_config(max_steps=6, save_every=5), data=tiny_data(), out=tmp_path / "split",
                   resume=True)
    assert first.losses + second.losses == full.losses
    _assert_same_weights(tmp_path / "full", tmp_path / "split")


def test_disk_full_during_save_is_a_clear_error_and_previous_checkpoint_loads(tmp_path: Path,
                                                                              monkeypatch) -> None:
    data = tiny_data()
    train(tiny_run_config(max_steps=2, save_every=2, eval_every=0), data=data, out=tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(TransformerXLError, match="No space left on device.*previous checkpoint .* is intact"):
        train(tiny_run_config(max_steps=4, save_every=2, eval_every=0), data=data, out=tmp_path, resume=True)
    monkeypatch.undo()
    assert load_training_state(tmp_path / "last")["step"] == 2
    load_checkpoint(tmp_path)
    assert not list(tmp_path.glob(".last.tmp-*"))  # the half-written temporary directory is gone


def test_unwritable_output_directory_is_a_clear_error(tmp_path: Path) -> None:
    # chmod does not stop root, so make the run directory's parent a regular file: no user can write there
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransformerXLError, match="cannot write the run directory .*Not a directory"):
        train(tiny_run_config(max_steps=1, eval_every=0), data=tiny_data(), out=blocker / "run")
    with pytest.raises(TransformerXLError, match="could not write checkpoint .*Not a directory"):
        ckpt.save_checkpoint(blocker / "run" / "last", model=loop.TransformerXLLM(tiny_run_config().model),
                             run_config=tiny_run_config(), training_state={"step": 1})


def test_torch_save_short_write_becomes_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    train(tiny_run_config(max_steps=1, eval_every=0), data=tiny_data(), out=tmp_path)

    def short_write(*args, **kwargs):  # what torch's zip writer raises when the disk fills
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 59648 vs 59540")

    monkeypatch.setattr(ckpt.torch, "save", short_write)
    loaded = load_checkpoint(tmp_path)
    model, run = loaded.model, loaded.run_config
    with pytest.raises(TransformerXLError, match="bytes free"):
        ckpt.save_checkpoint(tmp_path / "last", model=model, run_config=run, training_state={"step": 9})
    monkeypatch.undo()
    assert load_training_state(tmp_path / "last")["step"] == 1


# --- non-finite steps -----------------------------------------------------------------------------
class _Poisoned(loop.TransformerXLLM):
    """The model, with a NaN loss (or an inf gradient) on chosen training steps (1-based)."""

    steps: set[int] = set()
    kind = "loss"
    calls = 0

    def forward(self, x, targets=None, **kwargs):
        out = super().forward(x, targets=targets, **kwargs)
        if not self.training or targets is None:
            return out
        step = type(self).calls // type(self).grad_accum + 1
        type(self).calls += 1
        if step in type(self).steps:
            if type(self).kind == "loss":
                return dataclasses.replace(out, loss=out.loss * float("nan"))
            out.loss.register_hook(lambda grad: grad * float("inf"))  # finite loss, infinite gradient
        return out


@pytest.fixture
def poison(monkeypatch):
    def arm(steps: set[int], kind: str = "loss", grad_accum: int = 2) -> None:
        _Poisoned.steps, _Poisoned.kind, _Poisoned.calls, _Poisoned.grad_accum = steps, kind, 0, grad_accum

    monkeypatch.setattr(loop, "TransformerXLLM", _Poisoned)
    return arm


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_non_finite_step_is_skipped_and_counted(tmp_path: Path, poison, kind: str) -> None:
    poison({3}, kind)
    result = train(tiny_run_config(max_steps=6), data=tiny_data(), out=tmp_path)
    assert result.step == 6 and result.skipped_steps == 1
    assert math.isnan(result.losses[2]) == (kind == "loss")
    assert all(math.isfinite(v) for i, v in enumerate(result.losses) if i != 2)  # memory was not poisoned
    assert all(torch.isfinite(t).all() for t in _weights(tmp_path).values())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("skipped_steps") == 1 and r["step"] == 3 for r in rows)


def test_consecutive_bad_steps_stop_and_point_at_last_good_checkpoint(tmp_path: Path, poison) -> None:
    poison(set(range(3, 100)))
    config = tiny_run_config(max_steps=10, save_every=2, max_bad_steps=3)
    with pytest.raises(loop.NonFiniteLossError, match=r"3 consecutive step\(s\).*last at step 5.*"
                                                       rf"{tmp_path / 'last'} \(step 4\)"):
        train(config, data=tiny_data(), out=tmp_path)
    # step 4's save happened after a skipped step, so its weights are step 2's: good ones
    assert all(torch.isfinite(t).all() for t in _weights(tmp_path).values())
    assert load_training_state(tmp_path / "last")["step"] == 4


def test_nan_policy_stop_and_ignore(tmp_path: Path, poison) -> None:
    poison({2})
    with pytest.raises(loop.NonFiniteLossError, match="1 consecutive step.*last at step 2.*no checkpoint"):
        train(tiny_run_config(max_steps=4, nan_policy="stop", save_every=0, eval_every=0), data=tiny_data(),
              out=tmp_path / "stop")
    poison({2})
    result = train(tiny_run_config(max_steps=3, nan_policy="ignore", eval_every=0), data=tiny_data(),
                   out=tmp_path / "ignore")
    assert result.skipped_steps == 0  # the old behaviour: the NaN goes into the weights
    assert not all(torch.isfinite(t).all() for t in _weights(tmp_path / "ignore").values())
    with pytest.raises(TransformerXLError, match="train.nan_policy must be one of"):
        tiny_run_config(nan_policy="maybe")
