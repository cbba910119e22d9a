"""The launch report: the plan, every attempt with its outcome, measured vs planned (memory and
speed), verdict.

Written atomically (temporary file + rename) after every attempt, so a reader never sees a
half-written file and a crash still leaves the attempts so far.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from launcher.redact import redact_obj
from launcher.runtime.state import ControlState

SCHEMA = "launcher-report/1"


class Outcome(StrEnum):
    """How one attempt ended."""

    PENDING = "pending"
    SERVED = "served"
    START_FAILED = "start_failed"
    VERIFICATION_FAILED = "verification_failed"
    ENGINE_EXITED = "engine_exited"
    STOPPED = "stopped"


class Verdict(StrEnum):
    """How the whole run stands (the report's `verdict`)."""

    PENDING = "pending"
    SERVING = "serving"
    DOES_NOT_FIT = "does_not_fit"
    FAILED_TO_START = "failed_to_start"
    VERIFICATION_FAILED = "verification_failed"
    ENGINE_EXITED = "engine_exited"
    STOPPED = "stopped"
    ERROR = "error"  # a LauncherError before or between attempts


@dataclass
class Attempt:
    number: int
    plan: dict
    command: dict | None = None
    log_file: str | None = None
    engine_pid: int | None = None  # also the engine's process group id
    engine_pids: list[int] = field(default_factory=list)  # the tree when measured
    outcome: Outcome = Outcome.PENDING
    failure: dict | None = None
    phases: dict[str, float] = field(default_factory=dict)  # phase → seconds since start
    ready_seconds: float | None = None
    figures: dict | None = None
    warmup: dict | None = None
    warmup_seconds: float | None = None
    verification: dict | None = None
    verification_seconds: float | None = None
    measured: list[dict] = field(default_factory=list)
    next_step: str | None = None
    boot: dict | None = None  # what the boot store recorded of a verified start (or why not)
    speed: dict | None = None  # measured speed under load, beside the plan's prediction
    speed_seconds: float | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(
        timespec="seconds"))

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Report:
    model: str
    attempts: list[Attempt] = field(default_factory=list)
    verdict: Verdict = Verdict.PENDING
    exit_code: int | None = None
    base_url: str | None = None
    served_model_name: str | None = None
    stopped_by: str | None = None
    plan: dict | None = None  # the latest plan, also when it was never launched (does not fit)
    error: dict | None = None  # a LauncherError that ended the run before or between attempts
    secrets: list[str] = field(default_factory=list)  # replaced in everything written

    @property
    def final(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def to_json(self) -> dict:
        final = self.final
        return redact_obj({
            "schema": SCHEMA, "model": self.model, "verdict": self.verdict,
            "exit_code": self.exit_code, "error": self.error, "stopped_by": self.stopped_by,
            "base_url": self.base_url, "served_model_name": self.served_model_name,
            "plan": self.plan if self.plan is not None else (final.plan if final else None),
            "attempts": [a.to_json() for a in self.attempts]}, self.secrets)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class ReportWriter:
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
