"""transformers as the oracle of config normalization, and as the fallback for unknown families.

vLLM reads a config.json through transformers' config class for its model_type: the class's
defaults fill what the file leaves out, and its `attribute_map` turns other spellings into the
canonical names. So for every fixture (tests/data/configs) and every built-in profile's
`config:` block, the launcher's ModelSpec must agree with that class's attributes. Where the
two legitimately differ, vLLM's reading wins (it decides the memory) and `VLLM_READS` says why,
citing vLLM's source; every other disagreement is a bug in the launcher's alias table or
FAMILY_DEFAULTS (launcher/models/config.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS, ROOT

from launcher.errors import ModelConfigError
from launcher.models import transformers_config
from launcher.models.config import KNOWN_ARCHITECTURES, known_model_type, spec_from_config
from launcher.models.profiles import all_profiles, profile_config
from launcher.models.spec import ModelSpec

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES


def _sources() -> dict[str, dict[str, Any]]:
    out = {f"fixture:{p.stem}": json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))}
    for p in all_profiles():
        if p.config:
            out[f"profile:{p.key}"] = profile_config(p)
    return out


SOURCES = _sources()
# Model types transformers 5.19 has no class for: vLLM reads them with its own config class
# (kimi_k2 checkpoints name DeepseekV3ForCausalLM and are read as DeepSeek V3).
NOT_IN_TRANSFORMERS = sorted(k for k, c in SOURCES.items()
                             if c.get("model_type") not in CONFIG_MAPPING_NAMES)
ORACLE = sorted(k for k in SOURCES if k not in NOT_IN_TRANSFORMERS)

# (model_type, field) → why the launcher's value is vLLM's and not the class attribute.
VLLM_READS = {
    # Mistral3Config's class default is tie_word_embeddings=True and vLLM copies it onto the
    # text config (vllm/config/vllm.py), but the checkpoint ships lm_head.weight, so vLLM unties
    # it again before loading (vllm/config/model.py maybe_untie_word_embeddings): the LM head
    # is its own tensor on the GPU, as the launcher counts it.
    ("mistral3", "tie_word_embeddings"),
}


def _load(config: dict[str, Any]) -> tuple[Any, Any]:
    """(the config object, its text config) as transformers' class for model_type reads it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = CONFIG_MAPPING[config["model_type"]].from_dict(dict(config))
    text = cfg.get_text_config(decoder=True)
    if "_heterogeneity_spec" in vars(text):  # layers differ (Gemma 4): compare global values
        text.allow_global_per_layer_attribute_access = True
    return cfg, text


def _rope(text_cfg: Any) -> tuple[str | None, float | None]:
    """(rope_type, factor) of the scaled (global) rope; transformers 5 names it rope_parameters
    and nests it per layer type where local and global layers differ (Gemma 3)."""
    rope = getattr(text_cfg, "rope_parameters", None) or getattr(text_cfg, "rope_scaling", None)
    if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):
        rope = rope["full_attention"]
    if not isinstance(rope, dict) or rope.get("factor") is None:
        return None, None
    kind = rope.get("rope_type") or rope.get("type")
    return (None if kind == "default" else kind), float(rope["factor"])


def expected(config: dict[str, Any]) -> dict[str, Any]:
    """The fields a ModelSpec holds, as vLLM reads them through transformers' config class."""
    cfg, t = _load(config)
    heads = t.num_attention_heads
    out: dict[str, Any] = {
        "hidden_size": t.hidden_size, "num_layers": t.num_hidden_layers,
        "num_attention_heads": heads,
        "num_kv_heads": getattr(t, "num_key_value_heads", None) or heads,
        "vocab_size": t.vocab_size, "max_position_embeddings": t.max_position_embeddings,
        # vLLM copies a multimodal config's own flag onto its text config (vllm/config/vllm.py,
        # "In Transformers v5, tie_word_embeddings belongs to the config of the class ...").
        "tie_word_embeddings": cfg.tie_word_embeddings if t is not cfg else t.tie_word_embeddings,
        "rope": _rope(t),
    }
    if getattr(t, "kv_lora_rank", None):  # MLA: the latent widths, not head_dim, size the KV
        out["mla"] = (t.kv_lora_rank, t.qk_rope_head_dim, t.qk_nope_head_dim, t.v_head_dim,
                      t.q_lora_rank)
    else:
        out["head_dim"] = getattr(t, "head_dim", None) or t.hidden_size // heads
    if getattr(t, "intermediate_size", None) is not None:  # None: no dense MLP at all
        out["intermediate_size"] = t.intermediate_size
    return out


