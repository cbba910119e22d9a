"""`serve MODEL`: check what can fail before anything loads, start the control API, then run
the serve loop (`launcher.runtime.loop`) with SIGTERM/SIGINT recorded, not raised.

Exit statuses come from the error classes (`launcher.errors`): an `InputError` (2) before
anything starts, `DoesNotFitError.exit_code` (3) when nothing fits, an `EngineStartError` (4)
or `VerificationError` (5) when no attempt served, `signal_exit_code` (128 + signum) after a
stop signal. Whatever happens, the fit report is written; no engine process outlives the call.

The control API is passed in (`control`; the CLI passes the API package's
`start_control_api`): the runtime keeps the state, the API reads it, and nothing here imports
the API.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from launcher import policy
from launcher.errors import EngineStartError, InputError, LauncherError
from launcher.memory.calibration import Device
from launcher.paths import cache_dir
from launcher.planner import PlanRequest
from launcher.prepare import Target, resolve_devices
from launcher.redact import secret_flag_values, secrets_from_env
from launcher.render.serve import ServeConsole
from launcher.runtime.cluster import ClusterOptions, Coordinator
from launcher.runtime.loop import Session, stopped, supervise
from launcher.runtime.report import Report, ReportWriter, Verdict
from launcher.runtime.signals import Stopped, StopRequest
from launcher.runtime.state import ControlState, ServePhase


@dataclass(frozen=True)
class ServeOptions:
    report: Path | None = None
    max_attempts: int = policy.DEFAULT_MAX_ATTEMPTS
    log_dir: Path | None = None
    ready_timeout: float = policy.DEFAULT_READY_TIMEOUT
    grace: float = policy.STOP_GRACE_SECONDS
    control_host: str = policy.DEFAULT_CONTROL_HOST
    control_port: int = policy.DEFAULT_CONTROL_PORT  # 0: no control API
    fit_report: Path | None = None
    monitor_interval: float = policy.DEFAULT_MONITOR_INTERVAL
    measure_speed: bool = True  # a short load before ready, measured beside the prediction
    measure_seconds: float = 5.0
    settings: dict[str, Any] | None = None  # option → {value, source}, already redacted
    lease_dir: str | None = None  # host lease (runtime/lease.py): a directory, auto; None: off
    cluster: ClusterOptions | None = None  # --nnodes/--node-rank/…: None or one node alone


class ControlApi(Protocol):
    """A running control API."""

    def stop(self) -> None: ...


# Starts the control API serving `state` on (host, port) and returns it running.
StartControl = Callable[[ControlState, str, int], ControlApi]


def fit_report_path(opts: ServeOptions) -> Path:
    """Every run writes its fit report here (documented in docker/PLATFORM.md)."""
    if opts.fit_report:
        return opts.fit_report
    return cache_dir() / "fit-report.json"


def check_port(host: str, port: int) -> None:
    """Fail before anything loads when the engine could not bind its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OverflowError, ValueError) as e:
            raise InputError(f"port {port} is not a valid TCP port",
                             fix="Use a port between 1 and 65535.") from e
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise InputError(f"port {port} on {host} is already in use",
                                 fix="Pass a free --port, or stop the server that holds it.",
                                 hint=f"ss -ltnp 'sport = :{port}'") from e
            raise InputError(f"cannot bind {host}:{port}: {e.strerror}",
                             fix="Pass a --host address of this machine.") from e


def run_serve(model: str, req: PlanRequest, target: Target, opts: ServeOptions,
              console: Console, *, control: StartControl | None = None) -> int:
    """Serve until stopped; returns the exit status, or raises a LauncherError (its exit code).
    Without `control`, no control API is started. A node of rank > 0 follows node 0
    (`launcher.runtime.worker`) instead."""
    cluster = opts.cluster if opts.cluster is not None and opts.cluster.multi else None
    if cluster is not None and cluster.node_rank > 0:
        from launcher.runtime.worker import run_worker

        _check_options(target, opts)
        return run_worker(model, target, cluster, opts.control_port, opts.log_dir, console,
                          opts.grace)
    log_dir = opts.log_dir or cache_dir() / "logs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = Report(model=model)
    state = ControlState(secrets=secrets_from_env() + secret_flag_values(target.engine_args),
                         inventory=_live_inventory(target))
    writer = ReportWriter(report, [fit_report_path(opts)], state)
    s = Session(model=model, target=target, log_dir=log_dir, report=report, writer=writer,
                state=state, out=ServeConsole(console), stop=StopRequest(),
                max_attempts=opts.max_attempts, ready_timeout=opts.ready_timeout,
                grace=opts.grace, monitor_interval=opts.monitor_interval, settings=opts.settings,
                measure_speed=opts.measure_speed, measure_seconds=opts.measure_seconds)
    if cluster is not None:  # node 0: the other nodes join through the control API
        if control is None or not opts.control_port:
            raise InputError("--nnodes above 1 needs node 0's control API",
                             fix="Give node 0 a --control-port (the other nodes join there).")
        s.cluster = state.cluster = Coordinator(cluster, model)
    try:
        with s.stop.captured():
            return _serve(s, req, opts, control)
    except LauncherError as e:
        _record_error(s, e)
        raise
    except Exception as e:
        if os.environ.get("LAUNCHER_DEBUG") == "1":
            raise
        err = EngineStartError(f"unexpected {type(e).__name__}: {e}",
                               fix="This is a launcher bug; run with LAUNCHER_DEBUG=1 for the "
                                   "traceback and report it. The fit report has the attempts.")
        _record_error(s, err)
        raise err from e


