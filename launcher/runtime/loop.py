"""The serve loop: attempt after attempt until one serves, the ladder ends, or a stop arrives.

    supervise ── run_attempts, per attempt:
                   plan_attempt         plan (or re-plan) and record the plan
                   launch_engine        the engine in its own process group, its log
                   wait_ready           /health with a deadline; a dead engine fails at once
                   warm_up_engine       a full-context request and a burst of max_num_seqs
                   verify_engine        measured memory and capacity against the plan
                   remember             a verified start goes into the boot store, which
                                          the next plan on this host learns from
                   speed                a few seconds of load at the planned concurrency:
                                          measured TTFT, ITL, tokens/s beside the prediction
                   start_failed /       why it failed (the engine's last lines) and the error
                   verification_failed    to raise when no rung is left
                   choose_step          the next rung down, or none
                   serve                watch until the engine exits (→ exit 4)
               └─ stopped              a recorded SIGTERM/SIGINT: stop, report, 128 + signum

Every unit records what it learned in the report before the next starts. Each wait runs under
`StopRequest.run`, so a stop recorded by the signal handler ends it within a tenth of a
second; the loop also looks between steps. Whatever way the loop ends, the engine group is
stopped (`Session.stop_engine`).

The plan is read in two functions only: `plan_attempt` (feasible, settings, JSON) and
`launch_of` (the command and the numbers the loop needs); `verify` and `next_step` compare
with it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx

from launcher.engines.vllm_log import Failure, FailureKind, Phase, classify_failure, important_lines
from launcher.errors import DoesNotFitError, EngineStartError, LauncherError, VerificationError
from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import Device
from launcher.planner import PlanRequest
from launcher.planner.plan import EngineCommand, Plan
from launcher.policy import (
    CPU_ENGINE_NICE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MONITOR_INTERVAL,
    DEFAULT_READY_TIMEOUT,
    STOP_GRACE_SECONDS,
)
from launcher.prepare import Target, build_plan
from launcher.redact import redact_obj
from launcher.render.serve import ServeConsole
from launcher.runtime.backoff import Step, next_step
from launcher.runtime.cluster import Coordinator, PeerFailure
from launcher.runtime.lease import HostLease, measured_bytes, planned_bytes
from launcher.runtime.lease import State as LeaseState
from launcher.runtime.live import read_engine_sample
from launcher.runtime.loadtest import (
    load_prediction,
    measure_speed,
    planned_workload,
    shape_for,
    speed_record,
)
from launcher.runtime.measure import DeviceReading, measure_cpu, measure_gpu
from launcher.runtime.monitor import HeadroomMonitor, sampler
from launcher.runtime.report import Attempt, Outcome, Report, ReportWriter, Verdict
from launcher.runtime.signals import Stopped, StopRequest
from launcher.runtime.state import ControlState, ServePhase
from launcher.runtime.supervisor import EngineProcess
from launcher.runtime.verify import Verification, verify
from launcher.runtime.warmup import (
    EngineGone,
    cache_config_info,
    metrics_text,
    served_models,
    wait_healthy,
    warm_up,
)

# What a failed start looks like from here: the engine died, /health never answered, or a
# request to it failed.
START_FAILURES = (EngineGone, TimeoutError, OSError, httpx.HTTPError)


@dataclass
class Session:
    """What every unit of the loop shares."""

    model: str
    target: Target
    log_dir: Path
    report: Report
    writer: ReportWriter
    state: ControlState
    out: ServeConsole
    stop: StopRequest
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    grace: float = STOP_GRACE_SECONDS
    monitor_interval: float = DEFAULT_MONITOR_INTERVAL
    settings: dict[str, Any] | None = None  # option → {value, source}, already redacted
    measure_speed: bool = True  # a short load before ready (--measure-speed)
    measure_seconds: float = 5.0  # how long it runs (--measure-seconds)
    cluster: Coordinator | None = None  # node 0 of a multi-node engine (runtime/cluster.py)
    engine: EngineProcess | None = field(default=None, init=False)  # the one running now
    lease: HostLease | None = field(default=None, init=False)  # this launcher's ledger entry

    @property
    def base_url(self) -> str:
        """Where the engine answers, from this host (a wildcard bind is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.target.host, self.target.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.target.port}"

    def stop_engine(self) -> None:
        """Stop the engine group (SIGTERM, then SIGKILL after the grace); safe to repeat."""
        if self.engine is not None:
            self.engine.stop(self.grace)


