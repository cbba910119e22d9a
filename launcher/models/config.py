"""config.json → ModelSpec, through one table of aliases.

Model families spell the same fact differently (`n_embd`, `d_model`, `hidden_size`; a multimodal
model nests its language model under `text_config`). Every field is looked up through `ALIASES`
and the key that supplied it is recorded in `spec.provenance`, so a surprising number can be
traced back to the file. Facts that are not in the file but follow from the model class (Gemma's
tied embeddings, Qwen2's q/k/v bias) come from `FAMILY_DEFAULTS` and are recorded the same way.
A value the normalizer cannot find and cannot derive is an error naming the file and the key.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from launcher.errors import ModelConfigError
from launcher.models import families
from launcher.models.fields import (
    MAX_COUNT,
    MAX_FFN,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_ROPE_FACTOR,
    MAX_VOCAB,
    MAX_WIDTH,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_list,
    as_str,
    layer_list,
)
from launcher.models.hybrid import hybrid_layers
from launcher.models.quantization import parse_quantization
from launcher.models.spec import MLA, TORCH_DTYPES, LayerKind, ModelSpec, MoE, Quantization
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
    # Gemma4TextConfig class defaults (transformers 5.19); layer shapes in families.py.
    "gemma4": {"tie_word_embeddings": True, "vocab_size": 262144, "num_attention_heads": 8,
               "num_kv_heads": 4, "head_dim": 256, "max_position_embeddings": 131072},
    "gemma4_text": {"tie_word_embeddings": True, "vocab_size": 262144,
                    "num_attention_heads": 8, "num_kv_heads": 4, "head_dim": 256,
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
    "nemotron_h": {"gated_mlp": False},  # relu² MLP: up and down projections only
    # Glm4MoeConfig's class default; vLLM glm4_moe.py:280 also sets it when absent.
    "glm4_moe": {"partial_rotary_factor": 0.5},
}

# Families that tie embeddings unless the file says otherwise (transformers' base default is
# True; most families override it to False in their config class).
_UNTIED_BY_DEFAULT = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
                      "phi", "phi3", "granite", "granitemoe", "deepseek_v2", "deepseek_v3",
                      "deepseek", "gpt_oss", "llama4", "llama4_text", "kimi_vl", "starcoder2",
                      "cohere", "olmo2", "internlm2", "mistral3", "llava", "exaone"}

# model_type → the architectures (vLLM class names) this module reads as vLLM does: every
# fixture in tests/data/configs and every built-in profile is listed (a test checks). Any other
# model_type is read through transformers' config class, or is an error naming the closest of
# these architectures (launcher/models/transformers_config.py).
KNOWN_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "llama": ("LlamaForCausalLM",), "mistral": ("MistralForCausalLM",),
    "mixtral": ("MixtralForCausalLM",), "qwen2": ("Qwen2ForCausalLM",),
    "qwen2_moe": ("Qwen2MoeForCausalLM",), "qwen3": ("Qwen3ForCausalLM",),
    "qwen3_moe": ("Qwen3MoeForCausalLM",), "qwen3_next": ("Qwen3NextForCausalLM",),
    "qwen3_5": ("Qwen3_5ForConditionalGeneration",), "qwen3_5_text": ("Qwen3_5ForCausalLM",),
    "qwen3_5_moe": ("Qwen3_5MoeForConditionalGeneration",),
    "qwen3_5_moe_text": ("Qwen3_5MoeForCausalLM",),
    "qwen3_vl_moe": ("Qwen3VLMoeForConditionalGeneration",),
    "qwen3_vl_moe_text": ("Qwen3VLMoeForConditionalGeneration",),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration",),
    "qwen3_vl_text": ("Qwen3VLForConditionalGeneration",),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration",),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration",),
    "gemma": ("GemmaForCausalLM",), "gemma2": ("Gemma2ForCausalLM",),
    "gemma3": ("Gemma3ForConditionalGeneration",), "gemma3_text": ("Gemma3ForCausalLM",),
    "gemma4": ("Gemma4ForConditionalGeneration",), "gemma4_text": ("Gemma4ForCausalLM",),
    "phi": ("PhiForCausalLM",), "phi3": ("Phi3ForCausalLM",),
    "granite": ("GraniteForCausalLM",), "granitemoe": ("GraniteMoeForCausalLM",),
    "granitemoehybrid": ("GraniteMoeHybridForCausalLM",),
    "deepseek": ("DeepseekForCausalLM",), "deepseek_v2": ("DeepseekV2ForCausalLM",),
    "deepseek_v3": ("DeepseekV3ForCausalLM",), "deepseek_v32": ("DeepseekV32ForCausalLM",),
    "kimi_k2": ("DeepseekV3ForCausalLM",), "kimi_vl": ("KimiVLForConditionalGeneration",),
    "glm4_moe": ("Glm4MoeForCausalLM",), "glm_moe_dsa": ("GlmMoeDsaForCausalLM",),
    "minimax_m2": ("MiniMaxM2ForCausalLM",), "gpt_oss": ("GptOssForCausalLM",),
    "llama4": ("Llama4ForConditionalGeneration",), "llama4_text": ("Llama4ForCausalLM",),
    "mistral3": ("Mistral3ForConditionalGeneration",), "llava": ("LlavaForConditionalGeneration",),
    "jamba": ("JambaForCausalLM",), "falcon_h1": ("FalconH1ForCausalLM",),
    "nemotron_h": ("NemotronHForCausalLM",), "gpt2": ("GPT2LMHeadModel",),
    "gpt_bigcode": ("GPTBigCodeForCausalLM",), "gpt_neox": ("GPTNeoXForCausalLM",),
    "starcoder2": ("Starcoder2ForCausalLM",), "cohere": ("CohereForCausalLM",),
    "olmo2": ("Olmo2ForCausalLM",), "internlm2": ("InternLM2ForCausalLM",),
    "exaone": ("ExaoneForCausalLM",),
}


def known_model_type(model_type: str) -> bool:
    """Whether this module's tables read `model_type` (else transformers' class is asked)."""
    return (model_type in KNOWN_ARCHITECTURES or model_type in FAMILY_DEFAULTS
            or model_type in _UNTIED_BY_DEFAULT)


_LAYER_KINDS: dict[str, LayerKind] = {
    "sliding_attention": "sliding", "full_attention": "full", "chunked_attention": "chunked",
    "linear_attention": "linear"}
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_top_k", "num_experts_per_token",
               "top_k_experts")
_LLAMA4 = ("llama4", "llama4_text")
_GEMMA3 = ("gemma3", "gemma3_text")


class _Reader:
    """Key lookup over a config (and its text sub-config) that remembers where values came from.

    The typed getters return None for an absent key and raise a `ModelConfigError` naming the
    key for a value of the wrong type or outside its plausible range.
    """

    def __init__(self, config: dict[str, Any], origin: str) -> None:
        self.top = config
        self.origin = origin
        self.text, self.prefix = _text_config(config, origin)
        self.model_type = _model_type(self.top, self.text, self.prefix, origin)
        self.family: dict[str, Any] = FAMILY_DEFAULTS.get(self.model_type, {})
        self.provenance: dict[str, str] = {}

    def peek(self, keys: tuple[str, ...]) -> tuple[Any, str] | None:
        """(value, its path in the file) of the first key set, text config first; unrecorded."""
        for key in keys:
            if self.text.get(key) is not None:
                return self.text[key], self.prefix + key
            if self.prefix and self.top.get(key) is not None:
                return self.top[key], key
        return None

    def find(self, field: str, keys: tuple[str, ...] | None = None) -> tuple[Any, str] | None:
        found = self.peek(keys or ALIASES.get(field, (field,)))
        if found is not None:
            self.provenance[field] = found[1]
        return found

    def get_int(self, field: str, keys: tuple[str, ...] | None = None, *, lo: int = 1,
                hi: int) -> int | None:
        found = self.find(field, keys)
        return None if found is None else as_int(*found, self.origin, lo=lo, hi=hi)

    def get_float(self, field: str, keys: tuple[str, ...], *, lo: float, hi: float
                  ) -> float | None:
        found = self.find(field, keys)
        return None if found is None else as_float(*found, self.origin, lo=lo, hi=hi)

    def get_bool(self, field: str, keys: tuple[str, ...] | None = None) -> bool | None:
        found = self.find(field, keys)
        return None if found is None else as_bool(*found, self.origin)

    def require_int(self, field: str, *, hi: int, lo: int = 1) -> int:
        """A size the model cannot do without: from the file, else the family's class default."""
        found = self.find(field)
        if found is not None:
            return as_int(*found, self.origin, lo=lo, hi=hi)
        if field in self.family:
            self.provenance[field] = "family default (config class)"
            return int(self.family[field])
        raise self.missing(field)

    def missing(self, field: str, *, fix: str = "Use the model's complete config.json from its "
                "repository.") -> ModelConfigError:
        keys = " / ".join(ALIASES.get(field, (field,)))
        where = f" in {self.prefix[:-1]} or at the top level" if self.prefix else ""
        return ModelConfigError(
            f"{self.origin}: no `{keys}` field{where} (and model_type {self.model_type!r} has "
            f"no class default for it), so the model's {field.replace('_', ' ')} is unknown",
            fix=fix, hint="launcher models   (built-in profiles that need no config.json)")

    def too_big(self, field: str, value: int, limit_field: str, limit: int,
                why: str) -> ModelConfigError:
        """`field` may not exceed `limit_field`: an error naming both keys."""
        return ModelConfigError(
            f"{self.origin}: {self.where(field)} is {value} but {self.where(limit_field)} is "
            f"{limit}: {why}", fix="Correct config.json.")

    def where(self, field: str) -> str:
        """The key that supplied `field` (`text_config.num_hidden_layers`), for messages."""
        source = self.provenance.get(field)
        if source is None:
            return f"`{field}`"
        return f"`{source}`" if " " not in source else f"{field} ({source})"