def actual(spec: ModelSpec, fields: set[str]) -> dict[str, Any]:
    out = {f: getattr(spec, f) for f in fields
           if f not in ("rope", "mla", "max_position_embeddings")}
    # the length before rope scaling: what the file states (the spec keeps the scaled one)
    out["max_position_embeddings"] = spec.config_max_positions or spec.max_position_embeddings
    out["rope"] = (spec.rope_type, spec.rope_factor)
    if "mla" in fields:
        m = spec.mla
        out["mla"] = None if m is None else (m.kv_lora_rank, m.qk_rope_head_dim,
                                             m.qk_nope_head_dim, m.v_head_dim, m.q_lora_rank)
    return out


@pytest.mark.parametrize("source", ORACLE)
def test_spec_agrees_with_the_transformers_config_class(source: str) -> None:
    config = SOURCES[source]
    want = expected(config)
    got = actual(spec_from_config(config, name=source, source="test", origin=source), set(want))
    model_type = config["model_type"]
    diff = {f: (got[f], want[f]) for f in want
            if got[f] != want[f] and (model_type, f) not in VLLM_READS}
    assert not diff, f"{source}: launcher vs transformers {transformers.__version__}: {diff}"


def test_every_documented_disagreement_still_exists() -> None:
    """An entry in VLLM_READS whose disagreement went away is stale: remove it."""
    for model_type, field in VLLM_READS:
        cases = [k for k in ORACLE if SOURCES[k]["model_type"] == model_type]
        assert cases, (model_type, field)
        assert any(actual(spec_from_config(SOURCES[k], name=k, source="t"), {field})[field]
                   != expected(SOURCES[k])[field] for k in cases), (model_type, field)


def test_model_types_transformers_lacks_are_few_and_known() -> None:
    assert {SOURCES[k]["model_type"] for k in NOT_IN_TRANSFORMERS} <= {"kimi_k2"}


# ---- the fallback: a model_type the launcher's table does not know ---------------------------
def test_every_fixture_and_profile_is_in_the_launchers_own_table() -> None:
    """A fixture or profile read through the transformers fallback would plan with its class
    defaults only: each needs its entry (model_type → architectures) in KNOWN_ARCHITECTURES."""
    missing = {}
    for key, config in SOURCES.items():
        types = [config.get("model_type")]
        text = config.get("text_config")
        if isinstance(text, dict):
            types.append(text.get("model_type"))
        for t in types:
            if t and not known_model_type(t):
                missing[key] = t
    assert not missing


# Recurrent (Mamba / Gated DeltaNet) layers are beyond the fallback, as its note says.
PLAIN_FIXTURES = [k for k in ORACLE if k.startswith("fixture:")
                  and spec_from_config(SOURCES[k], name=k, source="t").linear is None]


@pytest.mark.parametrize("source", PLAIN_FIXTURES)
def test_fallback_reads_a_known_family_as_the_table_does(source: str) -> None:
    """The transformers path, forced on a family the table knows, gives the same sizes: what
    an unknown family gets is the table's normalization over the class's attributes."""
    config = SOURCES[source]
    table = spec_from_config(config, name=source, source="t")
    via = transformers_config.normalize(config, config["model_type"], source, KNOWN_ARCHITECTURES)
    fallback = spec_from_config(via.config, name=source, source="t")
    fields = ["hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
              "vocab_size", "max_position_embeddings", "tie_word_embeddings", "rope_factor"]
    if table.mla is None:  # MLA: transformers' head_dim is qk_rope_head_dim; the KV is latent
        fields.append("head_dim")
    got = {f: getattr(fallback, f) for f in fields}
    want = {f: getattr(table, f) for f in fields}
    if config["model_type"] == "mistral3":  # see VLLM_READS: the class default, before untying
        got.pop("tie_word_embeddings")
        want.pop("tie_word_embeddings")
    assert got == want
    assert via.provenance == f"transformers {transformers.__version__} {type(_load(config)[0]).__name__}"


def _llama() -> dict[str, Any]:
    return json.loads((CONFIGS / "meta-llama--llama-3-1-8b-instruct.json").read_text())


