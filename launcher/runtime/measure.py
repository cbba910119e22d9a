"""Measured memory per device once the engine serves: the side-effecting half of verify.

GPU: NVML per device — total used (everything on the GPU) and what this engine's processes
hold (per-process accounting, matched by pid). CPU: the proportional set size (PSS) of the
engine's process tree, so shared libraries count once, not once per process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import psutil

from launcher.hardware.inventory import GpuInfo
from launcher.hardware.nvml import RawProcess, RawSystem


@dataclass(frozen=True)
class DeviceReading:
    index: int
    total_bytes: int
    used_bytes: int  # everything on the device now (GPU: NVML used; CPU: node used)
    engine_bytes: int | None  # this engine's processes (None when the driver did not say)
    source: str

    def to_json(self) -> dict:
        return asdict(self)


def process_tree_pss(pids: Iterable[int]) -> tuple[int, dict[int, int]]:
    """(sum, per pid) of PSS; falls back to RSS where PSS is not readable."""
    per: dict[int, int] = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            try:
                per[pid] = int(p.memory_full_info().pss)
            except (psutil.AccessDenied, AttributeError):
                per[pid] = int(p.memory_info().rss)
        except psutil.Error:
            continue
    return sum(per.values()), per


def measure_cpu(pids: list[int], node: int = 0) -> list[DeviceReading]:
    from launcher.hardware.cpu import read_node_memory

    mem = read_node_memory(node)
    engine, _ = process_tree_pss(pids)
    return [DeviceReading(node, mem.total_bytes, mem.total_bytes - mem.available_bytes, engine,
                          f"PSS of {len(pids)} engine processes; node {mem.source}")]


def engine_bytes_on_gpu(processes: Iterable[RawProcess], pids: set[int]) -> int | None:
    """Sum of this engine's per-process GPU memory; None when the driver hid the figures."""
    used = [p.used_bytes for p in processes if p.pid in pids]
    if not used or None in used:
        return None
    return sum(int(n) for n in used if n is not None)


def readings_from_raw(raw: RawSystem, plan_gpus: Sequence[GpuInfo], pids: set[int]) -> list[DeviceReading]:
    """Match NVML devices to the plan's GPUs by UUID (else index) and read them. Pure."""
    by_uuid = {d.uuid: d for d in raw.devices if d.uuid}
    out = []
    for g in plan_gpus:
        d = by_uuid.get(g.uuid) if g.uuid else None
        if d is None and g.index < len(raw.devices):
            d = raw.devices[g.index]
        if d is None:
            continue
        # v2 memory info: used excludes the driver's reservation, as total − reserved does
        total = d.memory_total - (d.memory_reserved or 0)
        out.append(DeviceReading(g.index, total, d.memory_used,
                                 engine_bytes_on_gpu(d.processes, pids), "nvml"))
    return out


def measure_gpu(plan_gpus: Sequence[GpuInfo], pids: list[int]) -> list[DeviceReading]:
    from launcher.hardware.nvml import read_raw

    return readings_from_raw(read_raw(), plan_gpus, set(pids))
