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


def test_a_killed_group_takes_its_own_tmpdir_and_nothing_else(tmp_path: Path) -> None:
    """vLLM's rendezvous store and ZMQ sockets go to the engine's TMPDIR: a directory of the
    group's own, removed with it after a SIGKILL; a file another engine left in the shared
    temp dir stays."""
    import tempfile

    neighbour = Path(tempfile.gettempdir()) / f"vllm_dist_neighbour_{tmp_path.name}"
    neighbour.write_text("another engine's store")
    code = ("import os, pathlib, time; d = pathlib.Path(os.environ['TMPDIR']); "
            "(d / 'vllm_dist_0123').write_text('x'); print(d, flush=True); time.sleep(300)")
    e = EngineProcess(EngineCommand([sys.executable, "-c", code], {}), tmp_path / "e.log")
    e.start()
    deadline = time.monotonic() + 20
    while not e.lines and time.monotonic() < deadline:
        time.sleep(0.05)
    own = Path(e.lines[0])
    assert (own / "vllm_dist_0123").exists() and own.parent == Path(tempfile.gettempdir())
    assert own.name.startswith("vhr-")
    e.stop(grace=0.5)
    assert not own.exists()
    assert neighbour.exists()
    neighbour.unlink()


def test_a_semaphore_nobody_maps_since_the_start_is_removed(tmp_path: Path) -> None:
    from launcher.runtime import shm

    old = tmp_path / "sem.mp-old"
    old.write_bytes(b"\0" * 32)
    since = time.time() + 1
    dead = tmp_path / "sem.mp-dead"
    dead.write_bytes(b"\0" * 32)
    import os

    os.utime(dead, (since + 1, since + 1))
    removed = shm.remove_left(set(), [tmp_path], since=since)
    assert removed == [dead] and old.exists()
