"""SIGTERM/SIGINT for `serve`: the handlers only record; the serve loop decides.

A handler that raised from inside whatever code happened to run (a Popen, a report write, the
middle of a stop) could leave a child nobody stops or a half-written file. Instead, as
uvicorn's `capture_signals`/`handle_exit` do, the handler stores the signal number and
returns. The serve loop looks at the record between its steps and, while a step blocks
(waiting for /health, warm-up requests, serving), every tenth of a second: the blocking call
runs on a worker thread (`StopRequest.run`) and the loop raises `Stopped` at that point, stops
the engine group, writes the report and exits with `128 + signum` as Docker and systemd
expect.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_SECONDS = 0.1


def signal_exit_code(signum: int) -> int:
    """The exit status of a process stopped by `signum` (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + signum


class Stopped(Exception):
    """Raised by the serve loop itself (never by a handler) where it finds a recorded stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return signal_exit_code(self.signum)


class StopRequest:
    """The record the signal handlers write and the serve loop reads."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received

    def record(self, signum: int, _frame: FrameType | None = None) -> None:
        """The signal handler: remember, nothing else (no locks, no I/O, no raise)."""
        if self.signum is None:
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise `Stopped` here when a stop was recorded."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def run(self, step: Callable[[], T]) -> T:
        """Run a blocking step on a worker thread and return its result (or raise its error);
        raise `Stopped` as soon as a stop is recorded. The step then finishes on its own once
        the engine is stopped (its requests fail, its `alive()` turns False); the loop does not
        wait for it, and nothing the step would return is used."""
        result: list[T] = []
        error: list[BaseException] = []
        done = threading.Event()

        def work() -> None:
            try:
                result.append(step())
            except BaseException as e:  # handed to the loop's thread below
                error.append(e)
            finally:
                done.set()

        threading.Thread(target=work, name="serve-step", daemon=True).start()
        while not done.wait(POLL_SECONDS):
            self.check()
        if error:
            raise error[0]
        return result[0]

    @contextlib.contextmanager
    def captured(self) -> Iterator[StopRequest]:
        """Record SIGTERM/SIGINT while the block runs; the previous handlers come back after."""
        old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, self.record)
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
