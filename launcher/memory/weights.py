"""Weight bytes held by each rank, following vLLM's sharding rules (DESIGN §3).

Tensor parallel splits attention, MLP, experts, embedding and LM head (vocab padded to a
multiple of 64); norms, routers and MLA's compressed projections are replicated; K/V
projections are replicated once TP exceeds the KV heads. Pipeline parallel gives each stage a
contiguous run of layers (vLLM's `get_pp_indices`: the remainder goes to the stages before the
last), the embedding to the first stage and the LM head to the last.
Besides parameters, vLLM allocates a rotary cos/sin cache per rope variant at load time; it is
part of "Model loading took", so it is part of the weights here.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from launcher.models.spec import ModelSpec, TensorInfo

# vLLM's DEFAULT_VOCAB_PADDING_SIZE (vocab_parallel_embedding.py): embedding and LM head rows.
VOCAB_PADDING = 64

_LAYER = re.compile(r"(?:layers|h|blocks|layer)\.(\d+)\.")
_VISION = ("vision", "visual", "image_", "multi_modal_projector", "mm_projector", "vit.",
           "patch_embed", "img_", "mm_input_projection", "mm_soft_emb")
_EMBED = ("embed_tokens", "wte.", "word_embeddings", "tok_embeddings", "embeddings.word")
_HEAD = ("lm_head", "embed_out", "output.weight")
_REPLICATED_2D = ("q_a_proj", "kv_a_proj_with_mqa", "mlp.gate.weight", "router",
                  "block_sparse_moe.gate.", "shared_expert_gate", "gate.e_score_correction",
                  ".indexer.",  # DeepSeek Sparse Attention's indexer: ReplicatedLinear / no TP
                  "per_layer_input_gate", "per_layer_projection.")  # Gemma 4 PLE, replicated
_FLOATS = {"F32", "F16", "BF16", "F64"}


@dataclass
class RankWeights:
    """Bytes one rank holds, by component, so the plan can show where memory goes."""

    by_component: dict[str, int] = field(default_factory=dict)

    def add(self, component: str, n: float) -> None:
        self.by_component[component] = self.by_component.get(component, 0) + int(n)

    @property
    def total(self) -> int:
        return sum(self.by_component.values())


def pp_layer_ranges(num_layers: int, pp: int) -> list[range]:
    """vLLM `get_pp_indices`: even split, the remainder to the stages before the last."""
    base = num_layers // pp
    sizes = [base] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    out, start = [], 0
    for s in sizes:
        out.append(range(start, start + s))
        start += s
    return out


def padded_vocab(vocab: int, tp: int = 1) -> int:
    """Rows of vLLM's embedding / LM head: padded to 64, then split evenly over TP ranks."""
    padded = math.ceil(vocab / VOCAB_PADDING) * VOCAB_PADDING
    return math.ceil(padded / tp) * tp


@functools.lru_cache(maxsize=65536)
def _component(name: str) -> str:
    low = name.lower()
    if any(k in low for k in _VISION):
        return "vision"
    if any(k in low for k in _EMBED):
        return "embedding"
    if any(k in low for k in _HEAD):
        return "lm_head"
    if ".experts." in low:
        return "experts"
    if "attn" in low or "attention" in low:
        return "attention"
    if "mlp" in low or "ffn" in low or "feed_forward" in low:
        return "mlp"
    return "other"


def _stored_bytes(t: TensorInfo, serve_size: int, online_bits: float | None, comp: str,
                  experts_only: bool = False) -> float:
    """Bytes of one tensor once vLLM has loaded it in the serving dtype (`experts_only`: the
    online method quantizes MoE experts only, e.g. int8_per_channel_weight_only)."""
    if t.dtype not in _FLOATS:
        return t.nbytes  # packed / quantized: kept as stored
    if t.name.endswith(("scale", "scale_inv", "_scale", "zeros", "e_score_correction_bias")):
        return t.nbytes  # quantization scales keep their own dtype
    quantizable = (len(t.shape) >= 2 and comp in (("experts",) if experts_only else
                                                  ("attention", "mlp", "experts"))
                   and not _is_replicated(t.name))
    if online_bits is not None and quantizable:
        # Online quantization: the weight plus a per-output-channel fp32 scale.
        return t.numel * online_bits / 8 + t.shape[0] * 4
    return t.numel * serve_size


@functools.lru_cache(maxsize=65536)
def _is_replicated(name: str) -> bool:
    return any(k in name for k in _REPLICATED_2D)


