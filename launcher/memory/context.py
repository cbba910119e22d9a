"""The default context a vLLM release derives from config.json, where releases differ.

The config parser derives the context the way vLLM 0.19–0.29 did; from 0.30 vLLM takes a YaRN
model's `max_position_embeddings` as already scaled (Qwen3 with its documented ×4 YaRN: 40,960
tokens, where 0.29 derived 131,072). A plan that passed the older figure to a newer vLLM would be
refused at start ("User-specified max_model_len … is greater than the derived max_model_len").
"""

from __future__ import annotations

from dataclasses import replace

from launcher.memory.calibration import ContextRule
from launcher.models.spec import ModelSpec

# Rope types whose stated max_position_embeddings vLLM ≥ 0.30 keeps (config/model.py@v0.30.0:2471).
_STATED = ("yarn", "deepseek_yarn", "deepseek_llama_scaling")


def engine_context(spec: ModelSpec, rule: ContextRule) -> ModelSpec:
    """`spec` with the context `rule`'s release derives (unchanged where the releases agree)."""
    raw = spec.config_max_positions
    if not rule.yarn_as_stated or raw is None or spec.rope_type not in _STATED:
        return spec
    if raw == spec.max_position_embeddings:
        return spec
    provenance = dict(spec.provenance)
    key = provenance.get("max_position_embeddings", "max_position_embeddings")
    provenance["max_position_embeddings"] = (
        f"{key.split(' × ')[0]} as stated ({spec.rope_type} is not scaled again from vLLM 0.30)")
    return replace(spec, max_position_embeddings=raw, provenance=provenance)
