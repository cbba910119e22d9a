"""The serve loop's units, without vLLM: real processes replay recorded vLLM 0.19 logs as the
"engine", real signals are sent to this process, real files and a real control API are read.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CALIBRATION
from engine_helpers import free_port, group_alive
from rich.console import Console

from launcher.engines.calibration import calibration_for
from launcher.engines.vllm_log import FailureKind, Phase
from launcher.errors import DoesNotFitError, EngineStartError
from launcher.hardware.inventory import HostInfo
from launcher.hardware.nvml import RawSystem, build_inventory
from launcher.memory.calibration import Device
from launcher.models.resolve import resolve_model
from launcher.planner import PlanRequest, plan
from launcher.planner.plan import EngineCommand, Plan
from launcher.prepare import Target
from launcher.render.serve import ServeConsole
from launcher.runtime.backoff import next_step
from launcher.runtime.loop import (
    Launch,
    Session,
    choose_step,
    failure_of,
    launch_engine,
    stopped,
    supervise,
    try_attempt,
    wait_ready,
)
from launcher.runtime.report import Outcome, Report, ReportWriter, Verdict
from launcher.runtime.serve import ServeOptions, run_serve
from launcher.runtime.signals import Stopped, StopRequest, signal_exit_code
from launcher.runtime.state import ControlState, ServePhase
from launcher.units import GiB

LOGS = CALIBRATION / "vllm-0.19-h100" / "logs"
GRAPH_OOM = LOGS / "openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192.FAILED.log"
STARTS_FINE = LOGS / "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log"
NVML = Path(__file__).parent / "data" / "nvml"


def replay(log: Path, *, hang: bool) -> list[str]:
    """An engine stand-in: a real process printing a recorded vLLM log, then exiting with
    status 1 (as vLLM does after a failed start) or staying up without serving."""
    then = "time.sleep(120)" if hang else "sys.exit(1)"
    return [sys.executable, "-c", f"import sys, time; sys.stdout.write(open({str(log)!r}).read()); "
            f"sys.stdout.flush(); {then}"]


def session(tmp: Path, *, max_attempts: int = 3, port: int | None = None) -> Session:
    state = ControlState()
    report = Report(model="recorded")
    return Session(model="recorded", target=Target(device="cpu", port=port or free_port()),
                   log_dir=tmp / "logs", report=report,
                   writer=ReportWriter(report, [tmp / "report.json"], state), state=state,
                   out=ServeConsole(Console(file=io.StringIO(), width=200)), stop=StopRequest(),
                   max_attempts=max_attempts, ready_timeout=60, grace=5)


def printed(s: Session) -> str:
    file = s.out.console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def launch(argv: list[str], max_model_len: int = 8192) -> Launch:
    return Launch(EngineCommand(tuple(argv)), Device.CUDA, max_model_len, 256, 32000, (), {})


@pytest.fixture(scope="module")
def gpt_oss_on_h100() -> Plan:
    raw = RawSystem.from_dict(json.loads((NVML / "h100x2-raw.json").read_text()))
    inv = build_inventory(raw, {"CUDA_VISIBLE_DEVICES": "1"},
                          host=HostInfo(2 * 1024**4, 1900 * 1024**3, 192), captured_at=None)
    return plan(resolve_model("gpt-oss-20b"), list(inv.gpus), calibration_for("0.19"),
                PlanRequest())


@pytest.fixture
def ignore_sigterm() -> Iterator[None]:
    """A SIGTERM arriving after the code under test restored its handlers must not end pytest."""
    old = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _gone(pgid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not group_alive(pgid)


# ---- signals ------------------------------------------------------------------------------

def test_exit_status_after_a_stop_signal_is_128_plus_its_number() -> None:
    assert signal_exit_code(signal.SIGTERM) == 143 and signal_exit_code(signal.SIGINT) == 130
    assert Stopped(signal.SIGTERM).exit_code == 143


def test_a_step_returns_its_result_or_raises_its_error_or_the_stop() -> None:
    stop = StopRequest()
    assert stop.run(lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        stop.run(lambda: 1 / 0)
    threading.Timer(0.3, stop.record, (signal.SIGINT,)).start()
    t = time.monotonic()
    with pytest.raises(Stopped) as e:
        stop.run(lambda: time.sleep(30))
    assert e.value.signum == signal.SIGINT and time.monotonic() - t < 2


@pytest.mark.usefixtures("ignore_sigterm")
def test_handlers_only_record_and_are_restored() -> None:
    stop = StopRequest()
    before = signal.getsignal(signal.SIGTERM)
    with stop.captured():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # the first one is what the loop acts on
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
    assert stop.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


# ---- failed starts ------------------------------------------------------------------------

def test_recorded_graph_capture_oom_steps_down_to_eager(tmp_path: Path,
                                                        gpt_oss_on_h100: Plan) -> None:
    """A real process replays vLLM's own failed start (gpt-oss-20b, CUDA graph capture out
    of memory): the loop sees it die while waiting for /health, classifies its lines, records
    the attempt, and the next rung is --enforce-eager."""
    s = session(tmp_path)
    run = launch(replay(GRAPH_OOM, hang=False))
    attempt = launch_engine(s, 1, run, {"recorded": True})
    result = try_attempt(s, 1, attempt, run, gpt_oss_on_h100)
    assert not result.ok and result.failure is not None
    assert result.failure.kind == FailureKind.OOM_GRAPH_CAPTURE and result.failure.retryable
    assert isinstance(result.error, EngineStartError) and "oom_graph_capture" in result.error.message
    assert attempt.outcome == Outcome.START_FAILED and attempt.failure is not None
    assert attempt.failure["exit_status"] == 1 and attempt.failure["last_lines"]
    assert attempt.phases[Phase.GRAPHS.value] >= attempt.phases[Phase.LOADING.value]
    step = choose_step(s, 1, PlanRequest(), gpt_oss_on_h100, result)
    assert step is not None and step.request.enforce_eager
    assert s.state.phase == ServePhase.STEPPING_DOWN
    written = json.loads((tmp_path / "report.json").read_text())
    [a] = written["attempts"]
    assert a["outcome"] == "start_failed" and a["failure"]["kind"] == "oom_graph_capture"
    assert "--enforce-eager" in a["next_step"] and a["plan"] == {"recorded": True}
    assert "CUDA graph" in Path(a["log_file"]).read_text()
    out = printed(s)
    assert "attempt 1 failed: oom_graph_capture" in out and "stepping down:" in out
    assert not group_alive(attempt.engine_pid or 0)


def test_last_attempt_records_the_step_it_did_not_take(tmp_path: Path,
                                                       gpt_oss_on_h100: Plan) -> None:
    s = session(tmp_path, max_attempts=1)
    run = launch(replay(GRAPH_OOM, hang=False))
    attempt = launch_engine(s, 1, run, {})
    result = try_attempt(s, 1, attempt, run, gpt_oss_on_h100)
    assert choose_step(s, 1, PlanRequest(), gpt_oss_on_h100, result) is None
    assert attempt.next_step is not None
    assert attempt.next_step.startswith("not taken (--max-attempts 1): ")


def test_ready_timeout_is_not_a_memory_failure(gpt_oss_on_h100: Plan) -> None:
    """The launcher ended the engine for taking too long: no smaller plan is tried, whatever
    the log said so far."""
    lines = GRAPH_OOM.read_text().splitlines()
    failure = failure_of(TimeoutError("/health did not answer within 5 s"), lines, -15,
                         Phase.GRAPHS, 5.0)
    assert failure.kind == FailureKind.READY_TIMEOUT and not failure.retryable
    assert failure.details == {"timeout_seconds": 5.0}
    assert next_step(PlanRequest(), gpt_oss_on_h100, failure, None) is None


# ---- stops --------------------------------------------------------------------------------

@pytest.mark.usefixtures("ignore_sigterm")
def test_stop_recorded_while_waiting_for_ready(tmp_path: Path) -> None:
    """SIGTERM while the engine loads: the wait ends at once, the engine group is stopped,
    the attempt and the report say stopped, exit 143."""
    s = session(tmp_path)
    run = launch(replay(STARTS_FINE, hang=True))
    with s.stop.captured():
        attempt = launch_engine(s, 1, run, {})
        pgid, engine = attempt.engine_pid, s.engine
        assert pgid is not None and engine is not None
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t = time.monotonic()
        with pytest.raises(Stopped) as e:
            wait_ready(s, engine)
        assert time.monotonic() - t < 3
        assert stopped(s, e.value) == 143
    assert _gone(pgid)
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["verdict"] == "stopped" and rep["exit_code"] == 143
    assert rep["stopped_by"] == "SIGTERM" and rep["attempts"][0]["outcome"] == "stopped"
    assert s.state.phase == ServePhase.STOPPED and "SIGTERM: stopping the engine" in printed(s)


def test_stop_recorded_before_the_first_attempt(tmp_path: Path) -> None:
    s = session(tmp_path)
    s.stop.record(signal.SIGINT)
    assert supervise(s, PlanRequest()) == 130
    assert s.engine is None and s.report.attempts == []
    rep = json.loads((tmp_path / "report.json").read_text())
    assert (rep["verdict"], rep["exit_code"], rep["stopped_by"]) == ("stopped", 130, "SIGINT")


# ---- run_serve: the whole loop with a stand-in engine --------------------------------------

def _host_snapshot(tmp: Path, total: int = 64 * GiB) -> Path:
    path = tmp / "host.json"
    path.write_text(json.dumps({
        "format": "launcher-inventory/1", "source": "recorded", "driver_version": None,
        "cuda_driver_version": None, "captured_at": None, "assumptions": [], "gpus": [],
        "host": {"total_ram_bytes": total, "available_ram_bytes": total, "cpu_count": 8}}))
    return path


def _engine_script(tmp: Path, log: Path, *, hang: bool) -> Path:
    """What `--engine-python` runs: it ignores vLLM's arguments and replays `log`."""
    script = tmp / "engine"
    script.write_text(f"#!/bin/sh\ncat {log}\n" + ("exec sleep 120\n" if hang else "exit 1\n"))
    script.chmod(0o755)
    return script


