"""Golden tests: real public config.json files → the normalized spec facts the memory model uses."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import time
from pathlib import Path

import pytest
from conftest import CONFIGS
from hypothesis import event, given, settings
from hypothesis import strategies as st

from launcher.errors import InputError, ModelConfigError
from launcher.memory.tensors import synthesize
from launcher.models.config import spec_from_config
from launcher.models.resolve import spec_from_dir

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


# ---- hostile values: a named ModelConfigError, quickly, never a traceback --------------------
FIXTURES = {p.stem: json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))}
LLAMA = "meta-llama--llama-3-1-8b-instruct"


def _paths(config: dict) -> list[tuple[str, ...]]:
    """Every top-level key, and every key of an object one level down."""
    paths: list[tuple[str, ...]] = []
    for key, value in config.items():
        paths.append((key,))
        if isinstance(value, dict):
            paths += [(key, sub) for sub in value]
    return paths


PATHS = {slug: _paths(config) for slug, config in FIXTURES.items()}
BROKEN = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, -0.0, 1.5, 1e308, 2**62, -2**62,
                     10**30, True, False, "", "x", "4096", [], [1, 2], {}, {"a": 1}]),
    st.integers(), st.floats(), st.text(max_size=4),
    st.lists(st.integers(-2, 2), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                              max_size=2),
)


def _set(config: dict, path: tuple[str, ...], value: object) -> bool:
    target = config
    for key in path[:-1]:
        target = target.get(key)
        if not isinstance(target, dict):
            return False  # an earlier mutation replaced the parent object
    target[path[-1]] = value
    return True


@settings(max_examples=150, deadline=1000)
@given(data=st.data())
def test_broken_values_give_a_valid_spec_or_an_error_naming_the_field(data: st.DataObject) -> None:
    slug = data.draw(st.sampled_from(sorted(FIXTURES)), label="config")
    config = copy.deepcopy(FIXTURES[slug])
    mutations = data.draw(st.lists(st.tuples(st.sampled_from(PATHS[slug]), BROKEN), min_size=1,
                                   max_size=3), label="mutations")
    leaves = {path[-1] for path, value in mutations if _set(config, path, value)}
    try:
        spec = spec_from_config(config, name=slug, source="test", origin=f"/m/{slug}.json")
    except InputError as e:
        event("error")
        assert f"/m/{slug}.json" in e.message
        assert any(leaf in e.message for leaf in leaves), (leaves, e.message)
        return
    event("valid spec")
    assert len(spec.layer_kinds()) == spec.num_layers
    json.dumps(spec.to_dict(), allow_nan=False)  # no NaN or inf reached the spec


@pytest.mark.parametrize(("key", "value"), [
    ("num_hidden_layers", 2**62), ("num_hidden_layers", math.nan), ("num_hidden_layers", True),
    ("num_hidden_layers", [32]), ("num_hidden_layers", "32"), ("num_hidden_layers", 0),
    ("hidden_size", math.inf), ("hidden_size", -4096), ("hidden_size", 2_000_000),
    ("vocab_size", 10**8), ("max_position_embeddings", 2**40), ("num_key_value_heads", 64),
    ("num_attention_heads", 1.5), ("torch_dtype", ["bfloat16"]), ("tie_word_embeddings", "no"),
    ("rope_scaling", [8.0]), ("architectures", {"a": "LlamaForCausalLM"}),
    ("quantization_config", "fp8"),
])
def test_impossible_value_is_a_named_error_at_once(key: str, value: object) -> None:
    config = dict(FIXTURES[LLAMA], **{key: value})
    start = time.monotonic()
    with pytest.raises(ModelConfigError) as e:
        spec_from_config(config, name="x", source="t", origin="/m/config.json")
    assert time.monotonic() - start < 1
    assert "/m/config.json" in e.value.message and key in e.value.message
    assert e.value.exit_code == 2


@pytest.mark.parametrize(("path", "value"), [
    (("rope_scaling", "factor"), math.nan), (("rope_scaling", "factor"), 0),
    (("rope_scaling", "original_max_position_embeddings"), "8192"),
])
def test_impossible_nested_value_names_its_path(path: tuple[str, str], value: object) -> None:
    config = copy.deepcopy(FIXTURES[LLAMA])
    config[path[0]][path[1]] = value
    with pytest.raises(ModelConfigError, match=re.escape(".".join(path))):
        spec_from_config(config, name="x", source="t")


def test_unreadable_config_file_is_a_model_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"num_hidden_layers": ' + "9" * 5000 + "}")  # too long for int()
    with pytest.raises(ModelConfigError, match=re.escape(str(config))):
        spec_from_dir(tmp_path)
    config.write_bytes(b'{"model_type": "\xff"}')  # not UTF-8
    with pytest.raises(ModelConfigError, match=re.escape(str(config))):
        spec_from_dir(tmp_path)


def test_spec_is_frozen_and_its_sequences_are_tuples() -> None:
    spec = _spec("openai--gpt-oss-20b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_layers = 1  # type: ignore[misc]  # the assignment is what is under test
    assert isinstance(spec.layer_types, tuple) and isinstance(spec.assumptions, tuple)
    derived = dataclasses.replace(spec, assumptions=[*spec.assumptions, "extra"])
    assert derived.assumptions == (*spec.assumptions, "extra")
    d = derived.to_dict()
    assert d["assumptions"][-1] == "extra" and isinstance(d["layer_types"], list)
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(("qc", "key"), [
    ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": "x"}}}},
     "quantization_config.config_groups.g.weights.num_bits"),
    ({"quant_method": "compressed-tensors", "config_groups": [1]}, "config_groups"),
    ({"quant_method": "awq", "group_size": math.nan}, "quantization_config.group_size"),
    ({"quant_method": "fp8", "weight_block_size": {"a": 128}}, "weight_block_size"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": "yes"}, "load_in_4bit"),
])
def test_broken_quantization_config_names_its_key(qc: dict, key: str) -> None:
    cfg = dict(FIXTURES[LLAMA], quantization_config=qc)
    with pytest.raises(ModelConfigError, match=re.escape(key)):
        spec_from_config(cfg, name="x", source="t")
