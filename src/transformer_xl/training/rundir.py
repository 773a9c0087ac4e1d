"""The run directory: one run per directory, what a fresh run refuses to write over, what --resume continues.

:func:`claim_run_directory` decides, before anything is built, whether this run continues the checkpoint in
``out/last`` (checked against this run's model, batch, vocabulary, training data and process count), starts
in an empty directory, starts over an attempt that died before its first save, or deletes an earlier run
(``--overwrite``). The lock that makes this process the directory's only user is taken by ``train()``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..config import RunConfig, TransformerXLError
from ..pretrained import load_vocabulary
from ..runtime import DistInfo, load_run_config, old_checkpoint_path, resolve_checkpoint
from . import distributed as D
from .checkpoint import check_same_data, load_training_state
from .data import TrainData
from .distributed import say
from .metrics import METRICS_FILE

__all__ = ["RUN_FILES", "claim_run_directory", "earlier_run_files", "find_resume_checkpoint", "remove_run_files"]


def _check_compatible(saved: RunConfig, config: RunConfig) -> None:
    """Refuse a resume whose model or data layout differs from the checkpoint's."""
    saved_model, model = saved.model.to_dict(), config.model.to_dict()
    diffs = [f"model.{k} was {saved_model[k]!r}, now {model[k]!r}" for k in saved_model if saved_model[k] != model[k]]
    for key in ("batch_size",):  # the streams' layout; the stream state itself checks its kind and seed
        a, b = getattr(saved.train, key), getattr(config.train, key)
        if a != b:
            diffs.append(f"train.{key} was {a!r}, now {b!r}")
    if diffs:
        raise TransformerXLError("cannot resume with an incompatible config: " + "; ".join(diffs)
                                 + " (a resumed run keeps the model and train.batch_size it started with; "
                                 "to change them, train into a new --out)")


def find_resume_checkpoint(config: RunConfig, data: TrainData, out: Path | None, info: DistInfo, *,
                           allow_new_data: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """(checkpoint directory, training state) of the run in ``out`` to continue, checked against this run;
    None when ``out`` holds no last/ yet (the run is to start: an earlier attempt died before its first save)."""
    if out is None:
        raise TransformerXLError("resume needs the run directory (--out) holding last/")
    last = out / "last"
    if last.is_symlink():  # a checkpoint directory on another disk: its .old sibling is there too
        last = last.resolve()
    if not (last.exists() or old_checkpoint_path(last).exists()):
        return None
    checkpoint = resolve_checkpoint(last)
    saved = load_run_config(checkpoint)
    if saved is None:
        raise TransformerXLError(f"{checkpoint} has no run.json: it is not a training checkpoint")
    _check_compatible(saved, config)
    saved_vocab = load_vocabulary(checkpoint)
    if saved_vocab is not None and data.vocab is not None and saved_vocab != data.vocab:
        raise TransformerXLError(f"cannot resume: {checkpoint} was trained with another vocabulary than "
                                 "the data's (prepare the data with the same vocabulary)")
    state = load_training_state(checkpoint)
    check_same_data(state, data.train, checkpoint=checkpoint, allow_new_data=allow_new_data)
    if state["world_size"] != info.world_size:
        raise TransformerXLError(f"cannot resume on {info.world_size} process(es): the checkpoint was "
                                 f"written by {state['world_size']} (memory and streams are per process)")
    return checkpoint, state


# What a run directory holds of an earlier run: a fresh run refuses to write over it (unless --overwrite).
RUN_FILES = ("last", "best", ".last.old", ".best.old", METRICS_FILE, "tensorboard")


def earlier_run_files(out: Path) -> list[Path]:
    """The files and checkpoints of an earlier run in ``out``. An empty directory, or a link to nothing or to
    an empty directory (a checkpoint place set up on another disk before the first run), holds no run."""
    def holds_something(path: Path) -> bool:
        if path.is_dir():
            return any(path.iterdir())
        return path.exists()

    return [out / name for name in RUN_FILES if holds_something(out / name)]


def remove_run_files(out: Path, paths: list[Path]) -> None:
    """Delete an earlier run's files for --overwrite. A checkpoint directory that is a symbolic link keeps its
    link: what it points to is deleted, and the next save writes there again."""
    for path in paths:
        if path.is_symlink():
            target = path.resolve()
            if target.is_dir():
                shutil.rmtree(target)
            else:
                path.unlink()  # a link to a file (metrics.jsonl) or to nothing
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    for stale in out.glob(".*.tmp-*"):  # a save killed while writing
        shutil.rmtree(stale, ignore_errors=True)


def claim_run_directory(config: RunConfig, data: TrainData, out: Path | None, *, resume: bool, overwrite: bool,
                        info: DistInfo, allow_new_data: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """Decide what this run does with ``out``: continue its checkpoint (``resume`` and a last/ exists), start
    fresh in an empty directory, start again over an attempt that never saved last/ (``resume``), or delete an
    earlier run (``overwrite``). Refuses to start a fresh run over an earlier one's files. Says which on rank 0.
    Returns the checkpoint and training state to restore, or None to start at step 0."""
    if out is None:
        if resume:
            raise TransformerXLError("resume needs the run directory (--out) holding last/")
        return None
    if resume:
        found = find_resume_checkpoint(config, data, out, info, allow_new_data=allow_new_data)
        if found is not None:
            say(info, f"resuming {out} from {found[0]} at step {int(found[1]['step'])}")
            return found
        say(info, f"--resume: no checkpoint in {out / 'last'} yet, so this starts the run from step 0")
        return None
    earlier = earlier_run_files(out)
    if earlier and not overwrite:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in earlier)
        raise TransformerXLError(f"{out} already holds a run ({names}); pass --resume to continue it, --overwrite "
                                 "to delete it and start again, or choose another --out")
    if earlier:
        D.barrier(info)  # every rank has looked before rank 0 deletes
        if info.is_main:
            remove_run_files(out, earlier)
            say(info, f"--overwrite: deleted the earlier run's {', '.join(p.name for p in earlier)} in {out}")
        D.barrier(info)
    return None
