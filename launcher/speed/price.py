"""A GPU-hour price as the plan carries it: data only, so the pure planner can hold one.

The price file is read and checked at the edge (`launcher.prices`); the planner and the speed
figures (`usd_per_million_tokens`) only see this record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    gpu: str  # catalog name
    usd_per_gpu_hour: float
    date: str  # ISO date the price was read
    source: str  # where (URL or provider page)