def weights_per_rank(spec: ModelSpec, tensors: Sequence[TensorInfo], *, tp: int, pp: int,
                     serve_size: int, online_quant_bits: float | None = None,
                     online_experts_only: bool = False) -> list[RankWeights]:
    """One `RankWeights` per pipeline stage (every TP rank of a stage holds the same bytes)."""
    stages = pp_layer_ranges(spec.num_layers, pp)
    stage_of_layer = {layer: s for s, r in enumerate(stages) for layer in r}
    result = [RankWeights() for _ in range(pp)]
    vocab_ratio = padded_vocab(spec.vocab_size, tp) / tp / spec.vocab_size
    kv_share = max(1, spec.num_kv_heads // tp) / spec.num_kv_heads if spec.num_kv_heads else 1 / tp

    for t in tensors:
        comp = _component(t.name)
        n = _stored_bytes(t, serve_size, online_quant_bits, comp, online_experts_only)
        if comp in ("embedding", "lm_head"):
            per_rank = n * vocab_ratio if len(t.shape) >= 1 and t.shape[0] == spec.vocab_size \
                else n / tp
            if comp == "embedding":
                result[0].add("embedding", per_rank)
                if spec.tie_word_embeddings and pp > 1:
                    result[-1].add("lm_head", per_rank)  # the last stage needs its own copy
            else:
                result[-1].add("lm_head", per_rank)
            continue
        layer = _layer_index(t.name)
        if comp == "vision" or layer is None:
            stage = 0 if comp == "vision" else (pp - 1 if "norm" in t.name else 0)
            if comp == "vision":
                result[stage].add("vision", n / tp)
            else:
                result[stage].add("norms" if len(t.shape) == 1 else comp, n)
            continue
        stage = stage_of_layer.get(layer, 0)
        if comp == "experts" and t.dtype == "U8" and spec.quantization is not None \
                and spec.quantization.method == "mxfp4":
            result[stage].add(comp, n / tp * mxfp4_padding(spec, tp))
        elif len(t.shape) == 1 and t.dtype in _FLOATS and "bias" not in t.name \
                and "sinks" not in t.name:
            result[stage].add("norms", n)
        elif _is_replicated(t.name):
            result[stage].add(comp, n)
        elif _is_kv_proj(t.name):
            result[stage].add(comp, n * kv_share)
        else:
            result[stage].add(comp, n / tp)
    rope = rope_cache_bytes(spec, serve_size)
    for r in result:
        if rope:
            r.add("rope_cache", rope)
    return result


@functools.lru_cache(maxsize=65536)
def _layer_index(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=65536)
def _is_kv_proj(name: str) -> bool:
    return re.search(r"\.(k_proj|v_proj)\.", name) is not None


def mxfp4_padding(spec: ModelSpec, tp: int) -> float:
    """Growth of MXFP4 experts in vLLM's Hopper Triton kernel format.

    `mxfp4_round_up_hidden_size_and_intermediate_size` (TRITON backend) pads the per-rank
    intermediate size to 64; the Hopper swizzle then lays the hidden dimension out in 256-wide
    tiles (the log shows the growth after "Peak GPU memory after loading weights").
    """
    assert spec.moe is not None
    inter = spec.moe.expert_intermediate_size / tp
    h = spec.hidden_size
    return (math.ceil(inter / 64) * 64 / inter) * (math.ceil(h / 256) * 256 / h)


def rope_cache_bytes(spec: ModelSpec, serve_size: int) -> int:
    """vLLM's RotaryEmbedding registers cos/sin for every position: (positions, rotary_dim).

    Scaled ropes size the cache by the scaled length: linear/dynamic multiply
    max_position_embeddings by the factor, YaRN multiplies the original length; Llama 3 and
    longrope keep max_position_embeddings. With two caches (Gemma 3), only the global one is
    scaled.
    """
    rot = spec.mla.qk_rope_head_dim if spec.mla is not None else (spec.rotary_dim or spec.head_dim)
    base = spec.max_position_embeddings
    scaled = base
    if spec.rope_factor and spec.rope_type in ("linear", "dynamic"):
        scaled = int(base * spec.rope_factor)
    elif spec.rope_factor and spec.rope_type in ("yarn", "deepseek_yarn") and spec.rope_original_max:
        scaled = int(spec.rope_original_max * spec.rope_factor)
    positions = base * (spec.rope_caches - 1) + scaled
    if spec.indexer is not None and spec.indexer.own_rope:
        positions += scaled  # DeepSeek Sparse Attention: the indexer's NeoX-style twin
    ga = spec.global_attention
    if ga is not None:
        # Gemma 4: one rope per layer type, each as wide as its heads (the full layers'
        # "proportional" rope keeps the whole global head width in its cache).
        kinds = set(spec.layer_kinds())
        widths = ([rot] if kinds - {"full"} else []) + ([ga.head_dim] if "full" in kinds else [])
        return base * sum(widths) * serve_size
    # gpt-oss builds its rope cache in float32 whatever the serving dtype (gpt_oss.py:113,
    # vLLM 0.32; checked against get_rope in tests/test_vllm_oracle.py).
    element = 4 if spec.model_type == "gpt_oss" else serve_size
    return positions * rot * element