def _text_config(config: dict[str, Any], origin: str) -> tuple[dict[str, Any], str]:
    """The language model's sub-config of a multimodal config, else the config itself."""
    for key in TEXT_CONFIG_KEYS:
        if config.get(key) is not None:
            return as_dict(config[key], key, origin), f"{key}."
    return config, ""


def spec_from_config(config: dict[str, Any], *, name: str, source: str,
                     origin: str = "config.json") -> ModelSpec:
    """Normalize one config.json. `origin` names the file in error messages."""
    if not isinstance(config, dict):
        raise ModelConfigError(f"{origin}: expected a JSON object, got {type(config).__name__}",
                               fix="Use the model's config.json.")
    r = _Reader(config, origin)
    families.refuse_unmodeled(r)
    via_notes: tuple[str, ...] = ()
    if not known_model_type(r.model_type):
        # Not in this module's tables: transformers' config class (imported only here) or
        # exit 2 naming the architecture (launcher/models/transformers_config.py).
        from launcher.models import transformers_config

        via = transformers_config.normalize(config, r.model_type, origin, KNOWN_ARCHITECTURES)
        r = _Reader(via.config, origin)
        r.provenance["config_class"] = via.provenance
        via_notes = (via.note,)
    model_type = r.model_type
    att = _attention(r, model_type)
    inter = _intermediate_size(r, model_type, att.hidden_size)
    vocab = r.require_int("vocab_size", hi=MAX_VOCAB)
    max_pos = _max_position_embeddings(r)
    rope = _rope_scaling(r)
    max_len = _scaled_max_len(r, max_pos, rope, model_type)
    dtype, dtype_notes = _dtype(r)
    tied, tie_notes = _tied_embeddings(r, model_type)
    attention_bias, mlp_bias = _biases(r)
    rotary_dim = _rotary_dim(r, att.head_dim)
    layers = _layer_pattern(r, model_type, att.num_layers)
    hybrid = hybrid_layers(r, model_type, att.num_layers, att.hidden_size)
    if hybrid is not None:  # layers with recurrent state (launcher/models/hybrid.py)
        layers = _Layers(hybrid.kinds)
    moe = _moe(r, inter, att.num_layers, model_type)
    mla = _mla(r)
    indexer = families.sparse_indexer(r, att.num_layers, mla)
    g4 = families.gemma4_layers(r, layers.kinds, att.num_layers, att.num_kv_heads, att.head_dim)
    quantization = _quantization(r)
    vision = vision_tower_from_config(config, origin)
    return ModelSpec(
        name=name, source=source, architecture=_architecture(r), model_type=model_type,
        hidden_size=att.hidden_size, num_layers=att.num_layers,
        num_attention_heads=att.num_attention_heads, num_kv_heads=att.num_kv_heads,
        head_dim=att.head_dim, intermediate_size=inter, vocab_size=vocab,
        max_position_embeddings=max_len, dtype=dtype,
        tie_word_embeddings=tied, layer_types=layers.kinds, sliding_window=layers.sliding_window,
        attention_chunk_size=layers.attention_chunk_size, rotary_dim=rotary_dim,
        rope_caches=2 if model_type in _GEMMA3 else 1,  # Gemma 3: local and global rope bases
        rope_type=rope.rope_type, rope_factor=rope.factor, rope_original_max=rope.original_max,
        config_max_positions=max_pos if max_pos != max_len else None,
        attention_bias=attention_bias, mlp_bias=mlp_bias,
        gated_mlp=bool(r.family.get("gated_mlp", True)), moe=moe, mla=mla,
        indexer=indexer, mtp_layers=families.mtp_layers(r),
        global_attention=g4.global_attention, kv_shared_layers=g4.kv_shared_layers,
        per_layer_embedding=g4.per_layer_embedding,
        double_wide_shared_mlp=g4.double_wide_shared_mlp,
        linear=hybrid.state if hybrid is not None and hybrid.state.layers else None,
        quantization=quantization, vision=vision, provenance=r.provenance,
        assumptions=(*via_notes, *dtype_notes, *tie_notes),
    )