def _serve(s: Session, req: PlanRequest, opts: ServeOptions,
           control: StartControl | None) -> int:
    _check_options(s.target, opts)
    check_port(s.target.host, s.target.port)
    _check_writable([s.log_dir, *(p.parent for p in s.writer.paths),
                     *([opts.report.parent] if opts.report else [])])
    api = None
    if control is not None and opts.control_port:
        if opts.control_port == s.target.port:
            raise InputError(f"--control-port {opts.control_port} is the engine's --port",
                             fix="Give the control API its own port, e.g. --control-port 8001.")
        check_port(opts.control_host, opts.control_port)
        api = control(s.state, opts.control_host, opts.control_port)
        s.out.control_api(f"http://{opts.control_host}:{opts.control_port}")
    try:
        if opts.lease_dir is not None:  # released below on every way out, after the engine
            from launcher.runtime.lease import open_lease

            s.lease = open_lease(opts.lease_dir, model=s.model, port=s.target.port)
        if opts.report:
            s.writer.add(opts.report)
        s.writer.add(s.log_dir / "report.json")
        try:  # the download before the engine: its ready timeout never includes it
            # (a multi-node plan's forced TP/PP need not fit this node's devices alone)
            fetch_req = req if s.cluster is None else replace(req, tp=None, pp=None)
            s.stop.run(lambda: fetch_model(s, fetch_req))
        except Stopped as e:
            return stopped(s, e)
        return finish_nodes(s, lambda: supervise(s, req))
    finally:
        if s.lease is not None:
            s.lease.release()
        if api is not None:
            api.stop()


def finish_nodes(s: Session, run: Callable[[], int]) -> int:
    """`run()`; then, on node 0 of a multi-node engine, every other node is told to stop
    with this node's exit status and why."""
    if s.cluster is None:
        return run()
    try:
        code = run()
    except LauncherError as e:
        s.cluster.finish(e.exit_code, e.message)
        raise
    except BaseException:
        s.cluster.finish(EngineStartError.exit_code, "node 0 failed")
        raise
    s.cluster.finish(code, "node 0 stopped" if code else "")
    return code


def fetch_model(s: Session, req: PlanRequest) -> None:
    """A Hub model the plan would serve, not yet in the HF cache, is downloaded now (disk
    checked first; `launcher.models.download`). A model that does not fit is not fetched:
    the loop reports that."""
    from launcher.models.download import ensure_model_files
    from launcher.models.hub import looks_like_repo_id
    from launcher.prepare import build_plan

    plan = build_plan(s.model, req, s.target)
    cmd = plan.engine if plan.feasible else None
    ref = cmd.flag("--model") if cmd else None
    # --load-format dummy: random weights, nothing to fetch; --download-dir: vLLM's own cache
    if cmd is None or not ref or not looks_like_repo_id(ref) or cmd.flag("--load-format") == "dummy":
        return
    s.state.set_phase(ServePhase.PLANNING, f"downloading {ref} before the engine starts")
    where = cmd.flag("--download-dir")
    ensure_model_files(ref, cmd.flag("--revision"), token=cmd.flag("--hf-token"),
                       cache_dir=Path(where) if where else None,
                       say=lambda text: s.out.console.print(text, highlight=False))


def _check_options(target: Target, opts: ServeOptions) -> None:
    if opts.max_attempts < 1:
        raise InputError(f"--max-attempts {opts.max_attempts} is below 1",
                         fix="Allow at least one attempt, e.g. --max-attempts 3.")
    if target.gpus:
        raise InputError("--gpus describes simulated GPUs; serve launches on real ones",
                         fix="Use --dry-run to plan for simulated GPUs, or drop --gpus.")
    if target.inventory_file and target.device != Device.CPU:
        raise InputError("--inventory-file replays a snapshot; serve launches on the GPUs NVML "
                         "sees now",
                         fix="Use the snapshot with --dry-run / `launcher plan`, or drop it.")
    if opts.monitor_interval < 0.5:
        raise InputError(f"--monitor-interval {opts.monitor_interval} is below 0.5 s",
                         fix="Sample every few seconds, e.g. --monitor-interval 5.")
    python = target.engine_python or sys.executable
    if not (shutil.which(python) or os.access(python, os.X_OK)):
        raise InputError(f"--engine-python {python}: no such executable",
                         fix="Point at the Python interpreter that has vLLM installed.")


def _check_writable(dirs: list[Path]) -> None:
    for path in dirs:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".launcher-write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise InputError(f"cannot write to {path}: {e.strerror}",
                             fix="Choose a writable --log-dir / --report / --fit-report, or "
                                 "set LAUNCHER_CACHE_DIR.") from e


def _record_error(s: Session, e: LauncherError) -> None:
    """An error ends the run: the verdict keeps what the loop found (failed to start, …)."""
    r = s.report
    if r.verdict in (Verdict.PENDING, Verdict.SERVING):
        r.verdict = Verdict.ERROR
    r.exit_code = e.exit_code
    r.error = {"message": e.message, "fix": e.fix, "exit_code": e.exit_code}
    s.state.set_phase(ServePhase.FAILED, e.message)
    with contextlib.suppress(OSError):  # an unwritable report path is the error reported
        s.writer.write()


def _live_inventory(target: Target) -> Callable[[], dict[str, Any]]:
    """What /gpus serves: the devices as they are now, read when asked."""

    def read() -> dict[str, Any]:
        device, devices, source, notes, _ = resolve_devices(
            Target(device=target.device, inventory_file=None))
        return {"device": device, "source": source, "notes": notes,
                "devices": [{"index": g.index, "name": g.name, "uuid": g.uuid,
                             "total_bytes": g.total_bytes, "used_bytes": g.used_bytes,
                             "free_bytes": g.free_bytes} for g in devices]}
    return read
