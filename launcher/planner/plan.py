"""The planner's answer: one frozen object a person can read and a program can launch.

`Plan.to_json()` is the documented schema (`docs/plan-json.md`, generated from
`launcher.planner.schema`): `decision` uses vLLM's own argument names so it maps one to one
onto the engine command, and every number carries its reason in `decisions`; every
configuration tried is in `candidates` with why it lost. The runtime reads the typed
attributes; JSON is only for the edges (CLI `--json`, report, control API).
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from launcher.memory.budget import GpuBudget
from launcher.memory.calibration import Device
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import Candidate
from launcher.planner.options import Unavailable
from launcher.planner.request import PlanRequest
from launcher.speed.price import Price

SCHEMA = "launcher-plan/1"


@dataclass(frozen=True)
class Explanation:
    """One decision and why, in numbers (`decisions` in the JSON)."""

    name: str
    value: object
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "reason": self.reason}


@dataclass(frozen=True)
class ModelInfo:
    """What the plan says about the model (a summary of its `ModelSpec`)."""

    name: str
    source: str
    model_ref: str | None
    architecture: str
    max_position_embeddings: int
    dtype: str
    params: int | None
    layers: int
    attention_heads: int
    kv_heads: int
    vocab_size: int
    mla: bool
    moe: bool

    @classmethod
    def of(cls, spec: ModelSpec, model_ref: str | None) -> ModelInfo:
        return cls(name=spec.name, source=spec.source, model_ref=model_ref,
                   architecture=spec.architecture,
                   max_position_embeddings=spec.max_position_embeddings, dtype=spec.dtype,
                   params=spec.param_count, layers=spec.num_layers,
                   attention_heads=spec.num_attention_heads, kv_heads=spec.num_kv_heads,
                   vocab_size=spec.vocab_size, mla=spec.mla is not None,
                   moe=spec.moe is not None)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LaunchDecision:
    """The engine's arguments, under vLLM's own names."""

    model: str | None
    dtype: str
    quantization: str | None
    kv_cache_dtype: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_memory_bytes: int
    gpu_memory_utilization: float | None  # None on the CPU backend (not passed)
    enforce_eager: bool
    # Nodes the engine runs on and the devices it uses on each (vLLM --nnodes; the per-node
    # commands come from launcher.engines.multinode). 1 and TP×PP×DP on one machine.
    nnodes: int = 1
    gpus_per_node: int = 1

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Capacity:
    kv_tokens_per_replica: int
    kv_tokens_total: int
    num_blocks: int
    block_size: int | None
    max_model_len: int
    full_length_sequences_per_replica: int
    full_length_sequences_total: int
    concurrency_per_replica: float
    replicas: int
    # Hybrid models (Gated DeltaNet / Mamba): what one sequence's recurrent state takes on a GPU
    # (every state layer, before vLLM pads it to a page), and the sequences of max_model_len
    # held at once; None for attention-only models, whose capacity is a token count.
    state_bytes_per_sequence: int | None = None
    concurrent_sequences_per_replica: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Inherited variables that would override the planned numbers: on the CPU backend
# VLLM_CPU_KVCACHE_SPACE replaces --kv-cache-memory-bytes (platforms/cpu.py).
# LAUNCHER_API_TOKEN guards the launcher's API; the engine has no use for it.
UNSET = ("VLLM_CPU_KVCACHE_SPACE", "LAUNCHER_API_TOKEN")


@dataclass(frozen=True)
class EngineCommand:
    """The exact process the plan launches (built by `launcher.engines.vllm`)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # set on top of the launcher's env
    unset: tuple[str, ...] = UNSET  # removed from it

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in base.items() if k not in self.unset}
        env.update(self.env)
        return env

    def shell(self) -> str:
        env = " ".join([*(f"-u {k}" for k in self.unset),
                        *(f"{k}={shlex.quote(v)}" for k, v in self.env.items())])
        return "env " + env + " " + shlex.join(self.argv)

    def flag(self, name: str) -> str | None:
        """The value the command gives `name` (`--flag value` or `--flag=value`), or None."""
        for i, a in enumerate(self.argv):
            if a == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None

    def to_json(self) -> dict[str, object]:
        return {"argv": list(self.argv), "env": dict(self.env), "unset": list(self.unset),
                "shell": self.shell()}