# ---- identity ------------------------------------------------------------------------------
def _model_type(top: dict[str, Any], text: dict[str, Any], prefix: str, origin: str) -> str:
    for path, d in ((prefix + "model_type", text), ("model_type", top)):
        if d.get("model_type"):
            return as_str(d["model_type"], path, origin)
    return "unknown"


def _architecture(r: _Reader) -> str:
    for path, d in (("architectures", r.top), (r.prefix + "architectures", r.text)):
        if d.get("architectures"):
            archs = as_list(d["architectures"], path, r.origin)
            return as_str(archs[0], f"{path}[0]", r.origin)
    return "unknown"


# ---- attention shape -----------------------------------------------------------------------
class _Attention(NamedTuple):
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int


def _attention(r: _Reader, model_type: str) -> _Attention:
    hidden = r.require_int("hidden_size", hi=MAX_WIDTH)
    layers = r.require_int("num_layers", hi=MAX_LAYERS)
    heads = r.require_int("num_attention_heads", hi=MAX_COUNT)
    kv = _kv_heads(r, model_type, heads)
    if kv > heads:
        raise r.too_big("num_kv_heads", kv, "num_attention_heads", heads,
                        "a model never has more KV heads than query heads")
    return _Attention(hidden, layers, heads, kv, _head_dim(r, model_type, hidden, heads))


