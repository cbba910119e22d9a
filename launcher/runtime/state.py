"""What the control API serves: one thread-safe record the serve loop and the monitor update.

Everything stored here is already redacted (secrets replaced), so no endpoint can leak them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from launcher.redact import redact_obj
from launcher.runtime.live import EngineSample, SampleRing


class ServePhase(StrEnum):
    """Where `serve` stands, as /readyz, /metrics and the status page show it."""

    PLANNING = "planning"
    STARTING = "starting"
    LOADING = "loading"
    WARMING_UP = "warming_up"
    VERIFYING = "verifying"
    MEASURING_SPEED = "measuring_speed"
    SERVING = "serving"
    STEPPING_DOWN = "stepping_down"
    FAILED = "failed"
    STOPPED = "stopped"
    ENGINE_EXITED = "engine_exited"


@dataclass
class LiveDevice:
    index: int
    total_bytes: int
    limit_bytes: int
    used_bytes: int
    engine_bytes: int | None
    sampled_at: float
    holders: list[dict] = field(default_factory=list)  # who holds memory, largest first

    @property
    def headroom_bytes(self) -> int:
        return self.total_bytes - self.used_bytes

    @property
    def below_target(self) -> bool:
        return self.used_bytes > self.limit_bytes

    def to_json(self) -> dict:
        return {"index": self.index, "total_bytes": self.total_bytes,
                "limit_bytes": self.limit_bytes, "used_bytes": self.used_bytes,
                "engine_bytes": self.engine_bytes, "headroom_bytes": self.headroom_bytes,
                "headroom_fraction": round(self.headroom_bytes / self.total_bytes, 4),
                "below_target": self.below_target, "holders": self.holders,
                "sampled_at": self.sampled_at}


class ControlState:
    def __init__(self, secrets: list[str] | None = None,
                 inventory: Callable[[], dict] | None = None) -> None:
        self._lock = threading.Lock()
        self.secrets = list(secrets or [])
        self.inventory = inventory
        self.started_at = time.time()
        self.phase = ServePhase.PLANNING
        self.ready = False
        self.reason: str = ServePhase.PLANNING
        self.plan: dict | None = None
        self.report: dict | None = None
        self.settings: dict | None = None
        self.attempts = 0
        self.live: dict[int, LiveDevice] = {}
        self.violations: Counter[int] = Counter()
        self.samples = 0
        self.engine_live = SampleRing()  # the engine's own /metrics, for the status page
        self.cluster: Any = None  # node 0 of a multi-node engine: its Coordinator

    # ---- writers (serve loop, monitor) ------------------------------------------------
    def set_phase(self, phase: ServePhase, reason: str | None = None, ready: bool = False) -> None:
        with self._lock:
            self.phase = phase
            self.ready = ready
            self.reason = redact_obj(reason or phase, self.secrets)

    def set_plan(self, plan: dict, settings: dict | None = None) -> None:
        with self._lock:
            self.plan = redact_obj(plan, self.secrets)
            if settings is not None:
                self.settings = redact_obj(settings, self.secrets)

    def set_report(self, report: dict) -> None:
        with self._lock:
            self.report = redact_obj(report, self.secrets)
            self.attempts = len(report.get("attempts") or [])

    def record_live(self, devices: list[LiveDevice]) -> list[LiveDevice]:
        """Store a sample; returns the devices that fell below the headroom target now."""
        with self._lock:
            self.samples += 1
            newly = []
            for d in devices:
                if d.below_target:
                    self.violations[d.index] += 1
                    prev = self.live.get(d.index)
                    if prev is None or not prev.below_target:
                        newly.append(d)
                self.live[d.index] = d
            return newly

    def record_engine(self, samples: list[EngineSample]) -> None:
        with self._lock:
            self.engine_live.extend(samples)

    # ---- readers (API) ----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "phase": self.phase, "ready": self.ready, "reason": self.reason,
                "plan": self.plan, "report": self.report, "settings": self.settings,
                "attempts": self.attempts, "live": {i: d.to_json() for i, d in self.live.items()},
                "violations": dict(self.violations), "samples": self.samples,
                "engine_live": self.engine_live.to_json(),
                "uptime_seconds": round(time.time() - self.started_at, 1),
                "cluster": self.cluster.snapshot() if self.cluster is not None else None,
            }
