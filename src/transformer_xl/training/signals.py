"""Preemption and Ctrl-C: a signal sets a flag that the training loop checks between steps."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag that the loop checks between steps; the loop
    then saves last/ and returns, so a resume is exact. A second signal of the same kind gets the previous
    handler (the user insists). Handlers can only be installed on the main thread; elsewhere this is a no-op.

        with StopSignals() as signals:
            ...  # signals.received is the signal number once one came
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)  # now the previous handler: KeyboardInterrupt, or the default exit
            return
        self.received = signum

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()
