"""A planned configuration as the speed model reads it (from a planner `Candidate`).

The planner sizes memory; the speed model needs the same numbers in its own terms: bits per
weight as served, KV bytes per token on one GPU, batch limits and KV capacity of a replica.
Pure; reads the candidate's attributes (no import of the planner, which may import this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launcher.memory.weights import pp_layer_ranges
from launcher.models.spec import ModelSpec
from launcher.speed.workload import Workload

# Bits per weight of in-flight 4-bit NF4 (bitsandbytes): 4 + one fp32 absmax per 64 weights,
# (the nested quantization of the absmax left out).
NF4_BITS = 4.5


@dataclass(frozen=True)
class ServingShape:
    tp: int
    pp: int
    dp: int
    weight_bits: float
    kv_bytes_per_token: int  # on one GPU, over its stage's attention layers
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_capacity_tokens: int  # per replica
    max_model_len: int
    kv_cache_dtype: str
    weights: str  # what people read: "bf16", "fp8 W8A8 (online)", …
    state_bytes_per_sequence: int = 0  # recurrent state of one sequence on one GPU (hybrids)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def weight_bits(option: Any) -> float:
    """Bits per linear weight of a planner `WeightOption` as the engine serves it."""
    q = option.spec.quantization
    if q is not None:
        return float(q.weight_bits)
    if option.key == "fp8":
        return 8.0
    if option.key == "bitsandbytes":
        return NF4_BITS
    return 32.0 if option.spec.dtype == "float32" else 16.0


def stage_layers(spec: ModelSpec, pp: int, layers: frozenset[int]) -> int:
    """The most of `layers` any one pipeline stage holds (vLLM's split, memory/weights.py)."""
    return max(sum(1 for i in r if i in layers) for r in pp_layer_ranges(spec.num_layers, pp))


def attention_layers(spec: ModelSpec) -> frozenset[int]:
    """Layers that attend over the context (and so read a KV cache each step): every kind but
    "linear" (Gated DeltaNet / Mamba: a fixed state instead) and "none" (MLP only). Gemma 4's
    KV-shared layers count: they read their target's KV."""
    return frozenset(i for i, k in enumerate(spec.layer_kinds()) if k not in ("linear", "none"))


def kv_read_bytes_per_token(spec: ModelSpec, pp: int, bytes_per_token_layer: int) -> int:
    """KV bytes one context token costs a decode step on one GPU: one attention layer's page
    per token (memory/kv.py `KvGeometry.bytes_per_token_layer`, the figure the memory model
    sizes the cache with) × the attention layers of the fullest stage."""
    return bytes_per_token_layer * stage_layers(spec, pp, attention_layers(spec))


def state_read_bytes_per_sequence(spec: ModelSpec, pp: int, state_page_bytes: int) -> int:
    """Recurrent state one running sequence holds on one GPU: one layer's state page
    (memory/state.py `state_page_bytes`, via `KvGeometry.state_page_bytes`) × the state
    layers of the fullest stage. 0 for models without recurrent state."""
    if spec.linear is None or not state_page_bytes:
        return 0
    return state_page_bytes * stage_layers(spec, pp, frozenset(spec.linear.layers))


def shape_of(candidate: Any) -> ServingShape:
    """The speed model's inputs of a sized planner `Candidate`."""
    c = candidate
    tokens = max(1, int(c.kv_tokens))
    spec, geo = c.option.spec, c.geometry
    per_layer = geo.bytes_per_token_layer if geo is not None else 0
    page = geo.state_page_bytes if geo is not None else 0
    return ServingShape(tp=c.tp, pp=c.pp, dp=c.dp, weight_bits=weight_bits(c.option),
                        kv_bytes_per_token=kv_read_bytes_per_token(spec, c.pp, per_layer),
                        max_num_seqs=c.max_num_seqs,
                        max_num_batched_tokens=c.max_num_batched_tokens,
                        kv_capacity_tokens=tokens, max_model_len=c.max_model_len,
                        kv_cache_dtype=c.kv_cache_dtype, weights=c.option.label,
                        state_bytes_per_sequence=state_read_bytes_per_sequence(spec, c.pp, page))


def fits_context(workload: Workload, max_model_len: int) -> bool:
    return workload.input_len + workload.output_len <= max_model_len
