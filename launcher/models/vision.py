"""Size a multimodal model's vision encoder from its `vision_config`.

vLLM loads the encoder beside the language model, so its bytes count against the GPU. Most
encoders are ViTs (SigLIP, Pixtral, MoonViT, CLIP): per layer four attention projections and a
two-matrix MLP (three when gated), with biases and two norms, plus a patch embedding and
position table. The projector into the language model is sized from the two hidden widths.
"""

from __future__ import annotations

from typing import Any

from launcher.models.spec import VisionTower


def vision_tower_from_config(config: dict[str, Any]) -> VisionTower | None:
    vc = config.get("vision_config")
    if not isinstance(vc, dict) or not vc:
        return None
    h = int(vc.get("hidden_size") or vc.get("embed_dim") or 0)
    layers = int(vc.get("num_hidden_layers") or vc.get("depth") or vc.get("num_layers") or 0)
    if not h or not layers:
        return None
    inter = int(vc.get("intermediate_size") or 4 * h)
    patch = int(vc.get("patch_size") or 14)
    channels = int(vc.get("num_channels") or 3)
    image = int(vc.get("image_size") or 0)
    vtype = str(vc.get("model_type") or "")
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
    params += h * (2 if bias else 1)  # post/pre norm
    text = config.get("text_config") or {}
    text_h = int(text.get("hidden_size") or config.get("hidden_size") or 0)
    if text_h:
        params += h * text_h + text_h  # projector (at least one linear into the text width)
    return VisionTower(params=params, source="vision_config")