def test_unknown_to_the_table_but_known_to_transformers_is_read_through_its_class() -> None:
    # Arcee (transformers' ArceeConfig) is not in the launcher's table; its file leaves
    # head_dim and num_key_value_heads to the class, which derives / defaults them.
    config = {k: v for k, v in _llama().items() if k not in ("head_dim",)}
    config.update(model_type="arcee", architectures=["ArceeForCausalLM"])
    assert not known_model_type("arcee")
    spec = spec_from_config(config, name="arcee", source="t", origin="/m/config.json")
    cls = type(_load(config)[0]).__name__
    assert spec.provenance["config_class"] == f"transformers {transformers.__version__} {cls}"
    assert any(f"read through transformers {transformers.__version__} {cls}" in a
               for a in spec.assumptions)
    assert (spec.hidden_size, spec.num_layers, spec.num_kv_heads, spec.head_dim) == (
        config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"],
        config["hidden_size"] // config["num_attention_heads"])


def test_class_defaults_fill_what_the_file_leaves_out() -> None:
    """A minimal config of a family the table lacks: the class's own defaults are used, and
    the plan says so (never the launcher's guess)."""
    config = {"model_type": "olmo3", "architectures": ["Olmo3ForCausalLM"]}
    _, t = _load(config)
    spec = spec_from_config(config, name="olmo3", source="t", origin="/m/config.json")
    assert (spec.hidden_size, spec.num_layers, spec.vocab_size, spec.intermediate_size,
            spec.max_position_embeddings) == (t.hidden_size, t.num_hidden_layers, t.vocab_size,
                                              t.intermediate_size, t.max_position_embeddings)
    assert "Olmo3Config" in spec.provenance["config_class"]


@pytest.mark.parametrize(("model_type", "arch", "closest"), [
    ("llamma", "LlamaForCausalLm", "LlamaForCausalLM"),
    ("qwen9_moe", "Qwen9MoeForCausalLM", "Qwen3MoeForCausalLM"),
    ("totally_new", None, None),
])
def test_unknown_everywhere_is_exit_2_naming_the_architecture(model_type: str, arch: str | None,
                                                              closest: str | None) -> None:
    config = dict(_llama(), model_type=model_type)
    config.pop("architectures")
    if arch:
        config["architectures"] = [arch]
    with pytest.raises(ModelConfigError) as e:
        spec_from_config(config, name="x", source="t", origin="/m/config.json")
    assert e.value.exit_code == 2
    assert "/m/config.json" in e.value.message and repr(model_type) in e.value.message
    if arch:
        assert repr(arch) in e.value.message
        assert f"closest supported architecture is {closest}" in (e.value.fix or "")
    else:
        assert "no `architectures`" in e.value.message


def test_no_model_type_is_an_error_not_a_silent_default() -> None:
    config = {k: v for k, v in _llama().items() if k != "model_type"}
    with pytest.raises(ModelConfigError, match="LlamaForCausalLM"):
        spec_from_config(config, name="x", source="t", origin="/m/config.json")


def test_a_config_class_rejecting_the_file_is_exit_2() -> None:
    config = {"model_type": "olmo3", "hidden_size": "wide"}
    with pytest.raises(ModelConfigError) as e:
        spec_from_config(config, name="x", source="t", origin="/m/config.json")
    assert e.value.exit_code == 2 and "/m/config.json" in e.value.message


def test_a_layer_count_that_would_hang_a_config_class_is_refused_before_it() -> None:
    # Olmo3Config builds layer_types with range(num_hidden_layers) in its __post_init__.
    config = {"model_type": "olmo3", "num_hidden_layers": 2**62}
    with pytest.raises(ModelConfigError, match="num_hidden_layers"):
        spec_from_config(config, name="x", source="t", origin="/m/config.json")


# ---- planning a known family never imports the heavy stack ---------------------------------
def test_planning_a_known_profile_imports_no_transformers_torch_or_vllm(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text((CONFIGS / "qwen--qwen3-8b.json").read_text())
    code = (
        "import sys\n"
        "from launcher.planner import PlanRequest\n"
        "from launcher.prepare import Target, build_plan\n"
        "for m in ('llama-3.1-8b', 'deepseek-v3', sys.argv[1]):\n"
        "    build_plan(m, PlanRequest(), Target(gpus='8xH100-80GB'))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('transformers', 'torch', 'vllm')))\n")
    p = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
