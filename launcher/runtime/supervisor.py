"""The engine as a child process: its own process group, its log, and a clean stop.

vLLM starts helpers (engine core, workers, a resource tracker) that must never outlive the
launcher. The engine gets a new session (process group = its pid), so one `killpg` reaches them
all; descendants are also tracked by pid through psutil, so one that left the group is still
found and stopped. Every line the engine prints goes to the log file as it arrives and through
the log parser, and the last few hundred stay in memory for error messages.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import psutil

from launcher.engines.vllm_log import LogParser, Phase
from launcher.planner.plan import EngineCommand
from launcher.policy import STOP_GRACE_SECONDS
from launcher.redact import redact
from launcher.runtime import shm


class EngineProcess:
    def __init__(self, command: EngineCommand, log_path: Path,
                 on_phase: Callable[[Phase, float], None] | None = None,
                 keep_lines: int = 400, secrets: list[str] | None = None,
                 nice: int = 0) -> None:
        self.secrets = list(secrets or [])
        self.nice = nice
        self.command = command
        self.log_path = log_path
        self.parser = LogParser()
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self.on_phase = on_phase
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self.phase_times: dict[str, float] = {}
        self._reader: threading.Thread | None = None
        self._known: dict[int, psutil.Process] = {}
        self._shm_seen: set[Path] = set()  # shm files this group was seen holding (shm.py)
        self._tmp: Path | None = None  # the group's own TMPDIR, removed with the group

    # ---- start -------------------------------------------------------------------------
    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        # No signal mask around the fork: a child inherits it, and an engine with SIGTERM
        # blocked can only be killed. Nothing raises between fork and the assignment, since
        # `serve`'s signal handlers only record (runtime/signals.py).
        self.proc = subprocess.Popen(
            self.command.argv, env=self._environment(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, errors="replace", start_new_session=True)
        if self.nice:
            # Set before the server forks its engine core and workers, which inherit it: on
            # a CPU engine the cores are saturated, and the launcher's control API must still
            # answer promptly. With nothing else running the engine keeps every core.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)
        self._reader = threading.Thread(target=self._read, name="engine-log", daemon=True)
        self._reader.start()

    def _environment(self) -> dict[str, str]:
        """The command's environment with a TMPDIR of the group's own: vLLM's rendezvous file
        store (`vllm_dist_*`) and its ZMQ sockets go to `tempfile.gettempdir()`, and after a
        SIGKILL they are left there. In a directory of this engine's own they can be removed
        with it without touching another engine's (shm.py). torch's compile cache stays where
        it would have been, so a restart still finds it."""
        env = self.command.environment(dict(os.environ))
        if "TMPDIR" in self.command.env:  # the user's own choice
            return env
        default = Path(tempfile.gettempdir())
        self._tmp = Path(tempfile.mkdtemp(prefix="vhr-", dir=default))
        env["TMPDIR"] = str(self._tmp)
        env.setdefault("TORCHINDUCTOR_CACHE_DIR",
                       str(default / f"torchinductor_{getpass.getuser()}"))
        return env

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = None
        try:
            log = self.log_path.open("a", encoding="utf-8")
            log.write(redact(f"# launcher: {self.command.shell()}\n", self.secrets))
        except OSError:
            log = None
        # Keep draining the pipe whatever happens below: an engine whose output is not read
        # blocks on its next log line.
        for raw in self.proc.stdout:
            line = redact(raw.rstrip("\n"), self.secrets) if self.secrets else raw.rstrip("\n")
            self.lines.append(line)
            if log is not None:
                try:
                    log.write(line + "\n")
                    log.flush()
                except OSError:
                    log = None  # disk full or gone: the in-memory tail still has the lines
            try:
                phase = self.parser.feed(line)
                if phase is not None:
                    t = time.monotonic() - self.started_at
                    self.phase_times.setdefault(phase.value, round(t, 2))
                    if self.on_phase:
                        self.on_phase(phase, t)
            except Exception:  # a parser or display bug must not stop the draining
                continue
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()

    # ---- state -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The engine and every descendant still running (remembered for the stop)."""
        if self.proc is None:
            return []
        found: list[psutil.Process] = []
        try:
            root = psutil.Process(self.proc.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
        for p in found:
            self._known.setdefault(p.pid, p)
        pids = [p.pid for p in found]
        # The group's own files, removed if it is killed. Rebound, not updated in place: the
        # monitor thread calls this while the stop may be reading the set.
        self._shm_seen = self._shm_seen | shm.held_by(pids)
        return pids

    def wait_output(self, timeout: float = 5.0) -> None:
        """Let the reader drain what the engine printed before it exited."""
        if self._reader is not None:
            self._reader.join(timeout)

    # ---- stop --------------------------------------------------------------------------
    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM the whole group, SIGKILL what is left after `grace` seconds; returns the
        engine's exit status. Safe to call twice. The group is signalled even when the root
        already exited: its engine core and workers may still hold memory."""
        if self.proc is None:
            return None
        self.pids()
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.proc.poll() is None or self._survivors()
                                               or _group_exists(pgid)):
            time.sleep(0.1)
        if self.proc.poll() is None or self._survivors() or _group_exists(pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            for p in self._survivors():
                with contextlib.suppress(psutil.Error):
                    p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        psutil.wait_procs(self._survivors(), timeout=5)
        self.wait_output()
        if not self._survivors():
            # what a killed group left, its own files only
            shm.remove_left(self._shm_seen, since=self.started_wall)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
        return self.proc.returncode

    def _survivors(self) -> list[psutil.Process]:
        """Known engine processes still running (psutil checks the start time, so a reused
        pid is not mistaken for ours)."""
        alive = []
        for p in self._known.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                continue
        return alive


def _group_exists(pgid: int) -> bool:
    """Whether any process of the group is still alive (zombies excepted)."""
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