def _serve(tmp: Path, *, hang: bool, max_attempts: int = 2,
           control_port: int = 0) -> tuple[Target, ServeOptions, Console]:
    # --load-format dummy: the recorded engine loads nothing, so there is nothing to download.
    target = Target(device="cpu", inventory_file=str(_host_snapshot(tmp)), port=free_port(),
                    engine_args=("--load-format", "dummy"),
                    engine_python=str(_engine_script(tmp, GRAPH_OOM if not hang else STARTS_FINE,
                                                     hang=hang)))
    opts = ServeOptions(report=tmp / "report.json", log_dir=tmp / "logs",
                        fit_report=tmp / "fit.json", max_attempts=max_attempts, grace=5,
                        control_port=control_port)
    return target, opts, Console(file=io.StringIO(), width=200)


def test_serve_steps_down_then_gives_up_with_exit_4(tmp_path: Path) -> None:
    target, opts, console = _serve(tmp_path, hang=False)
    with pytest.raises(EngineStartError) as e:
        run_serve("llama-3.1-8b", PlanRequest(max_model_len=4096), target, opts, console)
    assert e.value.exit_code == EngineStartError.exit_code
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep == json.loads((tmp_path / "fit.json").read_text())
    assert rep["verdict"] == Verdict.FAILED_TO_START and rep["exit_code"] == 4
    first, second = rep["attempts"]
    assert first["failure"]["kind"] == "oom_graph_capture" and "--enforce-eager" in first["next_step"]
    assert "--enforce-eager" not in first["command"]["argv"]
    assert "--enforce-eager" in second["command"]["argv"]
    assert second["next_step"].startswith("not taken (--max-attempts 2)")
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "attempt 2: " in out and "stepping down: out of memory while capturing" in out
    for a in rep["attempts"]:
        assert not group_alive(a["engine_pid"])