def _kv_heads(r: _Reader, model_type: str, heads: int) -> int:
    found = r.find("num_kv_heads")
    if found is not None:
        return as_int(*found, r.origin, hi=MAX_COUNT)
    if "num_kv_heads" in r.family:
        r.provenance["num_kv_heads"] = f"family default for {model_type}"
        return int(r.family["num_kv_heads"])
    multi_query = r.peek(("multi_query",))
    if multi_query is not None and as_bool(*multi_query, r.origin):
        r.provenance["num_kv_heads"] = "multi_query"
        return 1
    r.provenance["num_kv_heads"] = "derived: = num_attention_heads (no num_key_value_heads: MHA)"
    return heads


def _head_dim(r: _Reader, model_type: str, hidden: int, heads: int) -> int:
    head_dim = r.get_int("head_dim", ("head_dim", "attention_head_dim"), hi=MAX_WIDTH)
    if head_dim is not None:
        return head_dim
    if "head_dim" in r.family:
        r.provenance["head_dim"] = f"family default for {model_type}"
        return int(r.family["head_dim"])
    r.provenance["head_dim"] = "derived: hidden_size / num_attention_heads"
    if hidden < heads:
        raise r.too_big("num_attention_heads", heads, "hidden_size", hidden,
                        "without head_dim the head width hidden_size / num_attention_heads is 0")
    return hidden // heads


