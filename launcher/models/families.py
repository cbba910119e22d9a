"""Model families whose memory needs more than the common config keys: read here, for config.py.

- DeepSeek Sparse Attention (DeepSeek V3.2 `deepseek_v32`, GLM-5 `glm_moe_dsa`): MLA plus a
  "lightning indexer" whose keys vLLM caches beside the latent. vLLM builds the indexer on a
  layer when the config has `index_topk` (vllm/models/deepseek_v32/attention.py and
  model_executor/models/deepseek_v2.py `is_v32 = hasattr(config, "index_topk")`), except on
  layers that reuse an earlier layer's top-k: `index_topk_pattern` ("S" = skip) when given,
  else every layer where max(i − index_skip_topk_offset + 1, 0) % index_topk_freq ≠ 0.
- Multi-token-prediction layers (`num_nextn_predict_layers`: DeepSeek V3/V3.2, GLM-4.5,
  Kimi K2, GLM-5): in the checkpoint, loaded by vLLM only for MTP speculative decoding.

- Gemma 4 (`gemma4`, `gemma4_text`): full-attention layers with their own head width and KV
  heads (transformers Gemma4TextConfig turns `global_head_dim`, default 512, and, with
  `attention_k_eq_v`, `num_global_key_value_heads` into `per_layer_config`, which vLLM's
  gemma4.py reads per layer); the last `num_kv_shared_layers` layers read the KV of the last
  earlier layer of their type (`kv_sharing_target_layer_name`) and own no cache; per-layer
  input embeddings (`hidden_size_per_layer_input`, default 256, > 0) and double-width MLPs on
  the shared layers (`use_double_wide_mlp`).

Every read goes through config.py's reader, so a broken value is a `ModelConfigError` naming
the key, like every other field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from launcher.errors import ModelConfigError
from launcher.models.fields import (
    MAX_COUNT,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_VOCAB,
    MAX_WIDTH,
    as_list,
    as_str,
)
from launcher.models.spec import (
    MLA,
    GlobalAttention,
    LayerKind,
    PerLayerEmbedding,
    SparseIndexer,
)

if TYPE_CHECKING:
    from launcher.models.config import _Reader

# vLLM's indexer quantizes keys in blocks of 128 values (`quant_block_size = 128`), each with
# one fp32 scale; a head width that is not a multiple of it is not a layout vLLM has.
INDEXER_QUANT_BLOCK = 128


# The indexer keys' class defaults of the DSA families' transformers config classes
# (DeepseekV32Config, GlmMoeDsaConfig in transformers 5.19): vLLM reads `index_topk` and the
# rest from the config object, so a config.json that leaves them out still gets an indexer.
DSA_CLASS_DEFAULTS: dict[str, dict[str, int]] = {
    "deepseek_v32": {"index_topk": 2048, "index_head_dim": 128, "index_n_heads": 64},
    "glm_moe_dsa": {"index_topk": 2048, "index_head_dim": 128, "index_n_heads": 32},
}


def _dsa_int(r: _Reader, field: str, hi: int) -> int | None:
    value = r.get_int(field, (field,), hi=hi)
    default = DSA_CLASS_DEFAULTS.get(r.model_type, {}).get(field)
    if value is None and default is not None:
        r.provenance[field] = f"family default for {r.model_type} (config class)"
        return default
    return value


def sparse_indexer(r: _Reader, num_layers: int, mla: MLA | None) -> SparseIndexer | None:
    """The DSA indexer of a config with `index_topk` (or a DSA family), else None."""
    topk = _dsa_int(r, "index_topk", MAX_POSITIONS)
    if topk is None:
        return None
    if mla is None:
        raise ModelConfigError(
            f"{r.origin}: {r.where('index_topk')} is set (DeepSeek Sparse Attention) but the "
            "config has no kv_lora_rank: vLLM's sparse indexer exists only beside MLA",
            fix="Use the model's complete config.json (kv_lora_rank, qk_rope_head_dim, ...).")
    if not mla.q_lora_rank:
        raise ModelConfigError(
            f"{r.origin}: {r.where('index_topk')} is set but q_lora_rank is not: vLLM's "
            "indexer projects its queries from the q LoRA (`assert q_lora_rank is not None`)",
            fix="Use the model's complete config.json.")
    head_dim = _dsa_int(r, "index_head_dim", MAX_WIDTH)
    n_heads = _dsa_int(r, "index_n_heads", MAX_COUNT)
    for field, value in (("index_head_dim", head_dim), ("index_n_heads", n_heads)):
        if value is None:
            raise ModelConfigError(
                f"{r.origin}: {r.where('index_topk')} is set but `{field}` is missing, so the "
                "sparse indexer's cache and weights are unknown",
                fix="Use the model's complete config.json.")
    assert head_dim is not None and n_heads is not None
    if head_dim % INDEXER_QUANT_BLOCK:
        raise ModelConfigError(
            f"{r.origin}: {r.where('index_head_dim')} is {head_dim}, not a multiple of "
            f"{INDEXER_QUANT_BLOCK}: vLLM's indexer cache stores fp8 keys with one scale per "
            f"{INDEXER_QUANT_BLOCK} values", fix="Correct config.json.")
    interleave = r.get_bool("indexer_rope_interleave", ("indexer_rope_interleave",))
    return SparseIndexer(n_heads=n_heads, head_dim=head_dim, topk=topk,
                         layers=_indexer_layers(r, num_layers), own_rope=not interleave)


def _indexer_layers(r: _Reader, n: int) -> tuple[int, ...]:
    """The layers that own an indexer (vLLM's `skip_topk` rule, see the module docstring)."""
    found = r.find("index_topk_pattern", ("index_topk_pattern",))
    if found is not None:
        pattern, path = as_list(*found, r.origin), found[1]
        marks = [as_str(m, f"{path}[{i}]", r.origin) for i, m in enumerate(pattern)]
        return tuple(i for i in range(n) if i >= len(marks) or marks[i] != "S")
    freq = r.get_int("index_topk_freq", ("index_topk_freq",), hi=MAX_LAYERS) or 1
    offset = r.get_int("index_skip_topk_offset", ("index_skip_topk_offset",), lo=0,
                       hi=MAX_LAYERS)
    offset = 2 if offset is None else offset
    return tuple(i for i in range(n) if max(i - offset + 1, 0) % freq == 0)


def mtp_layers(r: _Reader) -> int:
    """Multi-token-prediction layers the checkpoint carries (not loaded by default)."""
    return r.get_int("mtp_layers", ("num_nextn_predict_layers", "mtp_num_hidden_layers"),
                     lo=0, hi=MAX_LAYERS) or 0


GEMMA4 = ("gemma4", "gemma4_text")
# Gemma4TextConfig class defaults the published configs may leave out (transformers 5.19).
GEMMA4_GLOBAL_HEAD_DIM = 512
GEMMA4_PLE_WIDTH = 256
GEMMA4_PLE_VOCAB = 262_144


class Gemma4Layers(NamedTuple):
    global_attention: GlobalAttention | None = None
    kv_shared_layers: int = 0
    per_layer_embedding: PerLayerEmbedding | None = None
    double_wide_shared_mlp: bool = False


def gemma4_layers(r: _Reader, kinds: tuple[LayerKind, ...], num_layers: int, kv_heads: int,
                  head_dim: int) -> Gemma4Layers:
    """Gemma 4's per-layer-type attention shapes, KV sharing and per-layer embeddings."""
    if r.model_type not in GEMMA4:
        return Gemma4Layers()
    global_dim = r.get_int("global_head_dim", ("global_head_dim",), hi=MAX_WIDTH)
    if global_dim is None:
        r.provenance["global_head_dim"] = "family default for gemma4 (config class)"
        global_dim = GEMMA4_GLOBAL_HEAD_DIM
    k_eq_v = bool(r.get_bool("attention_k_eq_v", ("attention_k_eq_v",)))
    global_kv = r.get_int("num_global_key_value_heads", ("num_global_key_value_heads",),
                          hi=MAX_COUNT) if k_eq_v else None
    shared = r.get_int("kv_shared_layers", ("num_kv_shared_layers",), lo=0,
                       hi=MAX_LAYERS) or 0
    _check_kv_sharing(r, kinds, num_layers, shared)
    ple_width = r.get_int("per_layer_input", ("hidden_size_per_layer_input",), lo=0,
                          hi=MAX_WIDTH)
    if ple_width is None:
        r.provenance["per_layer_input"] = "family default for gemma4 (config class)"
        ple_width = GEMMA4_PLE_WIDTH
    ple = None
    if ple_width:
        vocab = r.get_int("per_layer_vocab", ("vocab_size_per_layer_input",), hi=MAX_VOCAB)
        ple = PerLayerEmbedding(vocab or GEMMA4_PLE_VOCAB, ple_width)
    wide = bool(r.get_bool("double_wide_mlp", ("use_double_wide_mlp",))) and shared > 0
    return Gemma4Layers(GlobalAttention(global_dim, global_kv or kv_heads, k_eq_v), shared,
                        ple, wide)


def _check_kv_sharing(r: _Reader, kinds: tuple[LayerKind, ...], n: int, shared: int) -> None:
    """vLLM points each shared layer at the last earlier non-shared layer of its type
    (gemma4.py `prev_layers[::-1].index(current_layer_type)`): that layer must exist."""
    if shared == 0:
        return
    if shared >= n:
        raise r.too_big("kv_shared_layers", shared, "num_layers", n,
                        "at least one layer must compute the KV the others share")
    layer_kinds = kinds or tuple("full" for _ in range(n))
    own = set(layer_kinds[:n - shared])
    for i in range(n - shared, n):
        if layer_kinds[i] not in own:
            raise ModelConfigError(
                f"{r.origin}: {r.where('kv_shared_layers')} is {shared}, so layer {i} "
                f"({layer_kinds[i]} attention) shares the KV of an earlier {layer_kinds[i]} "
                "layer, but none of the layers before the shared ones is of that type",
                fix="Correct num_kv_shared_layers or layer_types in config.json.")


# Architectures whose KV cache vLLM builds from layers the launcher does not model yet: sizing
# them as plain attention would be silently wrong, so they are refused by name.
UNMODELED: dict[str, str] = {
    "deepseek_v4": "DeepSeek-V4's compressed sparse attention (compress_ratios, a 128-token "
                   "sliding window and compressed-KV indexer caches; vllm/models/deepseek_v4)",
}


def refuse_unmodeled(r: _Reader) -> None:
    why = UNMODELED.get(r.model_type)
    if why is not None:
        raise ModelConfigError(
            f"{r.origin}: model_type {r.model_type!r} is not sized by this launcher yet: {why}",
            fix="Pass --kv-cache-memory-bytes and --gpu-memory-utilization to vLLM yourself, "
                "or plan a supported model.")
