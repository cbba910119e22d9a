"""Golden tests: real public config.json files → the normalized spec facts the memory model uses."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS

from launcher.errors import ModelConfigError
from launcher.memory.tensors import synthesize
from launcher.models.config import spec_from_config

GOLDEN = json.loads((CONFIGS.parent / "expected_specs.json").read_text())
FIELDS = ("model_type", "hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
          "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "dtype",
          "tie_word_embeddings", "sliding_window")


def _spec(slug: str):
    return spec_from_config(json.loads((CONFIGS / f"{slug}.json").read_text()), name=slug,
                            source="test", origin=f"{slug}.json")


def summary(slug: str) -> dict:
    s = _spec(slug)
    kinds = s.layer_kinds()
    return {
        **{f: getattr(s, f) for f in FIELDS},
        "layer_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        "moe": [s.moe.num_experts, s.moe.experts_per_token] if s.moe else None,
        "mla": [s.mla.kv_lora_rank, s.mla.qk_rope_head_dim] if s.mla else None,
        "quantization": s.quantization.method if s.quantization else None,
        "vision": s.vision is not None,
        "params": sum(t.numel for t in synthesize(s)),
    }


@pytest.mark.parametrize("slug", sorted(GOLDEN))
def test_config_normalizes_to_golden(slug: str) -> None:
    assert summary(slug) == GOLDEN[slug]


def test_every_fixture_has_a_golden_entry() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(GOLDEN)


@pytest.mark.parametrize(("slug", "published"), [
    ("meta-llama--llama-3-1-8b-instruct", 8_030_261_248),   # HF safetensors metadata
    ("qwen--qwen2-5-7b-instruct", 7_615_616_512),
    ("meta-llama--llama-3-1-70b-instruct", 70_553_706_496),
])
def test_architecture_count_matches_published_parameters(slug: str, published: int) -> None:
    assert sum(t.numel for t in synthesize(_spec(slug))) == published


def test_odd_configs() -> None:
    g2 = _spec("google--gemma-2-2b-it")  # alternating sliding/full, tied, head_dim ≠ hidden/heads
    assert g2.layer_kinds()[:2] == ["sliding", "full"] and g2.tie_word_embeddings
    assert g2.head_dim == 256 and g2.sliding_window == 4096
    q = _spec("qwen--qwen2-5-7b-instruct")  # sliding_window set but use_sliding_window false
    assert set(q.layer_kinds()) == {"full"} and q.attention_bias
    ds = _spec("deepseek-ai--deepseek-v3")
    assert ds.mla is not None and ds.quantization.method == "fp8" and ds.moe.dense_layers == 3
    oss = _spec("openai--gpt-oss-20b")
    assert oss.quantization.method == "mxfp4" and oss.layer_kinds().count("sliding") == 12
    g3 = _spec("google--gemma-3-4b-it")  # text_config relying on Gemma3TextConfig defaults
    assert g3.num_attention_heads == 8 and g3.vision is not None
    assert g3.provenance["num_attention_heads"] == "family default (config class)"
    assert g3.max_position_embeddings == 131072  # vLLM skips rope scaling of Gemma 3's length


@pytest.mark.parametrize(("config", "field"), [
    ({"model_type": "llama", "num_hidden_layers": 2}, "hidden_size"),
    ({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
      "num_attention_heads": 4, "intermediate_size": 128}, "vocab_size"),
    ({"model_type": "llama", "hidden_size": "big", "num_hidden_layers": 2}, "hidden_size"),
])
def test_incomplete_config_names_file_and_field(config: dict, field: str) -> None:
    with pytest.raises(ModelConfigError) as e:
        spec_from_config(config, name="x", source="t", origin="/m/config.json")
    assert "/m/config.json" in e.value.message and field in e.value.message


@pytest.mark.parametrize("qc", [{"quant_method": "magic4"}, {"quant_method": ""}])
def test_unknown_quantization_is_an_error(qc: dict) -> None:
    cfg = json.loads((CONFIGS / "meta-llama--llama-3-1-8b-instruct.json").read_text())
    cfg["quantization_config"] = qc
    with pytest.raises(ModelConfigError, match="unknown quantization method"):
        spec_from_config(cfg, name="x", source="t")


def test_unknown_dtype_is_an_error() -> None:
    cfg = json.loads((CONFIGS / "meta-llama--llama-3-1-8b-instruct.json").read_text())
    cfg["torch_dtype"] = "float12"
    with pytest.raises(ModelConfigError, match="float12"):
        spec_from_config(cfg, name="x", source="t")