def _intermediate_size(r: _Reader, model_type: str, hidden: int) -> int:
    # A model whose every layer is MoE may declare a dense width of 0.
    lo = 0 if r.peek(_EXPERT_KEYS) is not None else 1
    inter = r.get_int("intermediate_size", lo=lo, hi=MAX_FFN)
    if inter is not None:
        return inter
    moe_width = r.peek(("moe_intermediate_size",)) if lo == 0 else None
    if moe_width is not None:  # every layer MoE and no dense width (Qwen3.5 MoE text_config)
        r.provenance["intermediate_size"] = "derived: = moe_intermediate_size (no dense MLP)"
        return as_int(*moe_width, r.origin, hi=MAX_FFN)
    if model_type in ("gpt2", "gpt_bigcode", "phi"):
        r.provenance["intermediate_size"] = "derived: 4 × hidden_size"
        return 4 * hidden
    raise r.missing("intermediate_size")


# ---- context length and rope ---------------------------------------------------------------
class _RopeScaling(NamedTuple):
    """`rope_scaling` when it scales (has a factor); all None otherwise."""

    rope_type: str | None = None
    factor: float | None = None
    original_max: int | None = None


def _max_position_embeddings(r: _Reader) -> int:
    found = r.find("max_position_embeddings")
    if found is not None:
        return as_int(*found, r.origin, hi=MAX_POSITIONS)
    if "max_position_embeddings" in r.family:
        r.provenance["max_position_embeddings"] = "family default (config class)"
        return int(r.family["max_position_embeddings"])
    raise r.missing("max_position_embeddings",
                    fix="Use the complete config.json, or pass --max-model-len explicitly.")


def _rope_scaling(r: _Reader) -> _RopeScaling:
    found = r.find("rope_scaling", ("rope_scaling", "rope_parameters"))
    if found is None:
        return _RopeScaling()
    rope, path = as_dict(*found, r.origin), found[1]
    if isinstance(rope.get("full_attention"), dict):
        # transformers 5 writes rope_parameters per layer type where they differ (Gemma 3):
        # the global layers' entry is the one that scales.
        rope, path = rope["full_attention"], f"{path}.full_attention"
        r.provenance["rope_scaling"] = path
    rope_type = next((as_str(rope[k], f"{path}.{k}", r.origin)
                      for k in ("rope_type", "type") if rope.get(k)), None)
    factor, orig = rope.get("factor"), rope.get("original_max_position_embeddings")
    if factor is None:
        return _RopeScaling()
    return _RopeScaling(
        rope_type, as_float(factor, f"{path}.factor", r.origin, lo=0.0, hi=MAX_ROPE_FACTOR),
        None if orig is None else as_int(orig, f"{path}.original_max_position_embeddings",
                                         r.origin, hi=MAX_POSITIONS))


