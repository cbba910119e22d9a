"""The normalized model description every later stage consumes.

A `ModelSpec` is the same whatever the source (built-in profile, local directory, HF Hub):
the memory model never looks at raw config.json keys, only at these fields. Where a value came
from is kept in `provenance` (field → config key or "profile"/"derived"), and anything the
normalizer had to assume is listed in `assumptions` so the plan can show it (no silent fallbacks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Bytes per element of each safetensors / torch dtype name. Sub-byte formats are stored packed
# (U8/I8 containers) in checkpoints, so they never appear here as their own dtype.
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}

# torch_dtype strings in config.json → canonical vLLM dtype names.
TORCH_DTYPES: dict[str, str] = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
}

DTYPE_SIZE: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4}

LayerKind = Literal["full", "sliding", "chunked", "linear"]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint, as its safetensors header declares it (no data)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return int(self.numel * DTYPE_BYTES[self.dtype])


@dataclass(frozen=True)
class Quantization:
    """How the checkpoint's weights are stored, as read from `quantization_config`.

    `method` uses vLLM's names (fp8, compressed-tensors, awq, gptq, mxfp4, bitsandbytes,
    modelopt, ...). `weight_bits` is the stored width of quantized linear weights;
    `group_size` the scale group (None = per-channel / per-tensor).
    """

    method: str
    weight_bits: float
    group_size: int | None = None
    activation_bits: int | None = None
    scheme: str | None = None  # e.g. "w8a8-fp8", "w4a16", "nvfp4"


@dataclass(frozen=True)
class MoE:
    num_experts: int
    experts_per_token: int
    expert_intermediate_size: int
    shared_expert_intermediate_size: int = 0
    # Layers that are dense (no experts), e.g. DeepSeek's first_k_dense_replace.
    dense_layers: int = 0
    dense_intermediate_size: int = 0
    # Step between MoE layers (Llama 4 interleaves dense and MoE layers).
    moe_layer_step: int = 1


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention (DeepSeek V2/V3, Kimi): one compressed KV per token."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None


@dataclass(frozen=True)
class VisionTower:
    """A multimodal model's encoder, sized from its `vision_config` (or counted from tensors)."""

    params: int
    source: str  # "tensors" | "vision_config" | "profile"


@dataclass(frozen=True)
class ModelSpec:
    """Frozen: derive a variant with `dataclasses.replace(spec, ...)`.

    The sequence fields are tuples; a caller may pass lists (`replace(spec, assumptions=[...])`)
    and `__post_init__` turns them into tuples.
    """

    name: str
    source: str  # "profile:deepseek-67b", "local:/path", "hub:org/name"
    architecture: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str  # canonical: bfloat16 / float16 / float32
    tie_word_embeddings: bool = False
    layer_types: tuple[LayerKind, ...] = ()
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    rotary_dim: int | None = None
    # Distinct rope caches vLLM materializes (Gemma 3 has a local and a global one); the last
    # one carries the rope scaling, whose cache vLLM sizes by the scaled length.
    rope_caches: int = 1
    rope_type: str | None = None
    rope_factor: float | None = None
    rope_original_max: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True
    moe: MoE | None = None
    mla: MLA | None = None
    quantization: Quantization | None = None
    vision: VisionTower | None = None
    repo_id: str | None = None
    # Exact checkpoint tensors when headers were read; None when counted from architecture.
    tensors: tuple[TensorInfo, ...] | None = None
    param_count: int | None = None
    param_count_source: str = "architecture"
    provenance: dict[str, str] = field(default_factory=dict)
    assumptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen: the only way in is object.__setattr__, once, here.
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "assumptions", tuple(self.assumptions))
        object.__setattr__(self, "provenance", dict(self.provenance))
        if self.tensors is not None:
            object.__setattr__(self, "tensors", tuple(self.tensors))

    def layer_kinds(self) -> list[LayerKind]:
        return list(self.layer_types) if self.layer_types else ["full"] * self.num_layers

    def to_dict(self, *, with_tensors: bool = False) -> dict[str, Any]:
        """Plain JSON-ready data; the sequences are lists, as before the spec was frozen."""
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["assumptions"] = list(self.assumptions)
        if with_tensors:
            d["tensors"] = None if self.tensors is None else list(d["tensors"])
        else:
            d.pop("tensors")
            d["tensor_count"] = len(self.tensors) if self.tensors is not None else None
        return d
