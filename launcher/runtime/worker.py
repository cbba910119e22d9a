"""`serve … --node-rank R` (R > 0): this node's headless part of a multi-node engine.

It plans nothing: it joins node 0 (`launcher.runtime.cluster.Coordinator`) with its devices,
then follows node 0's directives — start attempt n's command, measure the engine's memory,
stop — while watching its own engine and node 0. Each wait has a deadline:

    node 0 never answers the join           → exit 4 after --node-deadline
    node 0 stops answering                  → stop the engine, exit 4 after `lost_after`
    this node's engine exits                → told to node 0 (it re-plans or stops the group)
    node 0 says stop                        → stop the engine, exit with node 0's status
    SIGTERM/SIGINT                          → stop the engine, tell node 0, 128 + signum

Whatever ends it, the engine group is stopped and its shared-memory files removed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from launcher.errors import EngineStartError, InputError, LauncherError
from launcher.paths import cache_dir
from launcher.policy import CPU_ENGINE_NICE
from launcher.prepare import Target, resolve_devices
from launcher.runtime.cluster import POLL_SECONDS, ClusterOptions, devices_json, worker_command
from launcher.runtime.measure import DeviceReading, measure_cpu, measure_gpu
from launcher.runtime.signals import Stopped, StopRequest
from launcher.runtime.supervisor import EngineProcess


class Worker:
    def __init__(self, model: str, target: Target, cluster: ClusterOptions, control_port: int,
                 log_dir: Path, console: Console, grace: float) -> None:
        self.model, self.target, self.opts = model, target, cluster
        host = cluster.master_addr
        self.base = f"http://{f'[{host}]' if ':' in host else host}:{control_port}"
        token = os.environ.get("LAUNCHER_API_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.log_dir, self.console, self.grace = log_dir, console, grace
        self.stop = StopRequest()
        self.engine: EngineProcess | None = None
        self.attempt = 0
        self.reported_exit = False
        self.offset = 0
        self.client = httpx.Client(timeout=5.0, headers=self.headers)

    def say(self, text: str) -> None:
        self.console.print(f"node {self.opts.node_rank}: {text}", highlight=False, markup=False)

    # ---- talking to node 0 -----------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(self.base + path, json=body)

    def _refused(self, r: httpx.Response, what: str) -> InputError | None:
        if r.status_code == 401:
            return InputError(f"node 0 refused the {what}: wrong or missing LAUNCHER_API_TOKEN",
                              fix="Give every node the same LAUNCHER_API_TOKEN.")
        if r.status_code in (409, 422):
            detail = _detail(r)
            return InputError(f"node 0 refused the {what}: {detail}",
                              fix="Run the same `serve` command (model, --nnodes, "
                                  "--master-addr) on every node, each with its own --node-rank.")
        return None

    def join(self) -> None:
        device, devices, source, _, _ = resolve_devices(
            Target(device=self.target.device, inventory_file=None))
        body = {"rank": self.opts.node_rank, "nnodes": self.opts.nnodes, "model": self.model,
                "host": socket.gethostname(), "pid": os.getpid(),
                **devices_json(device, devices, source)}
        self.device = device
        self.devices = devices
        deadline = time.monotonic() + self.opts.node_deadline
        self.say(f"joining node 0 at {self.base}")
        while True:
            try:
                r = self._post("/cluster/join", body)
                err = self._refused(r, "join")
                if err:
                    raise err
                if r.status_code == 200:
                    self.say("joined")
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"node 0 at {self.base} did not answer within --node-deadline "
                    f"{self.opts.node_deadline:g} s",
                    fix="Start node 0 (--node-rank 0) with the same --nnodes, its control API "
                        "reachable from here (--control-host 0.0.0.0 and --control-port), or "
                        "raise --node-deadline.", hint=f"curl {self.base}/livez")
            time.sleep(1.0)  # a stop signal is recorded meanwhile and checked next
            self.stop.check()

    def report(self, event: str, **body: Any) -> None:
        with contextlib.suppress(httpx.HTTPError):  # node 0 gone: the directive loop notices
            self._post("/cluster/report", {"rank": self.opts.node_rank, "attempt": self.attempt,
                                           "event": event, **body})

    # ---- the engine -----------------------------------------------------------------
    def start(self, n: int, raw: Any) -> None:
        self.stop_engine()
        try:
            cmd = worker_command(raw, self.target.engine_python or sys.executable,
                                 note=self.say)
        except ValueError as e:
            raise EngineStartError(f"attempt {n}: {e}",
                                   fix="Run the same launcher version on every node.") from e
        self.attempt, self.reported_exit = n, False
        log = self.log_dir / f"engine-node{self.opts.node_rank}-attempt{n}.log"
        from launcher.memory.calibration import Device

        self.engine = EngineProcess(cmd, log, nice=CPU_ENGINE_NICE if self.device == Device.CPU
                                    else 0)
        self.engine.start()
        self.say(f"attempt {n}: engine starting (pid {self.engine.pid}), log {log}")
        self.report("started", pid=self.engine.pid)

    def stop_engine(self) -> None:
        if self.engine is not None:
            self.engine.stop(self.grace)

    def measure(self) -> list[DeviceReading]:
        from dataclasses import replace

        from launcher.memory.calibration import Device

        assert self.engine is not None
        pids = self.engine.pids()
        local = measure_cpu(pids) if self.device == Device.CPU else \
            measure_gpu(self.devices, pids)
        return [replace(r, index=self.offset + r.index) for r in local]

    # ---- the loop ------------------------------------------------------------------
    def follow(self) -> int:
        last_ok = time.monotonic()
        measured_for = 0
        while True:
            self.stop.check()
            try:
                r = self.client.get(self.base + "/cluster/directive",
                                    params={"rank": self.opts.node_rank})
                err = self._refused(r, "directive")
                if err:
                    raise err
                d = r.json() if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                d = None
            now = time.monotonic()
            if d is None:
                if now - last_ok > self.opts.lost_after:
                    raise EngineStartError(
                        f"node 0 at {self.base} stopped answering "
                        f"({now - last_ok:.0f} s); this node's engine part was stopped",
                        fix="See node 0's output: it stopped or its host went away.")
            else:
                last_ok = now
                self.offset = int(d.get("device_offset") or 0)
                action, n = d.get("action"), int(d.get("attempt") or 0)
                if action == "stop":
                    self.stop_engine()
                    code = d.get("exit_code")
                    msg = d.get("message") or ""
                    self.say(f"node 0 stopped the group (its status {code})"
                             + (f": {msg}" if msg else ""))
                    if isinstance(code, int) and code >= 128:  # node 0 was stopped by a signal
                        return 0
                    if isinstance(code, int) and code:
                        raise EngineStartError(f"node 0 stopped the group: {msg or code}",
                                               fix="See node 0's output and fit report.")
                    return 0
                if action in ("launch", "verify", "serve") and n > self.attempt:
                    self.start(n, d.get("command"))
                if action == "verify" and n == self.attempt and measured_for != n \
                        and self.engine is not None and self.engine.alive():
                    readings = self.measure()
                    self.report("readings", readings=[x.to_json() for x in readings])
                    measured_for = n
                    self.say(f"attempt {n}: measured " + ", ".join(
                        f"device {x.index}: {(x.engine_bytes or 0) / 2**30:.2f} GiB engine"
                        for x in readings))
            if self.engine is not None and not self.engine.alive() and not self.reported_exit:
                self.engine.wait_output(2)
                status = self.engine.poll()
                self.reported_exit = True
                self.say(f"attempt {self.attempt}: the engine exited (status {status})")
                self.report("exited", status=status, phase=self.engine.parser.phase.value,
                            lines=list(self.engine.lines)[-200:])
            time.sleep(POLL_SECONDS)


def _detail(r: httpx.Response) -> str:
    """Node 0's reason for a refusal: the JSON `detail` when the body is a JSON object that
    has one, else the body's text (a proxy's HTML page, or nothing), shortened."""
    try:
        body = r.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    text = str(detail) if detail not in (None, "") else r.text.strip()
    text = " ".join(text.split())
    return (text[:300] + "…" if len(text) > 300 else text) or f"HTTP {r.status_code}"


def run_worker(model: str, target: Target, cluster: ClusterOptions, control_port: int,
               log_dir: Path | None, console: Console, grace: float) -> int:
    """Follow node 0 until it stops the group; the exit status (or a LauncherError)."""
    if not control_port:
        raise InputError("--control-port 0 on a node of a multi-node engine",
                         fix="Give every node node 0's control port (the default 8001).")
    log_dir = log_dir or cache_dir() / "logs" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    w = Worker(model, target, cluster, control_port, log_dir, console, grace)
    try:
        with w.stop.captured():
            try:
                w.join()
                return w.follow()
            except Stopped as e:
                w.say(f"{e.signal_name} received: stopping")
                w.stop_engine()
                w.report("left", reason=f"{e.signal_name} on node {cluster.node_rank}")
                return e.exit_code
            except LauncherError as e:
                # A refusal (InputError, exit 2) as much as a failed engine (exit 4): node 0
                # is told this node left, so it need not wait out --lost-after.
                w.stop_engine()
                w.report("left", reason=e.message)
                raise
    finally:
        w.stop_engine()
        w.client.close()
