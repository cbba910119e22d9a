"""Planned vs measured, once the engine serves and has been warmed up. Pure.

Hard rules (a failure steps the plan down): every device stays under its limit
`(1 − headroom) · total`; the engine's KV capacity and `max_model_len` are what the plan said.
Component figures the engine logs (weights, KV cache, CUDA graphs) and the engine's total
resident memory are compared too; a component off by more than the tolerance is reported,
and only fails the verdict through the hard rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from launcher.engines.vllm_log import LogFigures
from launcher.planner.plan import Plan
from launcher.runtime.measure import DeviceReading
from launcher.units import GiB, MiB

COMPONENT_TOLERANCE = 0.10  # relative
COMPONENT_SLACK = 64 * MiB  # absolute, for tiny components


@dataclass
class Check:
    name: str
    planned: float | int | None
    measured: float | int | None
    ok: bool
    hard: bool
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Verification:
    ok: bool
    checks: list[Check] = field(default_factory=list)
    devices: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.hard and not c.ok]

    @property
    def overshoot_bytes(self) -> int:
        """How far the worst device went past its limit (0 if none did)."""
        return max((d["used_bytes"] - d["limit_bytes"] for d in self.devices), default=0)

    def to_json(self) -> dict:
        return {"ok": self.ok, "checks": [c.to_json() for c in self.checks],
                "devices": self.devices,
                "failures": [c.name for c in self.failures]}


def _near(planned: float, measured: float) -> bool:
    return abs(measured - planned) <= max(COMPONENT_TOLERANCE * planned, COMPONENT_SLACK)


def verify(plan: Plan, readings: list[DeviceReading], figures: LogFigures,
           served_max_model_len: int | None, cache_info: dict[str, str]) -> Verification:
    c = plan.chosen
    assert c is not None, "only a feasible plan is launched"
    cpu = plan.request.get("device") == "cpu"
    v = Verification(ok=True)
    worst = max(c.budgets, key=lambda b: b.planned["weights"])

    # components the engine's own log reports
    gib = figures.model_loading_gib
    if gib is not None:
        v.checks.append(_component("weights", worst.planned["weights"], gib * GiB,
                                   "engine log: Model loading took"))
    kv_gib = figures.explicit_kv_cache_gib or figures.available_kv_cache_gib
    if kv_gib is not None:
        v.checks.append(_component("kv_cache", c.kv_cache_memory_bytes, kv_gib * GiB,
                                   "engine log: KV cache memory"))
    if figures.graph_capture_gib is not None:
        v.checks.append(_component("cuda_graphs", worst.planned["cuda_graphs"],
                                   figures.graph_capture_gib * GiB,
                                   "engine log: Graph capturing took"))
    # capacity: the engine's KV tokens and blocks, and the context it serves
    block = c.geometry.block_size if c.geometry else 16
    groups = c.geometry.num_groups if c.geometry else 1
    if figures.kv_cache_tokens is not None:
        ok = abs(figures.kv_cache_tokens - c.kv_tokens) <= max(block * groups,
                                                                 0.01 * c.kv_tokens)
        v.checks.append(Check("kv_cache_tokens", c.kv_tokens, figures.kv_cache_tokens, ok, True,
                              "engine log: KV cache size N tokens"))
    if cache_info.get("num_gpu_blocks"):
        blocks = int(cache_info["num_gpu_blocks"])
        ok = abs(blocks - c.num_blocks) <= max(groups, 0.01 * c.num_blocks)
        v.checks.append(Check("num_blocks", c.num_blocks, blocks, ok, True,
                              "/metrics vllm:cache_config_info num_gpu_blocks"))
    if served_max_model_len is not None:
        v.checks.append(Check("max_model_len", c.max_model_len, served_max_model_len,
                              served_max_model_len == c.max_model_len, True,
                              "/v1/models max_model_len"))
    # memory per device: the hard rule
    by_index = {r.index: r for r in readings}
    for b in c.budgets:
        r = by_index.get(b.index)
        if r is None:
            v.checks.append(Check(f"device {b.index}", b.planned_total, None, False, True,
                                  "no reading for this device"))
            continue
        engine_planned = b.planned_total - b.planned["other"]
        # On the CPU the node's "used" moves with page cache and every other process; what
        # this launcher answers for is the memory others held at plan time plus its engine.
        used = (b.planned["other"] + r.engine_bytes) if cpu and r.engine_bytes is not None \
            else r.used_bytes
        dev = {"index": b.index, "total_bytes": b.total_bytes, "limit_bytes": b.limit_bytes,
               "planned_bytes": b.planned_total, "used_bytes": used,
               "device_used_bytes": r.used_bytes, "engine_planned_bytes": engine_planned,
               "engine_measured_bytes": r.engine_bytes, "source": r.source,
               "headroom_fraction": round(1 - used / b.total_bytes, 4)}
        v.devices.append(dev)
        v.checks.append(Check(
            f"device {b.index} used ≤ limit", b.limit_bytes, used, used <= b.limit_bytes, True,
            f"{used / GiB:.2f} GiB used of {b.total_bytes / GiB:.2f} GiB; limit "
            f"{b.limit_bytes / GiB:.2f} GiB ({dev['headroom_fraction']:.1%} free)"))
        if r.engine_bytes is not None:
            v.checks.append(_component(f"device {b.index} engine memory", engine_planned,
                                       r.engine_bytes, r.source))
    v.ok = not v.failures
    return v


def _component(name: str, planned: float, measured: float, source: str) -> Check:
    ok = _near(planned, measured)
    diff = measured - planned
    return Check(name, int(planned), int(measured), ok, False,
                 f"{source}: planned {planned / GiB:.3f} GiB, measured {measured / GiB:.3f} GiB "
                 f"({'+' if diff >= 0 else ''}{diff / GiB:.3f} GiB)")
