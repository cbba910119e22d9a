"""`serve MODEL`: plan → launch → warm up → verify → serve, stepping down when it must.

Each attempt is recorded in the report before the next starts. The engine runs in its own
process group and is stopped on every way out (success ending, failure, SIGTERM/SIGINT), so
no engine process outlives the launcher.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console

from launcher.engines.vllm import EngineCommand
from launcher.engines.vllm_log import Failure, Phase, classify_failure, important_lines
from launcher.errors import EngineStartError, InputError, LauncherError, VerificationError
from launcher.paths import cache_dir
from launcher.planner import PlanRequest
from launcher.prepare import Target, build_plan
from launcher.redact import redact_obj, secret_flag_values, secrets_from_env
from launcher.runtime.backoff import next_step
from launcher.runtime.monitor import HeadroomMonitor, sampler
from launcher.runtime.report import Attempt, Report
from launcher.runtime.state import ControlState
from launcher.runtime.supervisor import EngineProcess
from launcher.runtime.verify import verify
from launcher.runtime.warmup import (
    EngineGone,
    cache_config_info,
    metrics_text,
    served_models,
    wait_healthy,
    warm_up,
)
from launcher.units import GiB

# Niceness of a CPU engine (whose compute saturates every core) relative to the launcher.
CPU_ENGINE_NICE = 5


@dataclass(frozen=True)
class ServeOptions:
    report: Path | None = None
    max_attempts: int = 3
    log_dir: Path | None = None
    ready_timeout: float = 1200.0
    grace: float = 20.0
    control_host: str = "127.0.0.1"
    control_port: int = 8001  # 0: no control API
    fit_report: Path | None = None
    monitor_interval: float = 5.0
    settings: dict | None = None  # option → {value, source}, already redacted


def fit_report_path(opts: ServeOptions) -> Path:
    """Every run writes its fit report here (documented in docker/PLATFORM.md)."""
    if opts.fit_report:
        return opts.fit_report
    return cache_dir() / "fit-report.json"


class Stopped(Exception):
    """SIGTERM/SIGINT arrived: stop the engine and exit with the conventional status."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