@dataclass(frozen=True)
class Plan:
    feasible: bool
    model: ModelInfo
    engine_version: str
    engine_version_source: str
    request: PlanRequest
    chosen: Candidate | None = None
    candidates: tuple[Candidate, ...] = ()
    decisions: tuple[Explanation, ...] = ()
    unavailable: tuple[Unavailable, ...] = ()  # weight options not tried, with why
    suggestions: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    reason: str = ""  # why nothing fits, when infeasible
    engine: EngineCommand | None = None  # set by the engine adapter
    inventory_source: str = ""
    settings: Mapping[str, Any] | None = None  # option → {value, source} (launcher.settings)
    price: Price | None = None  # --price-file's entry for the GPU type planned on

    @property
    def device(self) -> Device:
        return self.request.device

    @property
    def headroom(self) -> float:
        return self.request.headroom

    @property
    def budgets(self) -> tuple[GpuBudget, ...]:
        return self.chosen.budgets if self.chosen else ()

    @property
    def decision(self) -> LaunchDecision | None:
        c = self.chosen
        if c is None:
            return None
        return LaunchDecision(
            model=c.option.model_ref, dtype=c.serve_dtype,
            quantization=c.option.quantization_name, kv_cache_dtype=c.kv_cache_dtype,
            tensor_parallel_size=c.tp, pipeline_parallel_size=c.pp, data_parallel_size=c.dp,
            max_model_len=c.max_model_len, max_num_seqs=c.max_num_seqs,
            max_num_batched_tokens=c.max_num_batched_tokens,
            kv_cache_memory_bytes=c.kv_cache_memory_bytes,
            gpu_memory_utilization=None if self.device == Device.CPU
            else c.gpu_memory_utilization,
            enforce_eager=self.request.enforce_eager,
            nnodes=len({g.node for g in c.gpus}) or 1,
            gpus_per_node=max(Counter(g.node for g in c.gpus).values(), default=1))

    def nodes(self) -> list[dict[str, object]]:
        """Per node, the GPUs the plan uses there (global and node-local indices) and the
        replicas and pipeline stages they run: what each node's command needs."""
        c = self.chosen
        if c is None:
            return []
        n = c.gpus_per_replica
        out: dict[int, dict[str, Any]] = {}
        # global index = the node's offset + its CUDA index (node 0 starts at 0; a multi-node
        # plan uses every GPU of every other node, so its lowest index is the offset)
        offset = {k: 0 if k == 0 else min(g.index for g in c.gpus if g.node == k)
                  for k in {g.node for g in c.gpus}}
        for i, g in enumerate(c.gpus):
            e = out.setdefault(g.node, {"node": g.node, "gpus": [], "local_gpus": [],
                                        "replicas": [], "pipeline_stages": []})
            e["gpus"].append(g.index)
            e["local_gpus"].append(g.index - offset[g.node])
            for key, v in (("replicas", i // n), ("pipeline_stages", (i % n) // c.tp)):
                if v not in e[key]:
                    e[key].append(v)
        return [out[k] for k in sorted(out)]

    @property
    def capacity(self) -> Capacity | None:
        c = self.chosen
        if c is None:
            return None
        per = int(c.concurrency)
        linear = c.option.spec.linear
        state = c.geometry.state_page_bytes * len(linear.layers) \
            if linear is not None and c.geometry is not None else None
        return Capacity(
            kv_tokens_per_replica=c.kv_tokens, kv_tokens_total=c.kv_tokens * c.dp,
            num_blocks=c.num_blocks, block_size=c.geometry.block_size if c.geometry else None,
            max_model_len=c.max_model_len, full_length_sequences_per_replica=per,
            full_length_sequences_total=per * c.dp,
            concurrency_per_replica=round(c.concurrency, 2), replicas=c.dp,
            state_bytes_per_sequence=state,
            concurrent_sequences_per_replica=per if state is not None else None)

    def cost(self) -> dict[str, object] | None:
        """What the GPUs the plan uses cost, from the price file (null without a price)."""
        c, price = self.chosen, self.price
        if c is None or price is None:
            return None
        gpus = c.tp * c.pp * c.dp
        p = c.predicted
        return {"usd_per_gpu_hour": price.usd_per_gpu_hour, "gpus": gpus,
                "usd_per_hour": round(price.usd_per_gpu_hour * gpus, 4),
                "usd_per_million_tokens": None if p is None
                else round(p.usd_per_million_tokens(price.usd_per_gpu_hour), 4),
                "price_date": price.date, "price_source": price.source}

    def with_engine(self, engine: EngineCommand) -> Plan:
        return replace(self, engine=engine)

    def with_settings(self, settings: Mapping[str, Any] | None) -> Plan:
        return replace(self, settings=settings)

    def to_json(self) -> dict[str, Any]:
        decision, capacity = self.decision, self.capacity
        return {
            "schema": SCHEMA,
            "feasible": self.feasible,
            "reason": self.reason or None,
            "model": self.model.to_json(),
            "engine_version": self.engine_version,
            "engine_version_source": self.engine_version_source,
            "inventory_source": self.inventory_source,
            "request": self.request.to_json(),
            "settings": dict(self.settings) if self.settings else None,
            "device": str(self.device),
            "headroom": self.headroom,
            "decision": decision.to_json() if decision else None,
            "nodes": self.nodes(),
            "weights": self.chosen.option.label if self.chosen else None,
            "gpus": [b.to_json() for b in self.budgets],
            "capacity": capacity.to_json() if capacity else None,
            "predicted": self.chosen.predicted.to_json()
            if self.chosen and self.chosen.predicted else None,
            "cost": self.cost(),
            "engine": self.engine.to_json() if self.engine else None,
            "decisions": [d.to_json() for d in self.decisions],
            "candidates": [c.to_json() for c in self.candidates],
            "unavailable": [asdict(u) for u in self.unavailable],
            "suggestions": list(self.suggestions),
            "notes": list(self.notes),
        }