def _scaled_max_len(r: _Reader, max_pos: int, rope: _RopeScaling, model_type: str) -> int:
    """The context vLLM derives from the config: the position limit, scaled for yarn-style rope.

    vLLM scales the derived length by the rope factor except for Gemma 3 and for the rope
    types whose max_position_embeddings already states the extended length.
    """
    unscaled = (None, "default", "su", "longrope", "llama3", "mrope")
    if model_type.startswith("gemma3") or rope.factor is None or rope.rope_type in unscaled:
        return max_pos
    rope_key = r.provenance["rope_scaling"]
    if rope.rope_type == "yarn" and rope.original_max:
        base, base_key = rope.original_max, f"`{rope_key}.original_max_position_embeddings`"
    else:
        base, base_key = max_pos, r.where("max_position_embeddings")
    max_len = int(base * rope.factor)
    if not 1 <= max_len <= MAX_POSITIONS:
        raise ModelConfigError(
            f"{r.origin}: `{rope_key}.factor` {rope.factor:g} × {base_key} {base} gives a "
            f"context of {max_len} tokens, outside 1 to {MAX_POSITIONS:,}",
            fix="Correct config.json.")
    r.provenance["max_position_embeddings"] += f" × rope_scaling.factor ({rope.rope_type})"
    return max_len


def _rotary_dim(r: _Reader, head_dim: int) -> int:
    frac = r.get_float("partial_rotary_factor", ("partial_rotary_factor",), lo=0.0, hi=1.0)
    if frac is None and "partial_rotary_factor" in r.family:
        r.provenance["partial_rotary_factor"] = "family default (config class)"
        frac = float(r.family["partial_rotary_factor"])
    if frac is not None:
        if int(head_dim * frac) < 1:
            raise ModelConfigError(
                f"{r.origin}: {r.where('partial_rotary_factor')} {frac:g} of "
                f"{r.where('head_dim')} {head_dim} leaves no rotary dimension",
                fix="Correct config.json.")
        return int(head_dim * frac)
    rot = r.get_int("rotary_dim", ("rotary_dim", "rotary_emb_base_dim"), hi=MAX_WIDTH)
    if rot is not None and rot > head_dim:
        raise r.too_big("rotary_dim", rot, "head_dim", head_dim,
                        "rope cannot rotate more dimensions than a head has")
    return head_dim if rot is None else rot


# ---- weights format ------------------------------------------------------------------------
def _dtype(r: _Reader) -> tuple[str, tuple[str, ...]]:
    """The serving dtype, and the assumption made when the file names none."""
    found = r.find("dtype")
    if found is None:
        # vLLM serves a checkpoint without torch_dtype (float32 by transformers' default)
        # in bfloat16, so that is the width its weights take on the GPU.
        r.provenance["dtype"] = "default: bfloat16 (vLLM auto for float32/unspecified)"
        return "bfloat16", (f"{r.origin}: no torch_dtype; vLLM's `--dtype auto` serves such "
                            "checkpoints in bfloat16",)
    raw, path = as_str(*found, r.origin), found[1]
    dtype = TORCH_DTYPES.get(raw.lower())
    if dtype is None:
        raise ModelConfigError(f"{r.origin}: {path} {raw!r} is not a dtype vLLM serves",
                               fix="Use bfloat16, float16 or float32.")
    if dtype == "float32":
        r.provenance["dtype"] += " (float32 → bfloat16: vLLM auto dtype)"
        return "bfloat16", ()
    return dtype, ()


def _tied_embeddings(r: _Reader, model_type: str) -> tuple[bool, tuple[str, ...]]:
    """Whether the LM head shares the embedding, and the assumption made when unknown."""
    tie = r.get_bool("tie_word_embeddings", ("tie_word_embeddings",))
    if tie is not None:
        return tie, ()
    if "tie_word_embeddings" in r.family or model_type in _UNTIED_BY_DEFAULT:
        r.provenance["tie_word_embeddings"] = f"family default for {model_type}"
        return bool(r.family.get("tie_word_embeddings", False)), ()
    r.provenance["tie_word_embeddings"] = "transformers default (True)"
    return True, (f"{r.origin}: tie_word_embeddings absent for model_type {model_type!r}; "
                  "assumed tied (transformers' default)",)


