"""The planner's answer: one object a person can read and a program can launch.

`to_json()` is the documented schema (docs/plan-json.md): `decision` uses vLLM's own argument
names so it maps one to one onto the engine command, and every number carries its reason in
`decisions`; every configuration tried is in `candidates` with why it lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from launcher.planner.budget import Candidate, GpuBudget

SCHEMA = "launcher-plan/1"


@dataclass
class Decision:
    name: str
    value: object
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value, "reason": self.reason}


@dataclass
class Plan:
    feasible: bool
    model: dict
    engine_version: str
    engine_version_source: str
    request: dict
    headroom: float
    chosen: Candidate | None = None
    candidates: list[Candidate] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    unavailable: list[dict] = field(default_factory=list)  # weight options not tried, with why
    suggestions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reason: str = ""  # why nothing fits, when infeasible
    engine: dict = field(default_factory=dict)  # argv / env, filled by the engine adapter
    inventory_source: str = ""
    settings: dict = field(default_factory=dict)  # option → {value, source} (launcher.settings)

    @property
    def budgets(self) -> list[GpuBudget]:
        return self.chosen.budgets if self.chosen else []

    def decision(self) -> dict | None:
        c = self.chosen
        if c is None:
            return None
        return {
            "model": c.option.model_ref,
            "dtype": c.serve_dtype,
            "quantization": c.option.quantization_name,
            "kv_cache_dtype": c.kv_cache_dtype,
            "tensor_parallel_size": c.tp,
            "pipeline_parallel_size": c.pp,
            "data_parallel_size": c.dp,
            "max_model_len": c.max_model_len,
            "max_num_seqs": c.max_num_seqs,
            "max_num_batched_tokens": c.max_num_batched_tokens,
            "kv_cache_memory_bytes": c.kv_cache_memory_bytes,
            "gpu_memory_utilization": None if self.request.get("device") == "cpu"
            else c.gpu_memory_utilization,
            "enforce_eager": self.request.get("enforce_eager", False),
        }

    def capacity(self) -> dict | None:
        c = self.chosen
        if c is None:
            return None
        per = int(c.concurrency)
        return {
            "kv_tokens_per_replica": c.kv_tokens,
            "kv_tokens_total": c.kv_tokens * c.dp,
            "num_blocks": c.num_blocks,
            "block_size": c.geometry.block_size if c.geometry else None,
            "max_model_len": c.max_model_len,
            "full_length_sequences_per_replica": per,
            "full_length_sequences_total": per * c.dp,
            "concurrency_per_replica": round(c.concurrency, 2),
            "replicas": c.dp,
        }

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "feasible": self.feasible,
            "reason": self.reason or None,
            "model": self.model,
            "engine_version": self.engine_version,
            "engine_version_source": self.engine_version_source,
            "inventory_source": self.inventory_source,
            "request": self.request,
            "settings": self.settings or None,
            "device": self.request.get("device", "cuda"),
            "headroom": self.headroom,
            "decision": self.decision(),
            "weights": self.chosen.option.label if self.chosen else None,
            "gpus": [b.to_json() for b in self.budgets],
            "capacity": self.capacity(),
            "engine": self.engine or None,
            "decisions": [d.to_json() for d in self.decisions],
            "candidates": [c.to_json() for c in self.candidates],
            "unavailable": self.unavailable,
            "suggestions": self.suggestions,
            "notes": self.notes,
        }
