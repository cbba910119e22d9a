"""One GPU's memory budget: every component in bytes, the limit, and what is left for KV.

    other + runtime + weights + activation + cuda_graphs + kv_cache ≤ limit = ⌊(1 − h)·T⌋

The KV cache gets what the other components leave (`kv_budget`), the same arithmetic vLLM
applies to its own budget U·T (`memory.estimate`) and the planner to the headroom limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from launcher.memory.components import COMPONENTS, Component


@dataclass(frozen=True)
class GpuBudget:
    index: int
    name: str
    total_bytes: int
    limit_bytes: int
    planned: Mapping[Component, int]
    stage: int = 0
    replica: int = 0

    def __post_init__(self) -> None:
        missing = set(COMPONENTS) - set(self.planned)
        if missing:
            raise ValueError(f"budget of GPU {self.index} lacks {sorted(missing)}")
        object.__setattr__(self, "planned", MappingProxyType(dict(self.planned)))

    @property
    def planned_total(self) -> int:
        return sum(self.planned.values())

    @property
    def headroom_bytes(self) -> int:
        return self.total_bytes - self.planned_total

    @property
    def non_kv_bytes(self) -> int:
        return self.planned_total - self.planned[Component.KV_CACHE]

    @property
    def room_bytes(self) -> int:
        """What the limit leaves once everything but the KV cache is paid."""
        return kv_budget(self.limit_bytes, (v for k, v in self.planned.items()
                                            if k != Component.KV_CACHE))

    def with_kv(self, kv_cache_bytes: int) -> GpuBudget:
        return GpuBudget(self.index, self.name, self.total_bytes, self.limit_bytes,
                         {**self.planned, Component.KV_CACHE: kv_cache_bytes}, self.stage,
                         self.replica)

    def largest_component(self) -> Component:
        return max((c for c in COMPONENTS if c != Component.KV_CACHE),
                   key=lambda c: self.planned[c])

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "name": self.name, "total_bytes": self.total_bytes,
                "limit_bytes": self.limit_bytes,
                "planned": {str(c): self.planned[c] for c in COMPONENTS},
                "planned_total_bytes": self.planned_total,
                "headroom_bytes": self.headroom_bytes,
                "headroom_fraction": round(self.headroom_bytes / self.total_bytes, 4),
                "pipeline_stage": self.stage, "replica": self.replica}


def limit_bytes(total_bytes: int, headroom: float) -> int:
    return math.floor((1 - headroom) * total_bytes)


def kv_budget(budget_bytes: int, spent: Iterable[int]) -> int:
    """Bytes left for the KV cache under `budget_bytes` once the other components are paid
    (negative when they already exceed it). vLLM: U·T − weights − activation − non-torch
    (− graphs); the planner: the headroom limit − everything else on the GPU."""
    return budget_bytes - sum(spent)


def start_utilization(free_bytes: Iterable[tuple[int, int]], headroom: float) -> float:
    """Largest U (2 decimals) with free ≥ U·T on every GPU at start, capped at 1 − h.
    `free_bytes` holds (free at start, total) per GPU."""
    u = 1.0 - headroom
    for free, total in free_bytes:
        u = min(u, math.floor(free / total * 100) / 100)
    return round(u, 2)
