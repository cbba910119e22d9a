"""Planned vs measured, once the engine serves and has been warmed up. Pure.

Hard rules (a failure steps the plan down): every device stays under its limit
`(1 − headroom) · total`; the engine's KV capacity and `max_model_len` are what the plan said.
Component figures the engine logs (weights, KV cache, CUDA graphs) and the engine's total
memory are compared too; a component off by more than the tolerance is reported ("off"), and
only fails the verdict through the hard rules. The engine's total is held to the plan more
tightly on the side that matters: above its planned total by more than
`ENGINE_OVERSHOOT_TOLERANCE` (or `COMPONENT_SLACK`) it is off even while the device stays
under its limit, because the memory model came in short there; the boot store records that
overshoot and the next plan on this host reserves it (`launcher.calibration.boots`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from launcher.engines.vllm_log import LogFigures
from launcher.memory.calibration import Device
from launcher.memory.components import Component
from launcher.planner.plan import Plan
from launcher.runtime.measure import DeviceReading
from launcher.units import GiB, MiB, fmt_gib

COMPONENT_TOLERANCE = 0.10  # relative
COMPONENT_SLACK = 64 * MiB  # absolute, for tiny components
ENGINE_OVERSHOOT_TOLERANCE = 0.01  # relative: the engine above its planned total


class CheckName(StrEnum):
    """What a check compares. Device checks are named "device N <what>" in the report."""

    WEIGHTS = "weights"
    KV_CACHE = "kv_cache"
    CUDA_GRAPHS = "cuda_graphs"
    KV_CACHE_TOKENS = "kv_cache_tokens"
    NUM_BLOCKS = "num_blocks"
    MAX_MODEL_LEN = "max_model_len"
    DEVICE_LIMIT = "used ≤ limit"
    DEVICE_ENGINE = "engine memory"


# The engine did not take the plan's numbers (another version, a flag it ignored): more
# reserve would not make it.
CAPACITY_CHECKS = frozenset({CheckName.KV_CACHE_TOKENS, CheckName.NUM_BLOCKS,
                             CheckName.MAX_MODEL_LEN})


@dataclass
class Check:
    what: CheckName
    planned: float | int | None
    measured: float | int | None
    ok: bool
    hard: bool
    detail: str
    device: int | None = None  # the device index of a per-device check

    @property
    def name(self) -> str:
        return self.what if self.device is None else f"device {self.device} {self.what}"

    def to_json(self) -> dict:
        return {"name": self.name, "planned": self.planned, "measured": self.measured,
                "ok": self.ok, "hard": self.hard, "detail": self.detail}


@dataclass
class Verification:
    ok: bool
    checks: list[Check] = field(default_factory=list)
    devices: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.hard and not c.ok]

    @property
    def off(self) -> list[Check]:
        """Soft checks that disagree with the plan: shown, learned from, not failed."""
        return [c for c in self.checks if not c.hard and not c.ok]

    @property
    def engine_overshoot_bytes(self) -> int:
        """How far the engine went past its planned total on the worst device (0 if not)."""
        return max((d["engine_measured_bytes"] - d["engine_planned_bytes"]
                    for d in self.devices if d["engine_measured_bytes"] is not None),
                   default=0)

    @property
    def overshoot_bytes(self) -> int:
        """How far the worst device went past its limit (0 if none did)."""
        return max((d["used_bytes"] - d["limit_bytes"] for d in self.devices), default=0)

    def to_json(self) -> dict:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks],
                "devices": self.devices,
                "failures": [c.name for c in self.failures],
                "off": [c.name for c in self.off],
                "engine_overshoot_bytes": max(0, self.engine_overshoot_bytes)}


def _near(planned: float, measured: float) -> bool:
    return abs(measured - planned) <= max(COMPONENT_TOLERANCE * planned, COMPONENT_SLACK)


def verify(plan: Plan, readings: list[DeviceReading], figures: LogFigures,
           served_max_model_len: int | None, cache_info: dict[str, str]) -> Verification:
    c = plan.chosen
    assert c is not None, "only a feasible plan is launched"
    cpu = plan.device == Device.CPU
    v = Verification(ok=True)
    worst = max(c.budgets, key=lambda b: b.planned[Component.WEIGHTS])

    # components the engine's own log reports
    gib = figures.model_loading_gib
    if gib is not None:
        v.checks.append(_component(CheckName.WEIGHTS, worst.planned[Component.WEIGHTS], gib * GiB,
                                   "engine log: Model loading took"))
    kv_gib = figures.explicit_kv_cache_gib or figures.available_kv_cache_gib
    if kv_gib is not None:
        v.checks.append(_component(CheckName.KV_CACHE, c.kv_cache_memory_bytes, kv_gib * GiB,
                                   "engine log: KV cache memory"))
    if figures.graph_capture_gib is not None:
        v.checks.append(_component(CheckName.CUDA_GRAPHS, worst.planned[Component.CUDA_GRAPHS],
                                   figures.graph_capture_gib * GiB,
                                   "engine log: Graph capturing took"))
    # capacity: the engine's KV tokens and blocks, and the context it serves
    block = c.geometry.block_size if c.geometry else 16
    groups = c.geometry.num_groups if c.geometry else 1
    if figures.kv_cache_tokens is not None:
        ok = abs(figures.kv_cache_tokens - c.kv_tokens) <= max(block * groups,
                                                                 0.01 * c.kv_tokens)
        v.checks.append(Check(CheckName.KV_CACHE_TOKENS, c.kv_tokens, figures.kv_cache_tokens, ok, True,
                              "engine log: KV cache size N tokens"))
    if cache_info.get("num_gpu_blocks"):
        # the API server sums the blocks of every data-parallel engine (vllm/v1/engine/
        # core_client.py, "Sum num_gpu_blocks from all engines in DP case", 0.32)
        blocks, planned = int(cache_info["num_gpu_blocks"]), c.num_blocks * c.dp
        ok = abs(blocks - planned) <= max(groups * c.dp, 0.01 * planned)
        v.checks.append(Check(CheckName.NUM_BLOCKS, planned, blocks, ok, True,
                              "/metrics vllm:cache_config_info num_gpu_blocks"))
    if served_max_model_len is not None:
        v.checks.append(Check(CheckName.MAX_MODEL_LEN, c.max_model_len, served_max_model_len,
                              served_max_model_len == c.max_model_len, True,
                              "/v1/models max_model_len"))
    # memory per device: the hard rule
    by_index = {r.index: r for r in readings}
    for b in c.budgets:
        r = by_index.get(b.index)
        if r is None:
            v.checks.append(Check(CheckName.DEVICE_LIMIT, b.limit_bytes, None, False, True,
                                  "no reading for this device", device=b.index))
            continue
        engine_planned = b.planned_total - b.planned[Component.OTHER]
        # On the CPU the node's "used" moves with page cache and every other process; what
        # this launcher answers for is the memory others held at plan time plus its engine.
        used = (b.planned[Component.OTHER] + r.engine_bytes) if cpu and r.engine_bytes is not None \
            else r.used_bytes
        dev = {"index": b.index, "total_bytes": b.total_bytes, "limit_bytes": b.limit_bytes,
               "planned_bytes": b.planned_total, "used_bytes": used,
               "device_used_bytes": r.used_bytes, "engine_planned_bytes": engine_planned,
               "engine_measured_bytes": r.engine_bytes, "source": r.source,
               "headroom_fraction": round(1 - used / b.total_bytes, 4)}
        v.devices.append(dev)
        v.checks.append(Check(
            CheckName.DEVICE_LIMIT, b.limit_bytes, used, used <= b.limit_bytes, True,
            f"{fmt_gib(used)} used of {fmt_gib(b.total_bytes)}; limit "
            f"{fmt_gib(b.limit_bytes)} ({dev['headroom_fraction']:.1%} free)", device=b.index))
        if r.engine_bytes is not None:
            v.checks.append(_engine(engine_planned, r.engine_bytes, r.source, b.index))
    v.ok = not v.failures
    return v


def _component(what: CheckName, planned: float, measured: float, source: str,
               device: int | None = None) -> Check:
    ok = _near(planned, measured)
    diff = measured - planned
    return Check(what, int(planned), int(measured), ok, False,
                 f"{source}: planned {fmt_gib(planned, 3)}, measured {fmt_gib(measured, 3)} "
                 f"({'+' if diff >= 0 else ''}{fmt_gib(diff, 3)})", device=device)


def _engine(planned: int, measured: int, source: str, device: int) -> Check:
    """The engine's total: off when it is more than a sliver over the plan (the memory model
    came in short: the next plan learns it), or as far under as any component may be."""
    check = _component(CheckName.DEVICE_ENGINE, planned, measured, source, device=device)
    over = measured - planned
    if over > max(ENGINE_OVERSHOOT_TOLERANCE * planned, COMPONENT_SLACK):
        check.ok = False
        check.detail += (f"; {over / planned:+.1%} over the plan: the memory model came in "
                         "short (a verified start records it; the next plan on this host "
                         "reserves it)")
    return check
