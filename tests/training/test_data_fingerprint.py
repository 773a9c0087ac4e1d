"""A run resumes only on the training data it started on, unless asked (issue 12); checkpoints carry
checksums that a resume verifies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.tiny import tiny_data, tiny_run_config
from transformer_xl.config import TransformerXLError
from transformer_xl.training import train
from transformer_xl.training.checkpoint import data_fingerprint, load_training_state


def test_fingerprint_tells_data_apart_cheaply() -> None:
    a = np.arange(3_000_000, dtype=np.uint32) % 1000
    assert data_fingerprint(a) == data_fingerprint(a.copy())  # deterministic
    assert data_fingerprint(a) != data_fingerprint(np.roll(a, 1))  # other tokens (a shifted corpus)
    assert data_fingerprint(a[:-1]) != data_fingerprint(a)  # the length counts
    assert data_fingerprint(a.astype(np.uint16)) != data_fingerprint(a)  # the dtype counts
    small = np.arange(100, dtype=np.uint8)
    changed = small.copy()
    changed[50] = 0
    assert data_fingerprint(small) != data_fingerprint(changed)  # small splits are hashed whole


def test_resume_on_other_training_data_is_refused_unless_allowed(tmp_path: Path) -> None:
    data = tiny_data()
    train(tiny_run_config(max_steps=2), data=data, out=tmp_path)
    assert load_training_state(tmp_path / "last")["data"] == data_fingerprint(data["train"])
    other = dict(data, train=np.roll(data["train"], 1))
    with pytest.raises(TransformerXLError, match="training split differs .*--allow-new-data"):
        train(tiny_run_config(max_steps=4), data=other, out=tmp_path, resume=True)
    result = train(tiny_run_config(max_steps=4), data=other, out=tmp_path, resume=True, allow_new_data=True)
    assert result.step == 4
    # the same data as the start resumes without a word
    train(tiny_run_config(max_steps=5), data=other, out=tmp_path, resume=True)


def test_a_damaged_training_state_is_refused_by_its_checksum(tmp_path: Path) -> None:
    train(tiny_run_config(max_steps=2), data=tiny_data(), out=tmp_path)
    path = tmp_path / "last" / "training_state.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(TransformerXLError, match="training_state.pt does not match the sha256 recorded"):
        train(tiny_run_config(max_steps=4), data=tiny_data(), out=tmp_path, resume=True)
