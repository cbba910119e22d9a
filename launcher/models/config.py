"""config.json → ModelSpec, through one table of aliases.

Model families spell the same fact differently (`n_embd`, `d_model`, `hidden_size`; a multimodal
model nests its language model under `text_config`). Every field is looked up through `ALIASES`
and the key that supplied it is recorded in `spec.provenance`, so a surprising number can be
traced back to the file. Facts that are not in the file but follow from the model class (Gemma's
tied embeddings, Qwen2's q/k/v bias) come from `FAMILY_DEFAULTS` and are recorded the same way.
A value the normalizer cannot find and cannot derive is an error naming the file and the key.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import ModelConfigError
from launcher.models.quantization import parse_quantization
from launcher.models.spec import MLA, TORCH_DTYPES, LayerKind, ModelSpec, MoE
from launcher.models.vision import vision_tower_from_config

# Normalized field → config keys, first match wins.
ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "model_dim", "dim"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num",
                     "n_kv_heads"),
    "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size",
                          "d_ff"),
    "vocab_size": ("vocab_size", "padded_vocab_size", "n_vocab"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_seq_len",
                                "seq_length", "max_sequence_length", "model_max_length",
                                "seq_len"),
    "dtype": ("torch_dtype", "dtype"),
}

# Keys under which multimodal configs nest their language model.
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config", "thinker_config")

# Families whose config class defaults differ from transformers' PretrainedConfig.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": {"tie_word_embeddings": True, "head_dim": 256},
    "gemma2": {"tie_word_embeddings": True},
    # Gemma3TextConfig class defaults that the published minimal text_config relies on.
    "gemma3": {"tie_word_embeddings": True, "vocab_size": 262208, "num_attention_heads": 8,
               "num_kv_heads": 4, "head_dim": 256,
               "max_position_embeddings": 131072},
    "gemma3_text": {"tie_word_embeddings": True, "vocab_size": 262208, "num_attention_heads": 8,
               "num_kv_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072},
    "qwen2": {"attention_bias": True},
    "qwen2_moe": {"attention_bias": True},
    "qwen2_vl": {"attention_bias": True},
    "qwen2_5_vl": {"attention_bias": True},
    "phi": {"attention_bias": True, "mlp_bias": True, "gated_mlp": False},
    "gpt2": {"attention_bias": True, "mlp_bias": True, "gated_mlp": False},
    "gpt_bigcode": {"attention_bias": True, "mlp_bias": True, "gated_mlp": False},
    "starcoder2": {"attention_bias": True, "mlp_bias": True, "gated_mlp": False},
    "gpt_neox": {"attention_bias": True, "mlp_bias": True, "gated_mlp": False},
    "gpt_oss": {"attention_bias": True},
}

# Families that tie embeddings unless the file says otherwise (transformers' base default is
# True; most families override it to False in their config class).
_UNTIED_BY_DEFAULT = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
                      "phi", "phi3", "granite", "granitemoe", "deepseek_v2", "deepseek_v3",
                      "deepseek", "gpt_oss", "llama4", "llama4_text", "kimi_vl", "starcoder2",
                      "cohere", "olmo2", "internlm2", "mistral3", "llava", "exaone"}


class _Reader:
    """Key lookup over a config (and its text sub-config) that remembers where values came from."""

    def __init__(self, config: dict[str, Any], origin: str) -> None:
        self.top = config
        self.family: dict[str, Any] = {}
        self.text: dict[str, Any] = config
        self.prefix = ""
        for key in TEXT_CONFIG_KEYS:
            sub = config.get(key)
            if isinstance(sub, dict) and sub:
                self.text, self.prefix = sub, f"{key}."
                break
        self.origin = origin
        self.provenance: dict[str, str] = {}

    def get(self, field: str, keys: tuple[str, ...] | None = None, *, top_too: bool = True) -> Any:
        for key in keys or ALIASES.get(field, (field,)):
            if self.text.get(key) is not None:
                self.provenance[field] = self.prefix + key
                return self.text[key]
            if top_too and self.prefix and self.top.get(key) is not None:
                self.provenance[field] = key
                return self.top[key]
        return None

    def require_int(self, field: str) -> int:
        value = self.get(field)
        if value is None and field in self.family:
            value = self.family[field]
            self.provenance[field] = "family default (config class)"
        if value is None:
            keys = " / ".join(ALIASES.get(field, (field,)))
            raise ModelConfigError(
                f"{self.origin}: no `{keys}` field, so the model's {field.replace('_', ' ')} "
                "is unknown",
                fix="Use the model's complete config.json from its repository.",
                hint="launcher models   (built-in profiles that need no config.json)",
            )
        return _as_int(value, field, self.origin)


def _first_not_none(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _as_int(value: Any, field: str, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
        raise ModelConfigError(
            f"{origin}: field `{field}` is {value!r}, expected a non-negative integer",
            fix="Correct the field in config.json.",
        )
    return int(value)


def spec_from_config(config: dict[str, Any], *, name: str, source: str,
                     origin: str = "config.json") -> ModelSpec:
    """Normalize one config.json. `origin` names the file in error messages."""
    if not isinstance(config, dict):
        raise ModelConfigError(f"{origin}: expected a JSON object, got {type(config).__name__}",
                               fix="Use the model's config.json.")
    r = _Reader(config, origin)
    model_type = str(r.text.get("model_type") or config.get("model_type") or "unknown")
    archs = config.get("architectures") or r.text.get("architectures") or ["unknown"]
    family = FAMILY_DEFAULTS.get(model_type, {})
    r.family = family
    assumptions: list[str] = []

    hidden = r.require_int("hidden_size")
    layers = r.require_int("num_layers")
    heads = r.require_int("num_attention_heads")
    if heads == 0 or hidden == 0 or layers == 0:
        raise ModelConfigError(f"{origin}: hidden size, layers and heads must be positive",
                               fix="Correct config.json.")
    kv = r.get("num_kv_heads")
    if kv is None and "num_kv_heads" in family:
        kv = family["num_kv_heads"]
        r.provenance["num_kv_heads"] = f"family default for {model_type}"
    if kv is None:
        kv = 1 if r.text.get("multi_query") else heads
        r.provenance["num_kv_heads"] = "multi_query" if r.text.get("multi_query") else \
            "derived: = num_attention_heads (no num_key_value_heads: MHA)"
    kv = _as_int(kv, "num_key_value_heads", origin)
    head_dim = r.get("head_dim", ("head_dim", "attention_head_dim"))
    if head_dim is None and "head_dim" in family:
        head_dim = family["head_dim"]
        r.provenance["head_dim"] = f"family default for {model_type}"
    if head_dim is None:
        head_dim = hidden // heads
        r.provenance["head_dim"] = "derived: hidden_size / num_attention_heads"
    head_dim = _as_int(head_dim, "head_dim", origin)

    inter = r.get("intermediate_size")
    if inter is None:
        if model_type in ("gpt2", "gpt_bigcode", "phi"):
            inter = 4 * hidden
            r.provenance["intermediate_size"] = "derived: 4 × hidden_size"
        else:
            r.require_int("intermediate_size")
    inter = _as_int(inter, "intermediate_size", origin)
    vocab = r.require_int("vocab_size")
    max_pos = _derive_max_len(r, origin)

    dtype_raw = r.get("dtype")
    if dtype_raw is None:
        # vLLM serves a checkpoint without torch_dtype (float32 by transformers' default)
        # in bfloat16, so that is the width its weights take on the GPU.
        dtype = "bfloat16"
        assumptions.append(f"{origin}: no torch_dtype; vLLM's `--dtype auto` serves such "
                           "checkpoints in bfloat16")
        r.provenance["dtype"] = "default: bfloat16 (vLLM auto for float32/unspecified)"
    else:
        dtype = TORCH_DTYPES.get(str(dtype_raw).lower())
        if dtype == "float32":
            dtype = "bfloat16"
            r.provenance["dtype"] += " (float32 → bfloat16: vLLM auto dtype)"
        if dtype is None:
            raise ModelConfigError(
                f"{origin}: torch_dtype {dtype_raw!r} is not a dtype vLLM serves",
                fix="Use bfloat16, float16 or float32.")

    tie = r.get("tie_word_embeddings", ("tie_word_embeddings",))
    if tie is None:
        if "tie_word_embeddings" in family:
            tie = family["tie_word_embeddings"]
            r.provenance["tie_word_embeddings"] = f"family default for {model_type}"
        elif model_type in _UNTIED_BY_DEFAULT:
            tie = False
            r.provenance["tie_word_embeddings"] = f"family default for {model_type}"
        else:
            tie = True
            r.provenance["tie_word_embeddings"] = "transformers default (True)"
            assumptions.append(f"{origin}: tie_word_embeddings absent for model_type "
                               f"{model_type!r}; assumed tied (transformers' default)")

    spec = ModelSpec(
        name=name, source=source, architecture=str(archs[0]), model_type=model_type,
        hidden_size=hidden, num_layers=layers, num_attention_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
        max_position_embeddings=max_pos, dtype=dtype, tie_word_embeddings=bool(tie),
        attention_bias=bool(_first_not_none(
            r.get("attention_bias", ("attention_bias", "qkv_bias", "bias")),
            family.get("attention_bias", False))),
        mlp_bias=bool(r.get("mlp_bias", ("mlp_bias",)) or family.get("mlp_bias", False)),
        gated_mlp=family.get("gated_mlp", True),
        assumptions=assumptions,
    )
    spec.rotary_dim = _rotary_dim(r, head_dim)
    rope = r.get("rope_scaling", ("rope_scaling", "rope_parameters"))
    if isinstance(rope, dict) and rope.get("factor"):
        spec.rope_type = rope.get("rope_type") or rope.get("type")
        spec.rope_factor = float(rope["factor"])
        orig = rope.get("original_max_position_embeddings")
        spec.rope_original_max = int(orig) if orig else None
    _layer_pattern(spec, r)
    spec.moe = _moe(r, inter, layers, model_type, origin)
    spec.mla = _mla(r)
    spec.quantization = parse_quantization(
        config.get("quantization_config") or r.text.get("quantization_config")
        or config.get("compression_config"), origin)
    spec.vision = vision_tower_from_config(config)
    spec.provenance = r.provenance
    return spec


def _derive_max_len(r: _Reader, origin: str) -> int:
    """The context vLLM derives from the config: the position limit, scaled for yarn-style rope."""
    value = r.get("max_position_embeddings")
    if value is None and "max_position_embeddings" in r.family:
        value = r.family["max_position_embeddings"]
        r.provenance["max_position_embeddings"] = "family default (config class)"
    if value is None:
        raise ModelConfigError(
            f"{origin}: no max_position_embeddings / n_positions / max_seq_len / seq_length, "
            "so the model's maximum context is unknown",
            fix="Use the complete config.json, or pass --max-model-len explicitly.")
    max_len = _as_int(value, "max_position_embeddings", origin)
    rope = r.get("rope_scaling", ("rope_scaling", "rope_parameters")) or {}
    # vLLM skips rope scaling of the derived length for Gemma 3.
    if isinstance(rope, dict) and not str(r.text.get("model_type", "")).startswith("gemma3"):
        rope_type = rope.get("rope_type") or rope.get("type")
        factor = rope.get("factor")
        # vLLM scales the derived length by the rope factor except for these types, whose
        # max_position_embeddings already states the extended length.
        if factor and rope_type not in (None, "default", "su", "longrope", "llama3", "mrope"):
            original = rope.get("original_max_position_embeddings")
            if rope_type == "yarn" and original:
                max_len = int(original)
            max_len = int(max_len * float(factor))
            r.provenance["max_position_embeddings"] += f" × rope_scaling.factor ({rope_type})"
    return max_len


def _rotary_dim(r: _Reader, head_dim: int) -> int | None:
    frac = r.get("partial_rotary_factor", ("partial_rotary_factor",))
    if frac:
        return int(head_dim * float(frac))
    rot = r.get("rotary_dim", ("rotary_dim", "rotary_emb_base_dim"))
    return int(rot) if rot else head_dim


def _layer_pattern(spec: ModelSpec, r: _Reader) -> None:
    """Which layers use sliding-window or chunked attention (vLLM's hybrid KV allocator)."""
    n = spec.num_layers
    window = r.get("sliding_window", ("sliding_window",))
    types = r.get("layer_types", ("layer_types",))
    kinds: list[LayerKind] | None = None
    if isinstance(types, list) and len(types) == n:
        mapping = {"sliding_attention": "sliding", "full_attention": "full",
                   "chunked_attention": "chunked", "linear_attention": "linear"}
        kinds = [mapping.get(t, "full") for t in types]  # type: ignore[misc]
        r.provenance["layer_types"] = r.prefix + "layer_types"
    elif window and spec.model_type in ("gemma2",):
        kinds = ["sliding" if i % 2 == 0 else "full" for i in range(n)]
        r.provenance["layer_types"] = "gemma2: even layers slide"
    elif window and spec.model_type in ("gemma3", "gemma3_text"):
        pattern = int(r.get("sliding_window_pattern", ("sliding_window_pattern",)) or 6)
        kinds = ["full" if (i + 1) % pattern == 0 else "sliding" for i in range(n)]
        r.provenance["layer_types"] = f"gemma3: every {pattern}th layer is global"
    elif window and spec.model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if r.get("use_sliding_window", ("use_sliding_window",)):
            start = int(r.get("max_window_layers", ("max_window_layers",)) or n)
            kinds = ["full" if i < start else "sliding" for i in range(n)]
        else:
            window = None
    elif window and spec.model_type in ("mistral", "phi3", "mixtral", "starcoder2"):
        kinds = ["sliding"] * n
        r.provenance["layer_types"] = "sliding_window set: every layer slides"
    chunk = r.get("attention_chunk_size", ("attention_chunk_size",))
    if chunk and spec.model_type in ("llama4", "llama4_text"):
        no_rope = r.get("no_rope_layers", ("no_rope_layers",))
        if not (isinstance(no_rope, list) and len(no_rope) == n):
            interval = int(r.get("no_rope_layer_interval", ("no_rope_layer_interval",)) or 4)
            no_rope = [int((i + 1) % interval != 0) for i in range(n)]
        # no_rope_layers[i] == 1 means the layer uses RoPE, and RoPE layers attend in chunks.
        kinds = ["chunked" if flag else "full" for flag in no_rope]
        spec.attention_chunk_size = int(chunk)
        r.provenance["layer_types"] = "llama4: RoPE layers use chunked attention"
    if kinds is not None:
        spec.layer_types = kinds
        if any(k == "sliding" for k in kinds):
            if not window:
                raise ModelConfigError(
                    f"{r.origin}: layer_types has sliding layers but sliding_window is not set",
                    fix="Add sliding_window to config.json.")
            spec.sliding_window = int(window)
    if spec.model_type in ("gemma3", "gemma3_text"):
        spec.rope_caches = 2  # local and global rope bases


def _moe(r: _Reader, inter: int, layers: int, model_type: str, origin: str) -> MoE | None:
    experts = r.get("num_experts", ("num_local_experts", "num_experts", "n_routed_experts",
                                    "moe_num_experts"))
    if not experts:
        return None
    top_k = r.get("experts_per_token", ("num_experts_per_tok", "experts_per_token",
                                        "moe_top_k", "num_experts_per_token"))
    if not top_k:
        raise ModelConfigError(f"{origin}: MoE model without num_experts_per_tok",
                               fix="Use the model's complete config.json.")
    expert_inter = r.get("moe_intermediate_size", ("moe_intermediate_size",)) or inter
    shared = r.get("shared_expert_intermediate_size", ("shared_expert_intermediate_size",)) or 0
    n_shared = r.get("n_shared_experts", ("n_shared_experts", "num_shared_experts")) or 0
    if n_shared and not shared:
        shared = int(n_shared) * int(expert_inter)
    dense_layers = int(r.get("first_k_dense_replace", ("first_k_dense_replace",)) or 0)
    step = int(r.get("moe_layer_step", ("interleave_moe_layer_step", "decoder_sparse_step",
                                        "moe_layer_freq")) or 1)
    dense_inter = r.get("dense_intermediate", ("intermediate_size_mlp",)) or inter
    if model_type in ("llama4", "llama4_text"):
        # Llama 4: intermediate_size is the expert width, intermediate_size_mlp the dense one;
        # each MoE layer also has one shared expert of the expert width.
        shared = shared or int(expert_inter)
    return MoE(num_experts=int(experts), experts_per_token=int(top_k),
               expert_intermediate_size=int(expert_inter),
               shared_expert_intermediate_size=int(shared), dense_layers=dense_layers,
               dense_intermediate_size=int(dense_inter), moe_layer_step=max(1, step))


def _mla(r: _Reader) -> MLA | None:
    rank = r.get("kv_lora_rank", ("kv_lora_rank",))
    if not rank:
        return None
    return MLA(kv_lora_rank=int(rank),
               qk_rope_head_dim=int(r.get("qk_rope_head_dim", ("qk_rope_head_dim",)) or 64),
               qk_nope_head_dim=int(r.get("qk_nope_head_dim", ("qk_nope_head_dim",)) or 128),
               v_head_dim=int(r.get("v_head_dim", ("v_head_dim",)) or 128),
               q_lora_rank=r.get("q_lora_rank", ("q_lora_rank",)))
