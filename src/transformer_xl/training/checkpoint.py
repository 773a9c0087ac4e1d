"""Checkpoint directories, written atomically, and exact resume.

A checkpoint is a directory: config.json + model.safetensors (+ vocab.json) as ``save_pretrained``
writes them, ``run.json`` (the resolved run config) and ``training_state.pt`` (optimiser, step, RNG
states and memory of every rank, stream position; with train.ema_decay the weights being trained, since the
model files hold their average), read back with ``torch.load(weights_only=True)``.

Atomicity: everything is written into a temporary sibling directory and fsynced; then the old
directory is renamed aside, the new one renamed into place and the old one removed. A crash while
writing leaves the previous checkpoint untouched; a crash between the two renames leaves it under
``.NAME.old``, which :func:`transformer_xl.runtime.resolve_checkpoint` and the next save pick up again.

Integrity: ``checksums.json`` holds the sha256 of every file; loaders verify the files they read. The
training state records a fingerprint of the training split (:func:`data_fingerprint`), so a resume on
other data than the run started on is refused unless asked for (``txl train --resume --allow-new-data``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from ..config import RunConfig, TransformerXLError
from ..model import TransformerXLLM
from ..runtime import RUN_CONFIG_FILE, old_checkpoint_path

TRAINING_STATE_FILE = "training_state.pt"
STATE_FORMAT = 1

# Test hook: "PHASE:SECONDS" pauses a save at PHASE ("write": files half written in the temporary
# directory; "swap": old checkpoint renamed aside, new one not yet in place), announcing it on stdout,
# so a test can kill the process exactly there.
_PAUSE_ENV = "TXL_TEST_CHECKPOINT_PAUSE"


def _pause(phase: str) -> None:
    spec = os.environ.get(_PAUSE_ENV, "")
    if spec.partition(":")[0] == phase:
        print(f"checkpoint paused at {phase}", flush=True)
        time.sleep(float(spec.partition(":")[2] or 60))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, *, model: TransformerXLLM, run_config: RunConfig,
                    training_state: dict[str, Any], vocab: Any = None) -> Path:
    """Write a complete checkpoint to ``directory``, replacing any previous one atomically. An OSError
    (disk full, unwritable directory) becomes a TransformerXLError; the previous checkpoint stays."""
    directory = Path(directory)
    try:
        return _save_checkpoint(directory, model=model, run_config=run_config, training_state=training_state,
                                vocab=vocab)
    except (OSError, SafetensorError) as exc:  # disk full, read-only or unwritable directory: the user's to fix
        previous = directory if directory.exists() else old_checkpoint_path(directory)
        kept = (f"the previous checkpoint in {previous} is intact" if previous.exists()
                else "no earlier checkpoint exists")
        raise TransformerXLError(f"could not write checkpoint {directory}: {getattr(exc, 'strerror', None) or exc} "
                                 f"({type(exc).__name__}); {kept}; free space or fix permissions, "
                                 "then resume with --resume") from None


def _save_checkpoint(directory: Path, *, model: TransformerXLLM, run_config: RunConfig,
                     training_state: dict[str, Any], vocab: Any) -> Path:
    from ..pretrained import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, save_pretrained, write_checksums

    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not directory.exists() and old_checkpoint_path(directory).exists():
        os.replace(old_checkpoint_path(directory), directory)  # finish recovering from a crash between the renames
    for stale in parent.glob(f".{directory.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a save that was killed while writing
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=parent))
    try:
        save_pretrained(model, tmp, vocab=vocab)
        (tmp / RUN_CONFIG_FILE).write_text(json.dumps(run_config.to_dict(), indent=2) + "\n", encoding="utf-8")
        try:
            torch.save({"format": STATE_FORMAT, **training_state}, tmp / TRAINING_STATE_FILE)
        except RuntimeError as exc:  # torch's zip writer reports a short write (disk full) this way
            free = shutil.disk_usage(parent).free
            raise OSError(f"writing {TRAINING_STATE_FILE} failed with {free:,} bytes free: {exc}") from exc
        write_checksums(tmp, [CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, RUN_CONFIG_FILE, TRAINING_STATE_FILE])
        _pause("write")
        for path in tmp.iterdir():
            _fsync_path(path)
        _fsync_path(tmp)
        old = old_checkpoint_path(directory)
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        _pause("swap")
        os.replace(tmp, directory)
        _fsync_path(parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state (on the CPU), read with ``torch.load(weights_only=True)``, after checking it and
    run.json against the checkpoint's checksums."""
    from ..pretrained import safe_torch_load, verify_checksums

    path = Path(directory) / TRAINING_STATE_FILE
    if not os.path.lexists(path):
        raise TransformerXLError(f"{directory} has no {TRAINING_STATE_FILE}: it is a model, not a resumable "
                                 "training checkpoint")
    verify_checksums(directory, [RUN_CONFIG_FILE, TRAINING_STATE_FILE])
    state = safe_torch_load(path, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TransformerXLError(f"{path} is not a training state this version can read")
    if not isinstance(state.get("step"), int) or isinstance(state.get("step"), bool):
        raise TransformerXLError(f"{path} is damaged: its 'step' entry is missing or not an integer; resume from "
                                 "another checkpoint (best/) or start a new run")
    return state


def data_fingerprint(tokens: Any) -> str:
    """A short fingerprint of a training split: its dtype, its length and the sha256 of its bytes (of 256
    evenly spaced windows of 4096 tokens for a split over a million tokens, so that it costs a few
    milliseconds even for lm1b). Equal data gives equal fingerprints; other data, in practice, never."""
    array = np.asarray(tokens).reshape(-1)
    sha = hashlib.sha256(f"{array.dtype.str}:{len(array)}".encode())
    window, windows = 4096, 256
    if len(array) <= window * windows:
        sha.update(np.ascontiguousarray(array).tobytes())
    else:
        for start in np.linspace(0, len(array) - window, windows).astype(np.int64):
            sha.update(np.ascontiguousarray(array[start:start + window]).tobytes())
    return sha.hexdigest()[:32]


def check_same_data(saved_state: dict[str, Any], tokens: Any, *, checkpoint: Path, allow_new_data: bool) -> None:
    """Refuse a resume whose training split is not the one the run started on (recorded as ``data``)."""
    recorded = saved_state.get("data")
    if recorded is None or allow_new_data:
        return  # older checkpoints carry no fingerprint
    if recorded != data_fingerprint(tokens):
        raise TransformerXLError(
            f"cannot resume from {checkpoint}: the training split differs from the one this run started on "
            f"(fingerprint {data_fingerprint(tokens)[:12]} vs {str(recorded)[:12]}); pass the run's --data, or "
            "add --allow-new-data to continue on this data on purpose")


# RNG state as tensors and plain values only, so that weights_only loading accepts it -------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss), "kind": str(np_kind)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


