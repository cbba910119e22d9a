"""Size a multimodal model's vision encoder from its `vision_config`.

vLLM loads the encoder beside the language model, so its bytes count against the GPU. Most
encoders are ViTs (SigLIP, Pixtral, MoonViT, CLIP): per layer four attention projections and a
two-matrix MLP (three when gated), with biases and two norms, plus a patch embedding and
position table. The projector into the language model is sized from the two hidden widths.
"""

from __future__ import annotations

from typing import Any

from launcher.models.fields import (
    MAX_FFN,
    MAX_LAYERS,
    MAX_WIDTH,
    as_dict,
    as_int,
    as_str,
    config_error,
)
from launcher.models.spec import VisionTower


def vision_tower_from_config(config: dict[str, Any], origin: str = "config.json"
                             ) -> VisionTower | None:
    """None when the config has no vision encoder, or one without its width and depth."""
    if config.get("vision_config") is None:
        return None
    vc = as_dict(config["vision_config"], "vision_config", origin)

    def size(*keys: str, default: int, hi: int = MAX_WIDTH) -> int:
        for key in keys:
            if vc.get(key) is not None:
                return as_int(vc[key], f"vision_config.{key}", origin, hi=hi)
        return default

    h = size("hidden_size", "embed_dim", default=0)
    layers = size("num_hidden_layers", "depth", "num_layers", default=0, hi=MAX_LAYERS)
    if not h or not layers:
        return None
    inter = size("intermediate_size", default=4 * h, hi=MAX_FFN)
    patch = size("patch_size", default=14)
    channels = size("num_channels", default=3)
    image = size("image_size", default=0)
    vtype = as_str(vc["model_type"], "vision_config.model_type", origin) \
        if vc.get("model_type") else ""
    gated = vtype in ("pixtral",) or ("hidden_act" in vc and vc.get("hidden_act") == "silu")
    bias = vtype not in ("pixtral",)
    per_layer = 4 * h * h + (3 if gated else 2) * h * inter
    if bias:
        per_layer += 4 * h + inter + h
    per_layer += 2 * h * (2 if bias else 1)  # two norms
    params = layers * per_layer
    params += channels * patch * patch * h + (h if bias else 0)  # patch embedding
    if image and vtype not in ("pixtral",):
        params += (image // patch) ** 2 * h  # learned position table
    if config.get("model_type") not in QWEN3_VL:  # Qwen3-VL: its mergers hold the norms
        params += h * (2 if bias else 1)  # post/pre norm
    text_h = _text_hidden_size(config, origin)
    if config.get("model_type") in QWEN3_VL:
        params += _qwen3_vl_mergers(vc, h, text_h, origin)
    elif text_h:
        params += h * text_h + text_h  # projector (at least one linear into the text width)
    return VisionTower(params=params, source="vision_config")


QWEN3_VL = ("qwen3_vl", "qwen3_vl_moe")
# Qwen3VLVisionConfig class defaults (transformers 5.19) the abridged configs leave out.
_QWEN3_VL_DEEPSTACK = (8, 16, 24)
_QWEN3_VL_POSITIONS = 2304


def _qwen3_vl_mergers(vc: dict[str, Any], h: int, text_h: int, origin: str) -> int:
    """Qwen3-VL's patch mergers (vLLM qwen3_vl.py `Qwen3_VisionPatchMerger`): the final one
    and one per DeepStack layer, each a LayerNorm and two linears over the spatially merged
    width h·s², plus the learned position table."""
    merge = as_int(vc.get("spatial_merge_size", 2), "vision_config.spatial_merge_size", origin,
                   hi=64)
    out = as_int(vc.get("out_hidden_size", text_h or h), "vision_config.out_hidden_size",
                 origin, hi=MAX_WIDTH)
    deep = vc.get("deepstack_visual_indexes", _QWEN3_VL_DEEPSTACK)
    if not isinstance(deep, list | tuple):
        raise config_error(origin, "vision_config.deepstack_visual_indexes", deep, "a list")
    positions = as_int(vc.get("num_position_embeddings", _QWEN3_VL_POSITIONS),
                       "vision_config.num_position_embeddings", origin, hi=MAX_WIDTH)
    temporal = as_int(vc.get("temporal_patch_size", 2), "vision_config.temporal_patch_size",
                      origin, hi=64)
    patch = as_int(vc.get("patch_size", 16), "vision_config.patch_size", origin, hi=MAX_WIDTH)
    channels = as_int(vc.get("in_channels", 3), "vision_config.in_channels", origin, hi=64)
    m = h * merge * merge
    # the final merger normalizes before merging (h), the DeepStack ones after (m)
    merger = m * m + m + m * out + out
    # the patch embedding is a Conv3d over `temporal` frames (the caller counted one)
    video = (temporal - 1) * channels * patch * patch * h
    return (merger + 2 * h) + len(deep) * (merger + 2 * m) + positions * h + video


def _text_hidden_size(config: dict[str, Any], origin: str) -> int:
    text = config.get("text_config")
    for key, d in (("text_config.hidden_size", text if isinstance(text, dict) else {}),
                   ("hidden_size", config)):
        if d.get("hidden_size"):
            return as_int(d["hidden_size"], key, origin, hi=MAX_WIDTH)
    return 0