def test_serve_that_does_not_fit_exits_3(tmp_path: Path) -> None:
    target, opts, console = _serve(tmp_path, hang=False)
    code = run_serve("llama-3.1-405b", PlanRequest(), target, opts, console)
    assert code == DoesNotFitError.exit_code
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["verdict"] == "does_not_fit" and rep["attempts"] == [] and not rep["plan"]["feasible"]
    assert "does not fit" in console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.usefixtures("ignore_sigterm")
def test_sigterm_during_serve_with_the_control_api(tmp_path: Path) -> None:
    """The control API comes in from outside (`control=`): it answers /readyz 503 while the
    engine loads; SIGTERM ends the run with 143 and takes the API down with it."""
    from launcher.api.app import start_control_api

    cport = free_port()
    target, opts, console = _serve(tmp_path, hang=True, control_port=cport)
    seen: dict[str, object] = {}
    done = threading.Event()

    def operator() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done.is_set():
            try:
                r = httpx.get(f"http://127.0.0.1:{cport}/readyz", timeout=2)
                if r.json()["phase"] in ("starting", "loading"):
                    seen.update(status=r.status_code, phase=r.json()["phase"])
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=operator)
    t.start()
    try:
        code = run_serve("llama-3.1-8b", PlanRequest(max_model_len=4096), target, opts, console,
                         control=start_control_api)
    finally:
        done.set()
        t.join(10)
    assert code == 143 and seen["status"] == 503
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["verdict"] == "stopped" and rep["attempts"][-1]["outcome"] == "stopped"
    assert _gone(rep["attempts"][-1]["engine_pid"])
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{cport}/livez", timeout=2)
