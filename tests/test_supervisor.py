"""The engine supervisor with real processes and signals (no vLLM needed)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from engine_helpers import group_alive

from launcher.planner.plan import EngineCommand
from launcher.runtime.supervisor import EngineProcess


def test_stop_reaches_children_left_behind_by_a_root_that_exited(tmp_path: Path) -> None:
    """The root exits, its child stays in the group (as a vLLM worker would): stop() still
    ends the whole group."""
    e = EngineProcess(EngineCommand(["bash", "-c", "sleep 300 & echo started; exit 1"], {}),
                      tmp_path / "e.log")
    e.start()
    time.sleep(1)
    pgid = e.pid
    assert group_alive(pgid)
    assert e.stop(5) == 1
    assert not group_alive(pgid)
    assert "started" in (tmp_path / "e.log").read_text()


def _started(code: str, tmp_path: Path) -> EngineProcess:
    """A real Python child run as the engine, once it has printed "up"."""
    e = EngineProcess(EngineCommand([sys.executable, "-c", code], {}), tmp_path / "e.log")
    e.start()
    deadline = time.monotonic() + 10
    while "up" not in e.lines and time.monotonic() < deadline:
        time.sleep(0.1)
    return e


def test_stop_escalates_to_sigkill_after_the_grace_period(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', " \
           "flush=True); time.sleep(300)"
    e = _started(code, tmp_path)
    t = time.monotonic()
    assert e.stop(1.0) == -signal.SIGKILL
    assert time.monotonic() - t < 8 and not group_alive(e.pid)


def test_the_engine_gets_sigterm_and_may_shut_down_gracefully(tmp_path: Path) -> None:
    """No signal is blocked in the child (a mask is inherited across exec): the engine's own
    SIGTERM handler runs, well before the grace period ends."""
    code = "import signal, sys, time\n" \
           "signal.signal(signal.SIGTERM, lambda *_: (print('graceful', flush=True), sys.exit(0)))\n" \
           "print('up', flush=True); time.sleep(300)"
    e = _started(code, tmp_path)
    t = time.monotonic()
    assert e.stop(20) == 0
    assert time.monotonic() - t < 5 and "graceful" in e.lines


def test_secrets_are_redacted_in_the_engine_log(tmp_path: Path) -> None:
    e = EngineProcess(EngineCommand(["echo", "token=abcd-secret-1234"], {}), tmp_path / "e.log",
                      secrets=["abcd-secret-1234"])
    e.start()
    e.proc.wait(10)
    e.wait_output()
    text = (tmp_path / "e.log").read_text()
    assert "abcd-secret-1234" not in text and "token=***" in text
    assert list(e.lines) == ["token=***"]


def test_the_engine_environment_drops_what_would_override_the_plan() -> None:
    cmd = EngineCommand(["x"], {"CUDA_VISIBLE_DEVICES": "0"})
    env = cmd.environment({"VLLM_CPU_KVCACHE_SPACE": "40", "LAUNCHER_API_TOKEN": "t",
                           "HF_TOKEN": "h", "PATH": "/bin"})
    assert env == {"HF_TOKEN": "h", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"}
