"""Hybrid models: which layers keep a per-sequence recurrent state, and its dimensions.

Qwen3-Next / Qwen3.5 / Qwen3.6 mix Gated DeltaNet ("linear_attention") layers with full
attention; Nemotron-H, Granite 4.0-H (`granitemoehybrid`) and Falcon-H1 use Mamba2 mixers,
Jamba Mamba1. vLLM keeps one fixed-size state per sequence for those layers (a short
convolution window and the SSM / delta-rule matrix) in the same block pool as the KV cache;
`launcher/memory/state.py` sizes it. This module reads, from config.json, the dims vLLM's
`MambaStateShapeCalculator` takes in each model's `get_mamba_state_shape_from_config`, and the
layer pattern each model file builds its decoder layers from:

- Qwen3-Next / Qwen3.5: `layer_types` ("linear_attention" / "full_attention"), else every
  `full_attention_interval`-th layer is full attention (transformers' config class);
- Nemotron-H: `hybrid_override_pattern`, one character per layer: M Mamba2, * attention,
  - MLP, E MoE (vLLM nemotron_h.py `ALL_DECODER_LAYER_TYPES`);
- Granite 4.0-H: `layer_types` ("mamba"/"linear_attention", "attention"/"full_attention");
- Falcon-H1: every layer runs attention and Mamba2 side by side;
- Jamba: layer i is attention when i % attn_layer_period == attn_layer_offset, else Mamba.

A value that is missing where the model cannot do without it, or out of range, is a
`ModelConfigError` naming the key (fields.py); class defaults used in its place are recorded in
the spec's provenance.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from launcher.errors import ModelConfigError
from launcher.models.fields import (
    MAX_COUNT,
    MAX_LAYERS,
    MAX_WIDTH,
    as_int,
    as_str,
    layer_list,
)
from launcher.models.spec import LayerKind, LinearState

if TYPE_CHECKING:
    from launcher.models.config import _Reader

GDN_TYPES = frozenset({"qwen3_next", "qwen3_5", "qwen3_5_text", "qwen3_5_moe",
                       "qwen3_5_moe_text"})
QWEN35_TYPES = frozenset({"qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text"})
HYBRID_TYPES = GDN_TYPES | {"nemotron_h", "granitemoehybrid", "falcon_h1", "jamba"}

_MAX_KERNEL = 64
_MAX_STATE = 65_536
_SSM_DTYPES = ("float32", "bfloat16", "float16")
_STATE: LayerKind = "linear"
_FULL: LayerKind = "full"


class Hybrid(NamedTuple):
    """The attention kind of every layer ("linear": state only, "none": neither) and the
    recurrent state of the layers that keep one."""

    kinds: tuple[LayerKind, ...]
    state: LinearState


def hybrid_layers(r: _Reader, model_type: str, n: int, hidden: int) -> Hybrid | None:
    """The hybrid layout of a config, or None for a model without recurrent layers."""
    if model_type in GDN_TYPES:
        return _gdn(r, n, model_type)
    if model_type == "nemotron_h":
        return _nemotron_h(r, n)
    if model_type == "granitemoehybrid":
        return _granite(r, n, hidden)
    if model_type == "falcon_h1":
        return _falcon_h1(r, n, hidden)
    if model_type == "jamba":
        return _jamba(r, n, hidden)
    return None


# ---- reading helpers -------------------------------------------------------------------------
def _need(r: _Reader, field: str, keys: tuple[str, ...], *, hi: int,
          default: int | None = None, lo: int = 1) -> int:
    """An int the state cannot do without; `default` is the config class's own default."""
    value = r.get_int(field, keys, lo=lo, hi=hi)
    if value is not None:
        return value
    if default is not None:
        r.provenance[field] = f"config class default ({default})"
        return default
    raise ModelConfigError(
        f"{r.origin}: no `{' / '.join(keys)}` field, which a {r.model_type} model needs to "
        "size its recurrent (linear-attention / Mamba) state",
        fix="Use the model's complete config.json from its repository.")


def _ssm_dtype(r: _Reader, keys: tuple[str, ...], default: str | None) -> str | None:
    found = r.find("mamba_ssm_dtype", keys)
    if found is None:
        if default is not None:
            r.provenance["mamba_ssm_dtype"] = f"vLLM default for {r.model_type} ({default})"
        return default
    value, key = as_str(*found, r.origin), found[1]
    if value not in _SSM_DTYPES:
        raise ModelConfigError(f"{r.origin}: field `{key}` is {value!r}, expected one of "
                               f"{', '.join(_SSM_DTYPES)}", fix="Correct config.json.")
    return value


def _linear_layers(kinds: tuple[LayerKind, ...]) -> tuple[int, ...]:
    return tuple(i for i, k in enumerate(kinds) if k == "linear")