class _Progress:
    """Engine start-up progress from the engine's own log lines: a live status line for
    people, one plain line per phase when stdout is not a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.status = None

    def begin(self, attempt: int, pid: int | None) -> None:
        msg = f"attempt {attempt}: engine starting (pid {pid})"
        if self.live:
            self.status = self.console.status(msg)
            self.status.start()
        else:
            self.console.print(msg, highlight=False)

    def phase(self, phase: Phase, t: float) -> None:
        msg = f"engine: {phase.value} ({t:.1f} s)"
        status = self.status  # the main thread may end the display meanwhile
        if self.live and status is not None:
            status.update(msg)
            self.console.print(f"  {msg}", highlight=False)
        else:
            self.console.print(msg, highlight=False)

    def end(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _log_dir(opts: ServeOptions) -> Path:
    if opts.log_dir:
        return opts.log_dir
    return cache_dir() / "logs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def run_serve(model: str, req: PlanRequest, target: Target, opts: ServeOptions,
              console: Console) -> int:
    """Serve until stopped; returns the exit status, or raises a LauncherError (its exit code).
    Whatever happens, the fit report is written."""
    report = Report(model=model)
    paths = [fit_report_path(opts)]
    state = ControlState(secrets=secrets_from_env() + secret_flag_values(target.engine_args),
                         inventory=_live_inventory(target))
    writer = _Writer(report, paths, state)
    try:
        return _run(model, req, target, opts, console, report, writer, state)
    except LauncherError as e:
        _record_error(report, writer, state, e)
        raise
    except Exception as e:
        if os.environ.get("LAUNCHER_DEBUG") == "1":
            raise
        err = EngineStartError(f"unexpected {type(e).__name__}: {e}",
                               fix="This is a launcher bug; run with LAUNCHER_DEBUG=1 for the "
                                   "traceback and report it. The fit report has the attempts.")
        _record_error(report, writer, state, err)
        raise err from e


def _record_error(report: Report, writer: _Writer, state: ControlState,
                  e: LauncherError) -> None:
    report.verdict = report.verdict if report.verdict not in ("pending", "serving") else "error"
    report.exit_code = e.exit_code
    report.error = {"message": e.message, "fix": e.fix, "exit_code": e.exit_code}
    state.set_phase("failed", e.message)
    with contextlib.suppress(OSError):  # an unwritable report path is the error reported
        writer.write()


class _Writer:
    """Writes the report (redacted) to every path and hands it to the control API."""

    def __init__(self, report: Report, paths: list[Path], state: ControlState) -> None:
        self.report, self.paths, self.state = report, paths, state

    def add(self, path: Path) -> None:
        if path not in self.paths:
            self.paths.append(path)

    def write(self) -> None:
        self.report.secrets = self.state.secrets
        for p in self.paths:
            self.report.write(p)
        self.state.set_report(self.report.to_json())


def _live_inventory(target: Target):
    def read() -> dict:
        from launcher.prepare import resolve_devices

        device, devices, source, notes = resolve_devices(
            Target(device=target.device, inventory_file=None))
        return {"device": device, "source": source, "notes": notes,
                "devices": [{"index": g.index, "name": g.name, "uuid": g.uuid,
                             "total_bytes": g.total_bytes, "used_bytes": g.used_bytes,
                             "free_bytes": g.free_bytes} for g in devices]}
    return read


def _run(model: str, req: PlanRequest, target: Target, opts: ServeOptions, console: Console,
         report: Report, writer: _Writer, state: ControlState) -> int:
    if opts.max_attempts < 1:
        raise InputError(f"--max-attempts {opts.max_attempts} is below 1",
                         fix="Allow at least one attempt, e.g. --max-attempts 3.")
    if target.gpus:
        raise InputError("--gpus describes simulated GPUs; serve launches on real ones",
                         fix="Use --dry-run to plan for simulated GPUs, or drop --gpus.")
    if target.inventory_file and target.device != "cpu":
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
    check_port(target.host, target.port)
    for path in [_log_dir(opts), *(p.parent for p in writer.paths),
                 *([opts.report.parent] if opts.report else [])]:
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".launcher-write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise InputError(f"cannot write to {path}: {e.strerror}",
                             fix="Choose a writable --log-dir / --report / --fit-report, or "
                                 "set LAUNCHER_CACHE_DIR.") from e
    control = None
    if opts.control_port:
        if opts.control_port == target.port:
            raise InputError(f"--control-port {opts.control_port} is the engine's --port",
                             fix="Give the control API its own port, e.g. --control-port 8001.")
        check_port(opts.control_host, opts.control_port)
        from launcher.api.app import ControlServer, create_app

        control = ControlServer(create_app(state, os.environ.get("LAUNCHER_API_TOKEN") or None),
                                opts.control_host, opts.control_port)
        control.start()
        console.print(f"control API: http://{opts.control_host}:{opts.control_port}/ "
                      "(/livez /readyz /plan /report /gpus /metrics)", highlight=False)
    log_dir = _log_dir(opts)
    log_dir.mkdir(parents=True, exist_ok=True)
    if opts.report:
        writer.add(opts.report)
    writer.add(log_dir / "report.json")
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, _frame):
        raise Stopped(signum)

    for s in old:
        signal.signal(s, handler)
    try:
        return _attempts(model, req, target, opts, console, log_dir, report, writer, state,
                         _set)
    except Stopped as s:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        console.print(f"{s}: stopping the engine", highlight=False)
        state.set_phase("stopped", f"{s} received")
        _stop_current(opts.grace)
        if report.final and report.final.outcome == "pending":
            report.final.outcome = "stopped"
        report.stopped_by = str(s)
        report.verdict = "stopped"
        report.exit_code = 128 + s.signum
        writer.write()
        return 128 + s.signum
    finally:
        for sig in old:
            signal.signal(sig, signal.SIG_IGN)
        _stop_current(opts.grace)
        for sig, h in old.items():
            signal.signal(sig, h)
        if control is not None:
            control.stop()


_CURRENT: list[EngineProcess] = []


def _set(e: EngineProcess | None) -> None:
    _CURRENT.clear()
    if e is not None:
        _CURRENT.append(e)


def _stop_current(grace: float) -> None:
    for e in list(_CURRENT):
        e.stop(grace)
    _CURRENT.clear()


def _attempts(model: str, req: PlanRequest, target: Target, opts: ServeOptions,
              console: Console, log_dir: Path, report: Report, writer: _Writer,
              state: ControlState, track) -> int:
    from launcher.render_plan import plan_view

    devices = None
    last_error: LauncherError | None = None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(target.host, target.host)
    base_url = f"http://{f'[{host}]' if ':' in host else host}:{target.port}"
    report.base_url = base_url
    for n in range(1, opts.max_attempts + 1):
        state.set_phase("planning", f"attempt {n}: planning")
        plan = build_plan(model, req, target, devices=devices)
        if opts.settings:
            plan.settings = opts.settings
        state.set_plan(plan.to_json(), opts.settings)
        report.plan = plan.to_json()
        if not plan.feasible:
            console.print(plan_view(redact_obj(plan.to_json(), state.secrets)))
            if n == 1:
                report.verdict, report.exit_code = "does_not_fit", 3
                writer.write()
                return 3
            break  # stepped down as far as the ladder goes
        cmd = EngineCommand(**{k: (tuple(v) if k == "unset" else v)
                               for k, v in plan.engine.items() if k != "shell"})
        log_path = log_dir / f"engine-attempt{n}.log"
        attempt = Attempt(n, plan.to_json(), command=plan.engine, log_file=str(log_path))
        report.attempts.append(attempt)
        report.served_model_name = _served_name(cmd.argv)
        if n == 1:
            console.print(plan_view(redact_obj(plan.to_json(), state.secrets)))
        else:
            d = plan.decision() or {}
            console.print(f"attempt {n}: {plan.chosen.option.label if plan.chosen else ''}, "
                          f"TP{d.get('tensor_parallel_size')}×PP{d.get('pipeline_parallel_size')}"
                          f"×DP{d.get('data_parallel_size')}, max_model_len "
                          f"{d.get('max_model_len')}, KV {d.get('kv_cache_memory_bytes', 0) / GiB:.2f}"
                          f" GiB, enforce_eager {d.get('enforce_eager')}", highlight=False)
        console.print(f"engine log: {log_path}", highlight=False)
        progress = _Progress(console)

        def on_phase(phase: Phase, t: float, _p=progress) -> None:
            _p.phase(phase, t)
            state.set_phase("loading", f"engine: {phase.value} ({t:.0f} s)")

        engine = EngineProcess(cmd, log_path, on_phase=on_phase, secrets=state.secrets,
                               nice=CPU_ENGINE_NICE if plan.request["device"] == "cpu" else 0)
        track(engine)
        engine.start()
        state.set_phase("starting", f"attempt {n}: engine starting")
        attempt.engine_pid = engine.pid
        writer.write()
        progress.begin(n, engine.pid)
        failure = verification = None
        try:
            attempt.ready_seconds = round(wait_healthy(base_url, engine.alive,
                                                       opts.ready_timeout), 2)
            progress.end()
            console.print(f"engine ready in {attempt.ready_seconds:.1f} s; warming up",
                          highlight=False)
            state.set_phase("warming_up", "engine up; warm-up requests running")
            t = time.monotonic()
            headers = _api_headers(cmd.argv)
            models = served_models(base_url, headers)
            served = models[0] if models else {}
            name = served.get("id") or report.served_model_name
            d = plan.decision()
            vocab = plan.chosen.option.spec.vocab_size
            wu = warm_up(base_url, name, d["max_model_len"], d["max_num_seqs"], vocab,
                         headers=headers)
            attempt.warmup = wu.to_json()
            attempt.warmup_seconds = round(time.monotonic() - t, 2)
            if not engine.alive():
                raise EngineGone("the engine exited during warm-up")
            if not wu.ok:
                raise EngineGone("warm-up requests failed: " + "; ".join(wu.errors[:3]))
            t = time.monotonic()
            state.set_phase("verifying", "measuring memory against the plan")
            attempt.engine_pids = engine.pids()
            readings = _measure(plan, engine)
            info = cache_config_info(metrics_text(base_url))
            engine.wait_output(0)
            verification = verify(plan, readings, engine.parser.figures,
                                  served.get("max_model_len"), info)
            attempt.verification_seconds = round(time.monotonic() - t, 2)
            attempt.measured = [r.to_json() for r in readings]
            attempt.verification = verification.to_json()
        except (EngineGone, TimeoutError, OSError, httpx.HTTPError) as e:
            progress.end()
            engine.stop(opts.grace)
            if isinstance(e, TimeoutError):
                # We killed it for taking too long: not a memory failure a smaller plan fixes.
                failure = Failure("ready_timeout", str(e), {"timeout_seconds": opts.ready_timeout},
                                  retryable=False)
            else:
                failure = classify_failure(list(engine.lines), engine.poll(),
                                           engine.parser.phase)
            lines = important_lines(list(engine.lines))
            attempt.outcome = "start_failed"
            attempt.failure = {"kind": failure.kind, "message": failure.message,
                               "details": failure.details, "retryable": failure.retryable,
                               "exit_status": engine.poll(), "last_lines": lines,
                               "error": str(e)}
            last_error = EngineStartError(
                f"attempt {n}: the engine did not come up ({failure.kind}): "
                f"{failure.message or e}",
                fix="See the engine's last lines above and its full log: " + str(log_path),
                hint="\n".join(lines[-8:]))
            console.print(f"[red]attempt {n} failed[/]: {failure.kind}: "
                          f"{failure.message or e}", highlight=False)
        finally:
            attempt.phases = dict(engine.phase_times)
            attempt.figures = engine.parser.figures.to_json()
        if failure is None and verification is not None and verification.ok:
            attempt.outcome = "served"
            report.verdict, report.exit_code = "serving", None
            writer.write()
            state.set_phase("serving", "engine up and verified", ready=True)
            _summary(console, attempt, writer.paths, base_url, report.served_model_name)
            monitor = HeadroomMonitor(state, sampler(plan, engine, plan.request["device"]),
                                      lambda m: console.print(f"[yellow]warning:[/] {m}"),
                                      opts.monitor_interval)
            monitor.start()
            try:
                _watch(engine, base_url, state)
            finally:
                monitor.stop()
            lines = important_lines(list(engine.lines))
            attempt.outcome = "engine_exited"
            report.verdict, report.exit_code = "engine_exited", 4
            state.set_phase("engine_exited", f"the engine exited (status {engine.poll()})")
            writer.write()
            raise EngineStartError(f"the engine exited while serving (status {engine.poll()})",
                                   fix=f"See its log: {log_path}", hint="\n".join(lines[-8:]))
        if failure is None and verification is not None:
            engine.stop(opts.grace)
            attempt.outcome = "verification_failed"
            names = ", ".join(c.name for c in verification.failures)
            last_error = VerificationError(
                f"attempt {n}: verification failed: {names}",
                fix=f"The report lists planned vs measured: {writer.paths[-1]}")
            console.print(f"[red]attempt {n}: verification failed[/]: {names}",
                          highlight=False)
        step = next_step(req, plan, failure, verification)
        if step is None or n == opts.max_attempts:
            attempt.next_step = None if step is None else f"not taken (--max-attempts " \
                                                          f"{opts.max_attempts}): {step.reason}"
            writer.write()
            break
        attempt.next_step = step.reason
        writer.write()
        state.set_phase("stepping_down", step.reason)
        console.print(f"stepping down: {step.reason}", highlight=False)
        req = step.request
        if step.device_memory is not None:
            devices = _corrected(plan, step.device_memory)
    assert last_error is not None or report.attempts
    code = last_error.exit_code if last_error else 4
    report.verdict = "verification_failed" if code == 5 else "failed_to_start"
    report.exit_code = code
    state.set_phase("failed", report.verdict.replace("_", " "))
    writer.write()
    if last_error is None:
        last_error = EngineStartError("no smaller plan is left to try",
                                      fix=f"See the report: {writer.paths[-1]}")
    raise last_error


def _watch(engine: EngineProcess, base_url: str, state: ControlState,
           every: float = 5.0, misses: int = 3) -> None:
    """Serve until the engine exits; a hung engine (no /health for `misses` checks) is reported
    not ready until it answers again."""
    failed = 0
    last = time.monotonic()
    with httpx.Client(timeout=5) as client:
        while engine.alive():
            time.sleep(0.5)
            if time.monotonic() - last < every:
                continue
            last = time.monotonic()
            try:
                ok = client.get(f"{base_url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            failed = 0 if ok else failed + 1
            if failed == misses:
                state.set_phase("serving", f"the engine has not answered /health for "
                                f"{misses * every:.0f} s", ready=False)
            elif ok and not state.ready and state.phase == "serving":
                state.set_phase("serving", "engine up and verified", ready=True)


def _api_headers(argv: list[str]) -> dict[str, str]:
    """vLLM's own API key (`--api-key` passthrough or VLLM_API_KEY), for warm-up requests."""
    key = os.environ.get("VLLM_API_KEY")
    for i, a in enumerate(argv):
        if a == "--api-key" and i + 1 < len(argv):
            key = argv[i + 1]
        elif a.startswith("--api-key="):
            key = a.split("=", 1)[1]
    return {"Authorization": f"Bearer {key}"} if key else {}