@dataclass(frozen=True)
class Launch:
    """What the loop needs from a feasible plan."""

    command: EngineCommand
    device: Device
    max_model_len: int
    max_num_seqs: int
    vocab_size: int
    gpus: tuple[GpuInfo, ...]
    limits: dict[int, int]  # device index → the most it may use

    @property
    def served_name(self) -> str | None:
        return self.command.flag("--served-model-name") or self.command.flag("--model")

    def api_headers(self) -> dict[str, str]:
        """vLLM's own API key (`--api-key` passthrough or VLLM_API_KEY), for warm-up requests."""
        key = self.command.flag("--api-key") or os.environ.get("VLLM_API_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}


def launch_of(plan: Plan) -> Launch:
    d, c = plan.decision, plan.chosen
    if d is None or c is None or plan.engine is None:
        raise ValueError("only a feasible plan with an engine command is launched")
    return Launch(command=plan.engine, device=plan.device, max_model_len=d.max_model_len,
                  max_num_seqs=d.max_num_seqs, vocab_size=plan.model.vocab_size, gpus=c.gpus,
                  limits={b.index: b.limit_bytes for b in c.budgets})


@dataclass(frozen=True)
class Result:
    """How an attempt's start went: verified, or why not and what to raise if it stays so."""

    verification: Verification | None = None
    failure: Failure | None = None
    error: LauncherError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.verification is not None and self.verification.ok


# ---- the loop ---------------------------------------------------------------------------

def supervise(s: Session, req: PlanRequest) -> int:
    """Serve until stopped: the exit status, or a LauncherError (its exit code) to raise."""
    try:
        return run_attempts(s, req)
    except Stopped as e:
        return stopped(s, e)
    finally:
        s.stop_engine()


def run_attempts(s: Session, req: PlanRequest) -> int:
    s.report.base_url = s.base_url
    devices: Sequence[GpuInfo] | None = None
    last_error: LauncherError | None = None
    if s.cluster is not None:  # every node joined: plan over the union of their devices
        devices, req = join_nodes(s, req)
    for n in range(1, s.max_attempts + 1):
        s.stop.check()
        plan, plan_json = plan_attempt(s, n, req, devices)
        s.stop.check()  # a stop while planning: start nothing
        if not plan.feasible:
            if n == 1:
                return does_not_fit(s)
            break  # stepped down as far as the ladder goes
        launch = launch_of(plan)
        if s.cluster is not None:  # this node's part; every other node's published
            launch = replace(launch, command=s.cluster.publish(n, plan, launch.command))
        attempt = launch_engine(s, n, launch, plan_json)
        result = try_attempt(s, n, attempt, launch, plan)
        if result.ok:
            lease_record(s, LeaseState.SERVING,
                         in_use=measured_bytes(launch.gpus, attempt.verification))
            remember(s, plan, attempt)
            s.stop.check()
            speed(s, attempt, launch, plan)
            s.stop.check()
            serve(s, attempt, launch)
        else:
            lease_record(s, LeaseState.PLANNING)  # its engine is stopped: none loads now
        last_error = result.error
        s.stop.check()
        step = choose_step(s, n, req, plan, result)
        if step is None:
            break
        req = step.request
        if step.device_memory is not None:
            devices = corrected(launch.gpus, step.device_memory)
    s.stop.check()
    raise give_up(s, last_error)


def try_attempt(s: Session, n: int, attempt: Attempt, launch: Launch, plan: Plan) -> Result:
    """Ready → warm up → verify; a failure on the way is classified, the engine stopped."""
    engine = s.engine
    assert engine is not None
    try:
        attempt.ready_seconds = wait_ready(s, engine)
        served_len = warm_up_engine(s, engine, attempt, launch)
        verification = verify_engine(s, engine, attempt, launch, plan, served_len)
    except START_FAILURES as e:
        return start_failed(s, n, attempt, engine, e)
    finally:
        attempt.phases = dict(engine.phase_times)
        attempt.figures = engine.parser.figures.to_json()
    if verification.ok:
        return Result(verification=verification)
    return verification_failed(s, n, attempt, verification)


# ---- the units --------------------------------------------------------------------------

def plan_attempt(s: Session, n: int, req: PlanRequest,
                 devices: Sequence[GpuInfo] | None) -> tuple[Plan, dict[str, Any]]:
    """Plan (attempt 1) or re-plan from the stepped-down request; record and show it."""
    s.state.set_phase(ServePhase.PLANNING, f"attempt {n}: planning")
    if s.lease is None:
        plan = build_plan(s.model, req, s.target, devices=devices)
    else:  # others' planned-not-allocated memory taken off; the lock held until recorded
        with s.lease.planning():
            plan = build_plan(s.model, req, s.target, devices=devices,
                              around=s.lease.budget_around)
            s.lease.record(LeaseState.PLANNING, planned=planned_bytes(plan))
    if s.settings:
        plan = plan.with_settings(s.settings)
    plan_json = plan.to_json()
    s.state.set_plan(plan_json, s.settings)
    s.report.plan = plan_json
    shown = redact_obj(plan_json, s.state.secrets)
    if n == 1 or not plan.feasible:
        s.out.plan(shown)
    else:
        s.out.relaunch(n, shown)
    return plan, plan_json


def lease_record(s: Session, state: LeaseState, **changes: Any) -> None:
    """This launcher's state in the host lease; a ledger that cannot be written now is a
    warning (the entry is rewritten at the next change), never a failed start."""
    if s.lease is None:
        return
    try:
        s.lease.record(state, **changes)
    except (LauncherError, OSError) as e:
        s.out.warning(f"the host lease in {s.lease.directory} was not updated: "
                      f"{getattr(e, 'message', None) or e}")


def does_not_fit(s: Session) -> int:
    s.report.verdict = Verdict.DOES_NOT_FIT
    s.report.exit_code = DoesNotFitError.exit_code
    s.writer.write()
    return DoesNotFitError.exit_code


def launch_engine(s: Session, n: int, launch: Launch, plan_json: dict[str, Any]) -> Attempt:
    """Start the engine (the session tracks it from here on) and record the attempt."""
    log_path = s.log_dir / f"engine-attempt{n}.log"
    attempt = Attempt(n, plan_json, command=launch.command.to_json(), log_file=str(log_path))
    s.report.attempts.append(attempt)
    s.report.served_model_name = launch.served_name

    def on_phase(phase: Phase, seconds: float) -> None:  # the log reader's thread
        s.out.engine_phase(phase, seconds)
        s.state.set_phase(ServePhase.LOADING, f"engine: {phase.value} ({seconds:.0f} s)")

    engine = EngineProcess(launch.command, log_path, on_phase=on_phase, secrets=s.state.secrets,
                           nice=CPU_ENGINE_NICE if launch.device == Device.CPU else 0)
    s.engine = engine
    s.state.set_phase(ServePhase.STARTING, f"attempt {n}: engine starting")
    engine.start()
    attempt.engine_pid = engine.pid
    lease_record(s, LeaseState.LOADING, engine_pids=[engine.pid])
    s.writer.write()
    s.out.engine_starting(n, engine.pid, log_path)
    return attempt


def wait_ready(s: Session, engine: EngineProcess) -> float:
    """Seconds until /health answered; EngineGone when the engine died first, TimeoutError
    past the deadline, Stopped when a stop was recorded meanwhile."""
    def alive() -> bool:  # a peer that failed ends the wait as this engine's death does
        return engine.alive() and (s.cluster is None or s.cluster.failure() is None)

    seconds = s.stop.run(lambda: wait_healthy(s.base_url, alive, s.ready_timeout))
    s.out.engine_ready(seconds)
    return round(seconds, 2)


def warm_up_engine(s: Session, engine: EngineProcess, attempt: Attempt,
                   launch: Launch) -> int | None:
    """The two extremes the plan budgets for; returns the context the engine serves."""
    s.state.set_phase(ServePhase.WARMING_UP, "engine up; warm-up requests running")
    t = time.monotonic()
    headers = launch.api_headers()
    models = s.stop.run(lambda: served_models(s.base_url, headers))
    served = models[0] if models else {}
    name = served.get("id") or s.report.served_model_name or ""
    wu = s.stop.run(lambda: warm_up(s.base_url, name, launch.max_model_len, launch.max_num_seqs,
                                    launch.vocab_size, headers=headers))
    attempt.warmup = wu.to_json()
    attempt.warmup_seconds = round(time.monotonic() - t, 2)
    if not engine.alive():
        raise EngineGone("the engine exited during warm-up")
    if not wu.ok:
        raise EngineGone("warm-up requests failed: " + "; ".join(wu.errors[:3]))
    return served.get("max_model_len")


def verify_engine(s: Session, engine: EngineProcess, attempt: Attempt, launch: Launch,
                  plan: Plan, served_max_model_len: int | None) -> Verification:
    t = time.monotonic()
    s.state.set_phase(ServePhase.VERIFYING, "measuring memory against the plan")
    attempt.engine_pids = engine.pids()
    readings = measure(launch, engine)
    if s.cluster is not None:  # every node measures its own part
        n = len(s.report.attempts)
        readings = s.cluster.readings(n, readings, s.stop)
    info = cache_config_info(s.stop.run(lambda: metrics_text(s.base_url)))
    engine.wait_output(0)
    verification = verify(plan, readings, engine.parser.figures, served_max_model_len, info)
    attempt.verification_seconds = round(time.monotonic() - t, 2)
    attempt.measured = [r.to_json() for r in readings]
    attempt.verification = verification.to_json()
    return verification


def remember(s: Session, plan: Plan, attempt: Attempt) -> None:
    """Record the verified start in the boot store (what was planned and measured, under the
    plan's fingerprint); a store that cannot be written is a warning, never a failed start."""
    from launcher.calibration.boot_store import BootStore
    from launcher.calibration.boots import boot_of
    from launcher.prepare import boot_fingerprint

    store = BootStore()
    try:
        fp = boot_fingerprint(plan, s.target)
        if fp is None or attempt.verification is None:
            return
        boot = boot_of(plan, attempt.verification["devices"], attempt.figures or {}, fp,
                       datetime.now(UTC).isoformat(timespec="seconds"))
        stored, problem = store.add(boot)
    except (OSError, ValueError, KeyError) as e:
        attempt.boot = {"recorded": False, "store": str(store.path), "error": str(e)}
        s.out.warning(f"this start was not recorded in the boot store {store.path}: {e}")
        return
    if problem:
        s.out.warning(problem)
    attempt.boot = {"recorded": True, "store": str(store.path), "boots_stored": stored,
                    "overshoot_bytes": boot.overshoot_bytes,
                    "fingerprint": fp.to_json()}


def speed(s: Session, attempt: Attempt, launch: Launch, plan: Plan) -> None:
    """Measured speed before the engine is reported ready (no user shares the load): a few
    seconds of streamed requests at the planned concurrency, beside the speed model's
    prediction for the same load. A load that measures nothing is a warning, never a failed
    start."""
    replicas = (plan.decision.data_parallel_size if plan.decision else 1) or 1
    shape = shape_for(launch.max_model_len, launch.max_num_seqs * replicas, s.measure_seconds,
                      planned_workload(attempt.plan))
    try:
        predicted = load_prediction(plan, shape)
    except LauncherError as e:  # the speed model's inputs did not load: measure anyway
        s.out.warning(f"no speed prediction to compare with: {e.message}")
        predicted = None
    if not s.measure_speed:
        attempt.speed = speed_record(None, predicted, skipped="--no-measure-speed")
        return
    s.state.set_phase(ServePhase.MEASURING_SPEED, f"measuring speed: {shape.concurrency} "
                      f"streams for {shape.seconds:g} s")
    t = time.monotonic()
    name = s.report.served_model_name or ""
    measured, samples = s.stop.run(lambda: measure_speed(
        s.base_url, name, shape, launch.vocab_size, launch.api_headers()))
    s.state.record_engine(samples)
    attempt.speed = speed_record(measured, predicted)
    attempt.speed_seconds = round(time.monotonic() - t, 2)
    s.writer.write()
    s.out.speed(attempt.speed)
    if not measured.ok:
        s.out.warning("the speed measurement measured nothing: " +
                      ("; ".join(measured.errors) or f"no token within {shape.seconds:g} s"))


def measure(launch: Launch, engine: EngineProcess) -> list[DeviceReading]:
    pids = engine.pids()
    if launch.device == Device.CPU:
        return measure_cpu(pids)
    return measure_gpu(launch.gpus, pids)


def failure_of(error: Exception, lines: Sequence[str], returncode: int | None, phase: Phase,
               ready_timeout: float) -> Failure:
    """Why a start failed: the engine's own words, unless the launcher ended it for taking
    too long (not a memory failure a smaller plan fixes)."""
    if isinstance(error, TimeoutError):
        return Failure(FailureKind.READY_TIMEOUT, str(error), {"timeout_seconds": ready_timeout},
                       retryable=False)
    return classify_failure(lines, returncode, phase)


def start_failed(s: Session, n: int, attempt: Attempt, engine: EngineProcess,
                 error: Exception) -> Result:
    """Stop what is left of the engine, classify its last lines, record and say why."""
    s.out.end_progress()
    s.stop_engine()
    lines = list(engine.lines)
    failure = failure_of(error, lines, engine.poll(), engine.parser.phase, s.ready_timeout)
    peer = s.cluster.wait_failure(2.0) if s.cluster is not None else None
    if peer is not None:  # a node's engine part or the node itself failed: its words
        failure = peer_failure(peer)
    last = important_lines(lines)
    attempt.outcome = Outcome.START_FAILED
    attempt.failure = {"kind": failure.kind, "message": failure.message,
                       "details": failure.details, "retryable": failure.retryable,
                       "exit_status": engine.poll(), "last_lines": last, "error": str(error)}
    s.out.attempt_failed(n, failure.kind, failure.message or str(error))
    return Result(failure=failure, error=EngineStartError(
        f"attempt {n}: the engine did not come up ({failure.kind}): {failure.message or error}",
        fix=f"See the engine's last lines above and its full log: {attempt.log_file}",
        hint="\n".join(last[-8:])))


def verification_failed(s: Session, n: int, attempt: Attempt,
                        verification: Verification) -> Result:
    s.stop_engine()
    attempt.outcome = Outcome.VERIFICATION_FAILED
    names = ", ".join(c.name for c in verification.failures)
    s.out.verification_failed(n, names)
    return Result(verification=verification, error=VerificationError(
        f"attempt {n}: verification failed: {names}",
        fix=f"The report lists planned vs measured: {s.writer.paths[-1]}"))


def choose_step(s: Session, n: int, req: PlanRequest, plan: Plan, result: Result) -> Step | None:
    """The next rung down, recorded on the attempt; None when none is left or allowed."""
    step = next_step(req, plan, result.failure, result.verification)
    attempt = s.report.attempts[-1]
    if step is None or n == s.max_attempts:
        attempt.next_step = None if step is None else \
            f"not taken (--max-attempts {s.max_attempts}): {step.reason}"
        s.writer.write()
        return None
    attempt.next_step = step.reason
    s.writer.write()
    s.state.set_phase(ServePhase.STEPPING_DOWN, step.reason)
    s.out.stepping_down(step.reason)
    return step


def corrected(gpus: Sequence[GpuInfo], memory: tuple[int, int]) -> list[GpuInfo]:
    """The planned devices with the memory the engine reported (total, available)."""
    total, avail = memory
    return [replace(g, total_bytes=total, used_bytes=max(0, total - avail), free_bytes=avail)
            for g in gpus]


def serve(s: Session, attempt: Attempt, launch: Launch) -> NoReturn:
    """Verified: say so, watch headroom and /health until the engine exits (an error: exit 4)
    or a stop is recorded."""
    engine = s.engine
    assert engine is not None
    attempt.outcome = Outcome.SERVED
    s.report.verdict, s.report.exit_code = Verdict.SERVING, None
    s.writer.write()
    s.state.set_phase(ServePhase.SERVING, "engine up and verified", ready=True)
    s.out.serving(attempt.to_json(), s.writer.paths, s.base_url, s.report.served_model_name)
    gpus = s.cluster.local if s.cluster is not None else launch.gpus  # this node's own
    monitor = HeadroomMonitor(s.state, sampler(engine, launch.device, gpus, launch.limits),
                              s.out.warning, s.monitor_interval,
                              engine=lambda: read_engine_sample(s.base_url))
    monitor.start()
    try:
        s.stop.run(lambda: watch(engine, s.base_url, s.state, peers=peers_failed(s)))
    finally:
        monitor.stop()
    s.stop.check()
    peer = s.cluster.wait_failure(3.0) if s.cluster is not None else None
    if peer is not None:
        s.stop_engine()
        attempt.outcome = Outcome.ENGINE_EXITED
        s.report.verdict = Verdict.ENGINE_EXITED
        s.report.exit_code = EngineStartError.exit_code
        s.state.set_phase(ServePhase.ENGINE_EXITED, peer.message)
        s.writer.write()
        raise EngineStartError(f"{peer.message} while serving: the whole group stopped",
                               fix=f"See node {peer.rank}'s output and engine log.",
                               hint="\n".join(important_lines(list(peer.lines))[-8:]))
    status = engine.poll()
    last = important_lines(list(engine.lines))
    attempt.outcome = Outcome.ENGINE_EXITED
    s.report.verdict = Verdict.ENGINE_EXITED
    s.report.exit_code = EngineStartError.exit_code
    s.state.set_phase(ServePhase.ENGINE_EXITED, f"the engine exited (status {status})")
    s.writer.write()
    raise EngineStartError(f"the engine exited while serving (status {status})",
                           fix=f"See its log: {attempt.log_file}", hint="\n".join(last[-8:]))


def watch(engine: EngineProcess, base_url: str, state: ControlState, every: float = 5.0,
          misses: int = 3, peers: Callable[[], bool] | None = None) -> None:
    """Until the engine exits (or `peers()` says a node of its group failed); a hung engine
    (no /health for `misses` checks) is reported not ready until it answers again."""
    failed = 0
    last = time.monotonic()
    with httpx.Client(timeout=5) as client:
        while engine.alive() and not (peers is not None and peers()):
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
                state.set_phase(ServePhase.SERVING, f"the engine has not answered /health for "
                                f"{misses * every:.0f} s", ready=False)
            elif ok and not state.ready and state.phase == ServePhase.SERVING:
                state.set_phase(ServePhase.SERVING, "engine up and verified", ready=True)


# ---- multi-node (node 0) ------------------------------------------------------------------

def join_nodes(s: Session, req: PlanRequest) -> tuple[list[GpuInfo], PlanRequest]:
    """Wait (with the deadline) until every node joined; the union of their devices and the
    request the planner gets for it."""
    from launcher.prepare import resolve_devices

    assert s.cluster is not None
    device, local, _, _, _ = resolve_devices(s.target)
    s.state.set_phase(ServePhase.STARTING, f"waiting for {s.cluster.opts.nnodes - 1} other "
                      f"node(s) to join (deadline {s.cluster.opts.node_deadline:g} s)")
    s.out.console.print(f"waiting for {s.cluster.opts.nnodes - 1} other node(s) to join",
                        highlight=False)
    union = s.cluster.wait_for_nodes(s.stop, device, local)
    s.out.console.print(f"all {s.cluster.opts.nnodes} nodes joined: {len(union)} devices",
                        highlight=False)
    return union, req


def peers_failed(s: Session) -> Callable[[], bool] | None:
    c = s.cluster
    return None if c is None else (lambda: c.failure() is not None)


def peer_failure(peer: PeerFailure) -> Failure:
    """A peer's engine that exited is classified from its own last lines (a memory failure
    there steps the whole group down); a node that left or went silent is not retryable."""
    if not peer.lines:
        return Failure(FailureKind.UNKNOWN, peer.message, {"node": peer.rank}, retryable=False)
    phase = Phase(peer.phase) if peer.phase in {p.value for p in Phase} else None
    f = classify_failure(list(peer.lines), peer.status, phase)
    return replace(f, message=f"{peer.message}: {f.message}", details={**f.details,
                                                                      "node": peer.rank})


def stopped(s: Session, e: Stopped) -> int:
    """A recorded SIGTERM/SIGINT: stop the engine group, record, exit 128 + signum."""
    s.out.stopping(e.signal_name)
    s.state.set_phase(ServePhase.STOPPED, f"{e.signal_name} received")
    s.stop_engine()
    final = s.report.final
    if final is not None and final.outcome == Outcome.PENDING:
        final.outcome = Outcome.STOPPED
    s.report.stopped_by = e.signal_name
    s.report.verdict = Verdict.STOPPED
    s.report.exit_code = e.exit_code
    s.writer.write()
    return e.exit_code


def give_up(s: Session, last_error: LauncherError | None) -> LauncherError:
    """No attempt served and no rung is left: record the verdict, return the error to raise."""
    error = last_error or EngineStartError("no smaller plan is left to try",
                                           fix=f"See the report: {s.writer.paths[-1]}")
    s.report.verdict = Verdict.VERIFICATION_FAILED if isinstance(error, VerificationError) \
        else Verdict.FAILED_TO_START
    s.report.exit_code = error.exit_code
    s.state.set_phase(ServePhase.FAILED, s.report.verdict.replace("_", " "))
    s.writer.write()
    return error
