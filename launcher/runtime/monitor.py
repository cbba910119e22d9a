"""Headroom watched live while serving, not only at verification.

Every few seconds: NVML per GPU (or the CPU node's memory and the engine's PSS), compared with
the limit. When a device's free memory falls below the target, the launcher says so once —
naming who holds the memory, this engine or which other process — and the control API's
`/readyz` and `/metrics` show it until it recovers.

The same loop reads the engine's own /metrics (requests running and waiting, KV cache in use,
tokens generated) into the state's ring buffer, which the status page draws over the last
minutes. An engine whose /metrics cannot be read is said once, until it can be again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psutil

from launcher.hardware.inventory import GpuInfo
from launcher.hardware.nvml import RawProcess
from launcher.memory.calibration import Device
from launcher.runtime.live import EngineSample
from launcher.runtime.state import ControlState, LiveDevice
from launcher.runtime.supervisor import EngineProcess
from launcher.units import fmt_gib


def cpu_holders(engine_pids: set[int], top: int = 3) -> list[dict]:
    """The largest resident processes on the host, this engine's summed as one."""
    engine = 0
    others: list[dict] = []
    for p in psutil.process_iter(["pid", "name", "memory_info"]):
        try:
            rss = p.info["memory_info"].rss
        except (psutil.Error, AttributeError):
            continue
        if p.pid in engine_pids:
            engine += rss
        else:
            others.append({"who": f"pid {p.pid} ({p.info['name']})", "bytes": rss,
                           "engine": False})
    out = [{"who": "this engine", "bytes": engine, "engine": True}, *others]
    return sorted(out, key=lambda h: -h["bytes"])[:top]


def gpu_holders(processes: Iterable[RawProcess], engine_pids: set[int],
                top: int = 3) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in processes:
        ours = p.pid in engine_pids
        out.append({"who": "this engine" if ours else f"pid {p.pid} ({p.name or '?'})",
                    "bytes": p.used_bytes, "engine": ours})
    return sorted(out, key=lambda h: -(h["bytes"] or 0))[:top]


class HeadroomMonitor:
    def __init__(self, state: ControlState, sample: Callable[[], list[LiveDevice]],
                 warn: Callable[[str], None], interval: float = 5.0,
                 engine: Callable[[], EngineSample] | None = None) -> None:
        self.state = state
        self.sample = sample
        self.engine = engine
        self._engine_failing = False
        self.warn = warn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headroom-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                devices = self.sample()
            except Exception as e:  # a failed reading must not end monitoring
                self.warn(f"headroom monitor: reading failed: {type(e).__name__}: {e}")
                devices = []
            for d in self.state.record_live(devices):
                who = ", ".join(f"{h['who']} {fmt_gib(h['bytes'])}" if h["bytes"] is not None
                                else h["who"] for h in d.holders) or "unknown"
                self.warn(f"device {d.index}: {fmt_gib(d.headroom_bytes)} free of "
                          f"{fmt_gib(d.total_bytes)}, below the headroom target "
                          f"(limit {fmt_gib(d.limit_bytes)} used); held by {who}")
            self._sample_engine()
            self._stop.wait(self.interval)

    def _sample_engine(self) -> None:
        if self.engine is None:
            return
        try:
            self.state.record_engine([self.engine()])
        except Exception as e:  # the engine's page is outside input: say so, keep watching
            if not self._engine_failing:
                self.warn(f"engine /metrics: reading failed: {type(e).__name__}: {e}")
            self._engine_failing = True
        else:
            self._engine_failing = False


def sampler(engine: EngineProcess, device: Device, gpus: Sequence[GpuInfo],
            limits: Mapping[int, int]) -> Callable[[], list[LiveDevice]]:
    """A function that reads every planned device now (`limits`: device index → limit)."""

    def cpu() -> list[LiveDevice]:
        from launcher.runtime.measure import measure_cpu

        pids = engine.pids()
        readings = measure_cpu(pids)
        now = time.time()
        holders = cpu_holders(set(pids))
        return [LiveDevice(r.index, r.total_bytes, limits.get(r.index, r.total_bytes),
                           r.used_bytes, r.engine_bytes, now, holders) for r in readings]

    def gpu() -> list[LiveDevice]:
        from launcher.hardware.nvml import read_raw
        from launcher.runtime.measure import readings_from_raw

        pids = set(engine.pids())
        raw = read_raw()
        now = time.time()
        out = []
        for g in gpus:
            readings = readings_from_raw(raw, [g], pids)
            if not readings:
                continue  # the GPU is gone from NVML: the next sample will say more
            r = readings[0]
            d = next((x for x in raw.devices if g.uuid and x.uuid == g.uuid), None) or \
                raw.devices[g.index]
            out.append(LiveDevice(r.index, r.total_bytes, limits.get(r.index, r.total_bytes),
                                  r.used_bytes, r.engine_bytes, now,
                                  gpu_holders(d.processes, pids)))
        return out

    return cpu if device == Device.CPU else gpu