def _no_state(r: _Reader, kinds: tuple[LayerKind, ...]) -> None:
    if "linear" not in kinds:
        raise ModelConfigError(
            f"{r.origin}: {r.where('layer_types')} has no recurrent layer, but model_type "
            f"{r.model_type!r} is a hybrid: the layer pattern is unreadable",
            fix="Correct config.json.")


_GDN_LAYERS: dict[str, LayerKind] = {"linear_attention": "linear", "full_attention": "full"}
_GRANITE_LAYERS: dict[str, LayerKind] = {"mamba": "linear", "linear_attention": "linear",
                                         "attention": "full", "full_attention": "full"}


# ---- Gated DeltaNet: Qwen3-Next, Qwen3.5, Qwen3.6 ----------------------------------------------
def _gdn(r: _Reader, n: int, model_type: str) -> Hybrid:
    listed = layer_list(r, n, "layer_types", _GDN_LAYERS)
    kinds: tuple[LayerKind, ...]
    if listed is not None:
        kinds = listed
    else:
        interval = _need(r, "full_attention_interval", ("full_attention_interval",),
                         hi=MAX_LAYERS, default=4)
        r.provenance["layer_types"] = f"every {interval}th layer is full attention"
        kinds = tuple("full" if (i + 1) % interval == 0 else "linear" for i in range(n))
    _no_state(r, kinds)
    state = LinearState(
        kind="gdn", layers=_linear_layers(kinds),
        conv_kernel=_need(r, "linear_conv_kernel_dim", ("linear_conv_kernel_dim",),
                          hi=_MAX_KERNEL, default=4),
        num_k_heads=_need(r, "linear_num_key_heads", ("linear_num_key_heads",), hi=MAX_COUNT),
        num_v_heads=_need(r, "linear_num_value_heads", ("linear_num_value_heads",),
                          hi=MAX_COUNT),
        head_k_dim=_need(r, "linear_key_head_dim", ("linear_key_head_dim",), hi=MAX_WIDTH),
        head_v_dim=_need(r, "linear_value_head_dim", ("linear_value_head_dim",), hi=MAX_WIDTH),
        # Qwen3.5's config class (vLLM Qwen3_5ForConditionalGenerationConfig) reads
        # mamba_ssm_dtype; Qwen3-Next has none.
        ssm_dtype=_ssm_dtype(r, ("mamba_ssm_dtype",), None) if model_type in QWEN35_TYPES
        else None)
    return Hybrid(kinds, state)


# ---- Mamba2: Nemotron-H, Granite 4.0-H, Falcon-H1 --------------------------------------------
_NEMOTRON: dict[str, LayerKind] = {"M": "linear", "*": "full", "-": "none", "E": "none"}


def _nemotron_h(r: _Reader, n: int) -> Hybrid:
    found = r.find("layer_types", ("hybrid_override_pattern",))
    if found is None:
        raise ModelConfigError(f"{r.origin}: a nemotron_h model without "
                               "`hybrid_override_pattern`: which layers are Mamba is unknown",
                               fix="Use the model's complete config.json from its repository.")
    pattern, key = as_str(*found, r.origin), found[1]
    if len(pattern) != n or any(c not in _NEMOTRON for c in pattern):
        raise ModelConfigError(
            f"{r.origin}: field `{key}` must be {n} characters ({r.where('num_layers')}) of "
            f"M, *, - and E; it is {len(pattern)} characters"
            + (f" with {sorted(set(pattern) - set(_NEMOTRON))!r}"
               if set(pattern) - set(_NEMOTRON) else ""), fix="Correct config.json.")
    kinds = tuple(_NEMOTRON[c] for c in pattern)
    _no_state(r, kinds)
    heads = _need(r, "mamba_num_heads", ("mamba_num_heads",), hi=MAX_COUNT, default=128)
    head_dim = _need(r, "mamba_head_dim", ("mamba_head_dim",), hi=MAX_WIDTH, default=64)
    state = LinearState(
        kind="mamba2", layers=_linear_layers(kinds),
        conv_kernel=_need(r, "conv_kernel", ("conv_kernel",), hi=_MAX_KERNEL, default=4),
        intermediate_size=heads * head_dim, d_state=_need(
            r, "ssm_state_size", ("ssm_state_size",), hi=_MAX_STATE, default=128),
        n_groups=_need(r, "n_groups", ("n_groups", "mamba_num_groups"), hi=MAX_COUNT,
                       default=8),
        num_heads=heads, head_dim=head_dim,
        conv_bias=bool(r.get_bool("use_conv_bias", ("use_conv_bias",)) is not False),
        # vLLM NemotronHForCausalLMConfig: the config's value, else float32.
        ssm_dtype=_ssm_dtype(r, ("mamba_ssm_cache_dtype",), "float32"))
    return Hybrid(kinds, state)


