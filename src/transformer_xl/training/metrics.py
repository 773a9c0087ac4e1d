"""Training metrics: one JSON line per event in ``metrics.jsonl`` (rank 0), and TensorBoard when installed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import TransformerXLError
from ..runtime import DistInfo

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps up to the checkpoint a run resumes from.

    After a crash the file holds rows for steps the resumed run will do again (and perhaps a torn last
    line); without this they would appear twice. Rewritten atomically.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the crash
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


class MetricsLog:
    """JSONL always (rank 0 of a run with an output directory); TensorBoard when installed and asked for.

    ``resumed_step``: the step of the checkpoint a resumed run starts from; rows after it are dropped.
    """

    def __init__(self, out: Path | None, info: DistInfo, tensorboard: bool, *,
                 resumed_step: int | None = None) -> None:
        self.file = None
        self.writer = None
        if out is None or not info.is_main:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
            if resumed_step is not None:
                truncate_metrics(out / METRICS_FILE, resumed_step)
            self.file = open(out / METRICS_FILE, "a", encoding="utf-8")
        except OSError as exc:  # unwritable, read-only or a file in the way: before any step is lost
            raise TransformerXLError(f"cannot write the run directory {out}: {exc.strerror or exc}; "
                                     "choose a writable --out") from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
            except ImportError:
                self.writer = None
            else:
                self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps({"step": step, **values}) + "\n")
                self.file.flush()
            except OSError as exc:  # disk full: metrics are not worth the run; the next save reports it
                print(f"warning: cannot write {METRICS_FILE} ({exc.strerror or exc}); metrics logging stops",
                      file=sys.stderr, flush=True)
                self._close_file()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, step)

    def _close_file(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()
            except OSError:  # the buffered tail cannot be written either
                pass

    def close(self) -> None:
        self._close_file()
        if self.writer is not None:
            self.writer.close()