def _served_name(argv: list[str]) -> str | None:
    if "--served-model-name" in argv:
        return argv[argv.index("--served-model-name") + 1]
    return argv[argv.index("--model") + 1] if "--model" in argv else None


def _corrected(plan, memory: tuple[int, int]):
    from dataclasses import replace

    total, avail = memory
    return [replace(g, total_bytes=total, used_bytes=max(0, total - avail), free_bytes=avail)
            for g in plan.chosen.gpus]


def _measure(plan, engine: EngineProcess):
    from launcher.runtime.measure import measure_cpu, measure_gpu

    pids = engine.pids()
    if plan.request.get("device") == "cpu":
        return measure_cpu(pids)
    return measure_gpu(plan.chosen.gpus, pids)


def _summary(console: Console, a: Attempt, report_paths: list[Path], base_url: str,
             name: str | None) -> None:
    v = a.verification or {}
    console.print(f"[bold green]serving[/] {name} at {base_url}/v1 — ready in "
                  f"{a.ready_seconds:.1f} s, warm-up {a.warmup_seconds:.1f} s, verification "
                  f"{a.verification_seconds:.2f} s", highlight=False)
    for d in v.get("devices", []):
        eng = d["engine_measured_bytes"]
        console.print(
            f"  device {d['index']}: used {d['used_bytes'] / GiB:.2f} GiB ≤ limit "
            f"{d['limit_bytes'] / GiB:.2f} GiB ({d['headroom_fraction']:.0%} free); engine "
            f"planned {d['engine_planned_bytes'] / GiB:.2f} GiB, measured "
            f"{'–' if eng is None else f'{eng / GiB:.2f}'} GiB", highlight=False)
    for c in v.get("checks", []):
        if not c["hard"]:
            mark = "ok" if c["ok"] else "off"
            console.print(f"  {c['name']}: {mark} — {c['detail']}", highlight=False)
    console.print("report: " + ", ".join(map(str, report_paths)), highlight=False)
    console.print(f"try: curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' "
                  f"-d '{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", "
                  f"\"content\": \"Hello\"}}]}}'", highlight=False, soft_wrap=True)