def _biases(r: _Reader) -> tuple[bool, bool]:
    """(attention_bias, mlp_bias): from the file, else the family's class default."""
    attention = r.get_bool("attention_bias", ("attention_bias", "qkv_bias", "bias"))
    mlp = r.get_bool("mlp_bias", ("mlp_bias",))
    return (bool(r.family.get("attention_bias", False)) if attention is None else attention,
            bool(mlp) or bool(r.family.get("mlp_bias", False)))


def _quantization(r: _Reader) -> Quantization | None:
    for path, d in (("quantization_config", r.top), (r.prefix + "quantization_config", r.text),
                    ("compression_config", r.top)):
        qc = d.get(path.rsplit(".", 1)[-1])
        if qc is not None and qc != {}:
            return parse_quantization(qc, r.origin, key=path)
    return None


# ---- layer kinds ---------------------------------------------------------------------------
class _Layers(NamedTuple):
    kinds: tuple[LayerKind, ...] = ()  # empty: every layer is full attention
    sliding_window: int | None = None
    attention_chunk_size: int | None = None


def _layer_pattern(r: _Reader, model_type: str, n: int) -> _Layers:
    """Which layers use sliding-window or chunked attention (vLLM's hybrid KV allocator)."""
    window = r.get_int("sliding_window", ("sliding_window",), hi=MAX_POSITIONS)
    kinds = layer_list(r, n, "layer_types", _LAYER_KINDS, default="full")
    if kinds is None:
        kinds, window = _family_layer_pattern(r, model_type, n, window)
    chunk = r.get_int("attention_chunk_size", ("attention_chunk_size",), hi=MAX_POSITIONS)
    if chunk is not None and model_type in _LLAMA4:
        kinds = _chunked_layers(r, n)
    else:
        chunk = None
    if kinds is None:
        return _Layers()
    if "sliding" not in kinds:
        return _Layers(kinds, None, chunk)
    if window is None:
        raise ModelConfigError(
            f"{r.origin}: {r.where('layer_types')} has sliding layers but sliding_window is "
            "not set", fix="Add sliding_window to config.json.")
    return _Layers(kinds, window, chunk)


def _family_layer_pattern(r: _Reader, model_type: str, n: int, window: int | None
                          ) -> tuple[tuple[LayerKind, ...] | None, int | None]:
    """The sliding layers a family implies from `sliding_window` alone, and the window."""
    if window is None:
        return None, None
    kinds: tuple[LayerKind, ...]
    if model_type == "gemma2":
        r.provenance["layer_types"] = "gemma2: even layers slide"
        kinds = tuple("sliding" if i % 2 == 0 else "full" for i in range(n))
        return kinds, window
    if model_type in _GEMMA3:
        pattern = r.get_int("sliding_window_pattern", ("sliding_window_pattern",),
                            hi=MAX_LAYERS) or 6
        r.provenance["layer_types"] = f"gemma3: every {pattern}th layer is global"
        kinds = tuple("full" if (i + 1) % pattern == 0 else "sliding" for i in range(n))
        return kinds, window
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if not r.get_bool("use_sliding_window", ("use_sliding_window",)):
            return None, None
        start = r.get_int("max_window_layers", ("max_window_layers",), lo=0, hi=MAX_LAYERS) or n
        kinds = tuple("full" if i < start else "sliding" for i in range(n))
        return kinds, window
    if model_type in ("mistral", "phi3", "mixtral", "starcoder2"):
        r.provenance["layer_types"] = "sliding_window set: every layer slides"
        kinds = tuple("sliding" for _ in range(n))
        return kinds, window
    return None, window


def _chunked_layers(r: _Reader, n: int) -> tuple[LayerKind, ...]:
    """Llama 4: no_rope_layers[i] == 1 means the layer uses RoPE, and RoPE layers attend in
    chunks; without a full list, every `no_rope_layer_interval`-th layer is NoPE."""
    found = r.find("no_rope_layers", ("no_rope_layers",))
    if found is not None and len(flags := as_list(*found, r.origin)) == n:
        uses_rope = [f if isinstance(f, bool) else bool(as_int(f, f"{found[1]}[{i}]", r.origin,
                                                               lo=0, hi=1))
                     for i, f in enumerate(flags)]
    else:
        interval = r.get_int("no_rope_layer_interval", ("no_rope_layer_interval",),
                             hi=MAX_LAYERS) or 4
        uses_rope = [(i + 1) % interval != 0 for i in range(n)]
    r.provenance["layer_types"] = "llama4: RoPE layers use chunked attention"
    return tuple("chunked" if flag else "full" for flag in uses_rope)