def _mamba2_heads(r: _Reader, d_inner: int) -> tuple[int, int]:
    heads = _need(r, "mamba_n_heads", ("mamba_n_heads",), hi=MAX_COUNT, default=128)
    found = r.peek(("mamba_d_head",))
    if found is None or found[0] == "auto":  # config class: d_inner // heads
        r.provenance["mamba_d_head"] = "auto: mamba intermediate size / mamba_n_heads"
        if d_inner % heads:
            raise ModelConfigError(f"{r.origin}: mamba_n_heads {heads} does not divide the "
                                   f"Mamba width {d_inner}", fix="Correct config.json.")
        return heads, d_inner // heads
    r.provenance["mamba_d_head"] = found[1]
    return heads, as_int(*found, r.origin, hi=MAX_WIDTH)


def _mamba2(r: _Reader, layers: tuple[int, ...], d_inner: int) -> LinearState:
    heads, head_dim = _mamba2_heads(r, d_inner)
    return LinearState(
        kind="mamba2", layers=layers,
        conv_kernel=_need(r, "mamba_d_conv", ("mamba_d_conv",), hi=_MAX_KERNEL, default=4),
        intermediate_size=d_inner,
        d_state=_need(r, "mamba_d_state", ("mamba_d_state",), hi=_MAX_STATE, default=256),
        n_groups=_need(r, "mamba_n_groups", ("mamba_n_groups",), hi=MAX_COUNT, default=1),
        num_heads=heads, head_dim=head_dim,
        conv_bias=bool(r.get_bool("mamba_conv_bias", ("mamba_conv_bias",)) is not False))


def _expand(r: _Reader, hidden: int) -> int:
    return hidden * _need(r, "mamba_expand", ("mamba_expand",), hi=64, default=2)


def _granite(r: _Reader, n: int, hidden: int) -> Hybrid:
    listed = layer_list(r, n, "layer_types", _GRANITE_LAYERS)
    kinds: tuple[LayerKind, ...]
    if listed is not None:
        kinds = listed
    else:  # transformers' class default: every layer Mamba
        r.provenance["layer_types"] = "config class default: every layer is Mamba"
        kinds = tuple(_STATE for _ in range(n))
    if "linear" not in kinds:  # Granite 4.0 Micro: a granitemoehybrid that is all attention
        return Hybrid(kinds, LinearState(kind="mamba2", layers=(), conv_kernel=4))
    return Hybrid(kinds, _mamba2(r, _linear_layers(kinds), _expand(r, hidden)))


def _falcon_h1(r: _Reader, n: int, hidden: int) -> Hybrid:
    # vLLM falcon_h1.py: mamba_d_ssm, else mamba_expand × hidden; transformers' class default
    # for an absent mamba_d_ssm is 1024.
    d_inner = r.get_int("mamba_d_ssm", ("mamba_d_ssm",), hi=MAX_WIDTH * 16)
    if d_inner is None:
        r.provenance["mamba_d_ssm"] = "config class default (1024)"
        d_inner = 1024
    r.provenance["layer_types"] = "falcon_h1: attention and Mamba2 in every layer"
    kinds = tuple(_FULL for _ in range(n))
    return Hybrid(kinds, _mamba2(r, tuple(range(n)), d_inner))


# ---- Mamba1: Jamba ---------------------------------------------------------------------------
def _jamba(r: _Reader, n: int, hidden: int) -> Hybrid:
    period = _need(r, "attn_layer_period", ("attn_layer_period",), hi=MAX_LAYERS, default=8)
    offset = _need(r, "attn_layer_offset", ("attn_layer_offset",), lo=0, hi=MAX_LAYERS,
                   default=4)
    if offset >= period:
        raise r.too_big("attn_layer_offset", offset, "attn_layer_period", period,
                        "the attention layer's offset must lie inside its period")
    r.provenance["layer_types"] = f"jamba: layer i attends when i % {period} == {offset}"
    kinds: tuple[LayerKind, ...] = tuple("full" if i % period == offset else "linear"
                                         for i in range(n))
    _no_state(r, kinds)
    found = r.peek(("mamba_dt_rank",))
    if found is None or found[0] == "auto":
        dt_rank = math.ceil(hidden / 16)
    else:
        dt_rank = as_int(*found, r.origin, hi=MAX_WIDTH)
    state = LinearState(
        kind="mamba1", layers=_linear_layers(kinds),
        conv_kernel=_need(r, "mamba_d_conv", ("mamba_d_conv",), hi=_MAX_KERNEL, default=4),
        intermediate_size=_expand(r, hidden),
        d_state=_need(r, "mamba_d_state", ("mamba_d_state",), hi=_MAX_STATE, default=16),
        dt_rank=dt_rank,
        conv_bias=bool(r.get_bool("mamba_conv_bias", ("mamba_conv_bias",)) is not False))
    return Hybrid(kinds, state)

