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

# "linear": a layer with recurrent state only (Gated DeltaNet, Mamba); "none": neither KV nor
# state (Nemotron-H's MLP-only layers). Which layers hold state is `ModelSpec.linear.layers`.
LayerKind = Literal["full", "sliding", "chunked", "linear", "none"]
StateKind = Literal["gdn", "mamba1", "mamba2"]


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
class SparseIndexer:
    """DeepSeek Sparse Attention's lightning indexer (DeepSeek V3.2, GLM-5 `glm_moe_dsa`).

    Besides the MLA latent, every layer that owns an indexer caches one key of `head_dim` per
    token in fp8 with one fp32 scale per 128 values (vLLM `DeepseekV32IndexerCache`: uint8,
    head_dim + head_dim // 128 × 4 bytes, one head, the same on every TP rank). `layers` are the
    layers that own one (vLLM skips it on layers `index_topk_freq` / `index_topk_pattern`
    mark as sharing an earlier layer's top-k)."""

    n_heads: int
    head_dim: int
    topk: int
    layers: tuple[int, ...]
    # The indexer's rope is NeoX-style unless `indexer_rope_interleave`; MLA's is not, so vLLM
    # builds a second cos/sin cache of the same size (get_rope caches by style).
    own_rope: bool = True

    @property
    def cache_bytes_per_token(self) -> int:
        """One layer's indexer key for one token (vLLM's quant block is 128 values)."""
        return self.head_dim + self.head_dim // 128 * 4


@dataclass(frozen=True)
class LinearState:
    """The per-sequence recurrent state of hybrid models (launcher/models/hybrid.py).

    The dims are what vLLM's `MambaStateShapeCalculator` takes: `gdn` (Qwen3-Next, Qwen3.5:
    `gated_delta_net_state_shape`), `mamba1` (Jamba: `mamba1_state_shape`), `mamba2` (Nemotron-H,
    Granite 4.0-H, Falcon-H1: `mamba2_state_shape`). `layers` are the layer indices that hold a
    state (Falcon-H1: every layer, beside its attention). `ssm_dtype` is the recurrent-state
    dtype the model's config class asks for when `--mamba-ssm-cache-dtype` is auto (Qwen3.5's
    `mamba_ssm_dtype`, Nemotron-H's `mamba_ssm_cache_dtype` or float32); None: the cache dtype."""

    kind: StateKind
    layers: tuple[int, ...]
    conv_kernel: int
    num_k_heads: int = 0  # gdn
    num_v_heads: int = 0  # gdn
    head_k_dim: int = 0  # gdn
    head_v_dim: int = 0  # gdn
    intermediate_size: int = 0  # mamba: the SSM's inner width (d_inner)
    d_state: int = 0  # mamba
    n_groups: int = 0  # mamba2
    num_heads: int = 0  # mamba2
    head_dim: int = 0  # mamba2
    dt_rank: int = 0  # mamba1 (weights only)
    conv_bias: bool = True  # weights only
    ssm_dtype: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class GlobalAttention:
    """Full-attention layers shaped unlike the sliding ones (Gemma 4: `global_head_dim`,
    `num_global_key_value_heads`; vLLM reads them per layer from `per_layer_config`).
    `k_eq_v` (`attention_k_eq_v`): the layer ships k_proj only and vLLM loads it into both K
    and V, so the cache still holds K and V but the checkpoint has no v_proj."""

    head_dim: int
    num_kv_heads: int
    k_eq_v: bool = False


@dataclass(frozen=True)
class PerLayerEmbedding:
    """Gemma 4's per-layer input embeddings (PLE): one `vocab_size × (layers × hidden_size)`
    table (a VocabParallelEmbedding in vLLM), a projection from the model width and a small
    gate and projection in every layer."""

    vocab_size: int
    hidden_size: int


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
    # config.json's own max_position_embeddings, before any rope scaling; max_position_embeddings
    # above is the context vLLM derives from it, which changed in 0.30 for YaRN
    # (memory/context.py). None: the two are the same.
    config_max_positions: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True
    moe: MoE | None = None
    mla: MLA | None = None
    # DeepSeek Sparse Attention: an indexer K cache beside the MLA latent (families.py).
    indexer: SparseIndexer | None = None
    # Gemma 4: the full layers' own attention shape, the last `kv_shared_layers` layers that
    # reuse an earlier layer's KV (and own no cache), per-layer input embeddings, and MLPs of
    # twice the width on the KV-shared layers (`use_double_wide_mlp`).
    global_attention: GlobalAttention | None = None
    kv_shared_layers: int = 0
    per_layer_embedding: PerLayerEmbedding | None = None
    double_wide_shared_mlp: bool = False
    # Multi-token-prediction layers in the checkpoint (num_nextn_predict_layers): vLLM loads
    # them only for MTP speculative decoding, so they are not in the weights by default.
    mtp_layers: int = 0
    # Hybrid models' recurrent state (Gated DeltaNet / Mamba layers), sized in memory/state.py.
    linear: LinearState | None = None
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
        if self.indexer is not None:
            object.__setattr__(self, "indexer", SparseIndexer(
                self.indexer.n_heads, self.indexer.head_dim, self.indexer.topk,
                tuple(self.indexer.layers), self.indexer.own_rope))

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