# ---- MoE and MLA ---------------------------------------------------------------------------
def _moe(r: _Reader, inter: int, layers: int, model_type: str) -> MoE | None:
    routing = _routing(r)
    if routing is None:
        return None
    expert_inter = r.get_int("moe_intermediate_size", ("moe_intermediate_size",),
                             hi=MAX_FFN) or inter
    if not expert_inter:
        raise ModelConfigError(f"{r.origin}: no moe_intermediate_size and intermediate_size is "
                               "0, so the experts' width is unknown", fix="Correct config.json.")
    shared = r.get_int("shared_expert_intermediate_size", ("shared_expert_intermediate_size",
                                                           "shared_intermediate_size"),
                       lo=0, hi=MAX_FFN) or 0
    n_shared = r.get_int("n_shared_experts", ("n_shared_experts", "num_shared_experts"),
                         lo=0, hi=MAX_COUNT) or 0
    if n_shared and not shared:
        shared = n_shared * expert_inter
    dense_layers = r.get_int("first_k_dense_replace", ("first_k_dense_replace",), lo=0,
                             hi=MAX_LAYERS) or 0
    if dense_layers > layers:
        raise r.too_big("first_k_dense_replace", dense_layers, "num_layers", layers,
                        "more dense layers than layers")
    step = r.get_int("moe_layer_step", ("interleave_moe_layer_step", "decoder_sparse_step",
                                        "moe_layer_freq", "expert_layer_period"), lo=0, hi=MAX_LAYERS) or 1
    dense_inter = r.get_int("dense_intermediate", ("intermediate_size_mlp",), hi=MAX_FFN) or inter
    if model_type in _LLAMA4:
        # Llama 4: intermediate_size is the expert width, intermediate_size_mlp the dense one;
        # each MoE layer also has one shared expert of the expert width.
        shared = shared or expert_inter
    return MoE(num_experts=routing[0], experts_per_token=routing[1],
               expert_intermediate_size=expert_inter, shared_expert_intermediate_size=shared,
               dense_layers=dense_layers, dense_intermediate_size=dense_inter,
               moe_layer_step=step)


def _routing(r: _Reader) -> tuple[int, int] | None:
    """(experts, experts per token), or None for a dense model (no or zero experts)."""
    experts = r.get_int("num_experts", _EXPERT_KEYS, lo=0, hi=MAX_COUNT)
    if not experts:
        return None
    top_k = r.get_int("experts_per_token", _TOP_K_KEYS, hi=MAX_COUNT)
    if top_k is None:
        raise ModelConfigError(f"{r.origin}: MoE model ({r.where('num_experts')}) without "
                               "num_experts_per_tok", fix="Use the model's complete config.json.")
    if top_k > experts:
        raise r.too_big("experts_per_token", top_k, "num_experts", experts,
                        "a token cannot be routed to more experts than exist")
    return experts, top_k


def _mla(r: _Reader) -> MLA | None:
    rank = r.get_int("kv_lora_rank", ("kv_lora_rank",), lo=0, hi=MAX_WIDTH)
    if not rank:
        return None

    def dim(field: str, default: int) -> int:
        value = r.get_int(field, (field,), hi=MAX_WIDTH)
        return default if value is None else value

    return MLA(kv_lora_rank=rank, qk_rope_head_dim=dim("qk_rope_head_dim", 64),
               qk_nope_head_dim=dim("qk_nope_head_dim", 128), v_head_dim=dim("v_head_dim", 128),
               q_lora_rank=r.get_int("q_lora_rank", ("q_lora_rank",), hi=MAX_WIDTH))
