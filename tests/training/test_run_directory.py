"""A run directory has one owner (issue 12.2): the lock, --overwrite, --resume that starts, linked checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import TransformerXLError
from transformer_xl.locks import DirectoryLock, lock_holder
from transformer_xl.training import train
from transformer_xl.training.checkpoint import load_training_state

WORKER = Path(__file__).with_name("fault_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def _hold_lock(directory: Path) -> subprocess.Popen:
    """Another process that takes the directory's lock and keeps it until killed."""
    code = ("import sys, time; from transformer_xl.locks import DirectoryLock; "
            "DirectoryLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_excludes_a_second_owner_and_dies_with_its_process(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path / "run")
    try:
        assert lock_holder(tmp_path / "run")["pid"] == holder.pid
        with pytest.raises(TransformerXLError, match=rf"run is in use by process {holder.pid} \(since .*\)"):
            train(tiny_run_config(max_steps=1), data=tiny_data(), out=tmp_path / "run")
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before writing anything
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the OS drops the lock
        holder.wait(timeout=30)
    result = train(tiny_run_config(max_steps=2), data=tiny_data(), out=tmp_path / "run")
    assert result.step == 2


def test_lock_within_one_process_and_release(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path, what="data directory").acquire()
    with pytest.raises(TransformerXLError, match=f"in use by process {os.getpid()} \\(since"):
        DirectoryLock(tmp_path).acquire()
    first.release()
    with DirectoryLock(tmp_path) as again:
        assert again.held
    assert not again.held


def test_second_training_process_on_one_out_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    """A real training process paused inside a checkpoint write; a second train() on its --out is refused
    without touching its files; after kill -9, --resume continues from the first process's last/."""
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", TXL_TEST_CHECKPOINT_PAUSE="write:60")
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run), "6", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.strip() == "checkpoint paused at write":
                break
        else:
            raise AssertionError(proc.stderr.read()[-2000:])
        temporary = sorted(p.name for p in run.glob(".*.tmp-*"))
        for resume in (False, True):
            with pytest.raises(TransformerXLError, match=f"in use by process {proc.pid}"):
                train(tiny_run_config(max_steps=6), data=tiny_data(), out=run, resume=resume)
        assert sorted(p.name for p in run.glob(".*.tmp-*")) == temporary  # its temporary checkpoint is intact
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    result = train(tiny_run_config(max_steps=6, device="cpu"), data=tiny_data(), out=run, resume=True)
    assert result.step == 6 and load_training_state(run / "last")["step"] == 6


@pytest.mark.parametrize("leftover", ["best", "metrics.jsonl"])
def test_fresh_run_refuses_an_earlier_runs_files(tmp_path: Path, leftover: str) -> None:
    """The issue's case: a run killed after its first best/ save holds best/ but no last/."""
    train(tiny_run_config(max_steps=2), data=tiny_data(), out=tmp_path)
    for name in ("last", "best", "metrics.jsonl"):
        if name != leftover:
            path = tmp_path / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = sorted(p.name for p in (tmp_path / leftover).iterdir()) if leftover == "best" else \
        (tmp_path / leftover).read_text()
    with pytest.raises(TransformerXLError, match=f"already holds a run \\({leftover}.*--overwrite"):
        train(tiny_run_config(max_steps=2, seed=5), data=tiny_data(), out=tmp_path)
    after = sorted(p.name for p in (tmp_path / leftover).iterdir()) if leftover == "best" else \
        (tmp_path / leftover).read_text()
    assert before == after


def test_overwrite_deletes_the_earlier_run_and_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train(tiny_run_config(max_steps=4), data=tiny_data(), out=tmp_path)
    train(tiny_run_config(max_steps=2, eval_every=0), data=tiny_data(), out=tmp_path, overwrite=True)
    assert "--overwrite: deleted the earlier run's last, best, metrics.jsonl" in capsys.readouterr().err
    assert _steps(tmp_path) == [1, 2]  # no row of the earlier run
    assert load_training_state(tmp_path / "last")["step"] == 2
    assert load_training_state(tmp_path / "best")["step"] == 2  # this run's final validation, not step 4's


def test_resume_starts_a_run_that_never_saved_then_continues(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # an attempt killed before last/
    first = train(tiny_run_config(max_steps=3, save_every=3), data=tiny_data(), out=run, resume=True)
    assert first.step == 3 and "no checkpoint in" in capsys.readouterr().err
    assert _steps(run) == [1, 2, 3] and 9.0 not in [json.loads(x).get("loss") for x in
                                                    (run / "metrics.jsonl").read_text().splitlines()]
    second = train(tiny_run_config(max_steps=6, save_every=3), data=tiny_data(), out=run, resume=True)
    assert second.step == 6 and "resuming" in capsys.readouterr().err
    # the same as one run of 6 steps
    whole = train(tiny_run_config(max_steps=6, save_every=3), data=tiny_data(), out=tmp_path / "whole")
    assert first.losses + second.losses == whole.losses


def test_linked_checkpoint_directories_keep_working(tmp_path: Path) -> None:
    run, disk = tmp_path / "run", tmp_path / "other-disk"
    run.mkdir()
    disk.mkdir()
    (run / "last").symlink_to(disk / "last", target_is_directory=True)  # dangling until the first save
    (run / "best").symlink_to(disk / "best", target_is_directory=True)
    train(tiny_run_config(max_steps=4), data=tiny_data(), out=run)  # saves twice: a link survives a swap
    train(tiny_run_config(max_steps=6), data=tiny_data(), out=run, resume=True)
    for name in ("last", "best"):
        assert (run / name).is_symlink() and (disk / name / "model.safetensors").exists()
    assert load_training_state(run / "last")["step"] == 6
    assert not list(run.glob(".*.old")) and not list(disk.glob(".*.old"))
    train(tiny_run_config(max_steps=2), data=tiny_data(), out=run, overwrite=True)
    assert (run / "last").is_symlink() and load_training_state(disk / "last")["step"] == 2


def test_slow_steps_warn_once(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from transformer_xl.training.loop import StepClock

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)

    class Info:
        is_main, enabled, world_size = True, False, 1

    class State:
        info, step = Info(), 0
        device = __import__("torch").device("cpu")
        config = tiny_run_config(max_steps=100)

    clock = StepClock(State())  # type: ignore[arg-type]
    for seconds in [1.0] + [0.1] * 10 + [0.5] * 10:
        clock.record(seconds)
    err = capsys.readouterr().err
    assert "0.1 s per step" in err and err.count("warning: training steps now take 0.5 s, 5.0x") == 1
    assert "--threads 1" in err
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # already one thread: no advice to use one
    calibrated = StepClock(State(), expected=0.01)  # type: ignore[arg-type]
    for seconds in [0.1] * 8:
        calibrated.record(seconds)
    err = capsys.readouterr().err
    assert "10.0x the 0.01 s" in err and "--threads" not in err
