"""KV-cache geometry: bytes per block, vLLM's hybrid layer groups, capacity and concurrency.

vLLM (v1) allocates the cache in blocks of `block_size` tokens. Models that mix attention
types (sliding window + full, chunked + full) are split into KV-cache groups of equal size:
the group size is the smallest per-type layer count, each type's layers are cut into groups
of that size (the last one padded; when the largest count is under 1.5× the smallest, the
largest is the group size), and one block id then stands for `group_size` layers'
worth of pages. With pipeline parallelism the groups are formed over the whole model (a type's
i-th group takes every n-th layer of that type) and each stage keeps its own layers of every
group, so a stage's block holds as many pages as its fullest group (vLLM `get_kv_cache_configs`).
The log line "GPU KV cache size: N tokens" is `(num_blocks // num_groups) × block_size` up to
0.19 (`kv_tokens`) and `int(concurrency × max_model_len)` in newer versions
(`kv_capacity_tokens`); "Maximum concurrency" divides num_blocks by the blocks one full-length
request needs in every group (sliding layers need only their window plus the tokens in flight,
plus one block).
Checked against real 0.19 logs of Gemma 2/3, gpt-oss and Llama 4
(tests/test_estimate_calibration.py) and against the installed vLLM's own functions
(tests/test_vllm_oracle.py).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from launcher.memory import state as st
from launcher.memory.calibration import KvDtype
from launcher.memory.weights import pp_layer_ranges
from launcher.models.spec import ModelSpec


@dataclass(frozen=True)
class KvGeometry:
    bytes_per_token_layer: int  # one layer's K+V (or MLA latent) for one token on one GPU
    group_size: int  # layers that share one block id
    groups: tuple[tuple[str, int], ...]  # (attention kind, number of groups of that kind)
    block_size: int
    sliding_window: int | None
    chunk_size: int | None
    # Cache pages besides the attention KV that share the block id, per token: DeepSeek Sparse
    # Attention's indexer keys (vLLM puts its `DeepseekV32IndexerCache` layers in the one MLA
    # group, a `UniformTypeKVCacheSpecs` whose block costs the sum of every layer's page).
    extra_bytes_per_token: int = 0
    # Kinds whose pages hold more tokens than `block_size`: vLLM gives every layer the page
    # of the widest (`unify_kv_cache_spec_page_size`), so a layer kind with fewer bytes per
    # token takes block_size × ratio tokens per block (Gemma 4: sliding vs global heads).
    kind_block_sizes: tuple[tuple[str, int], ...] = ()
    # Hybrid models (memory/state.py): the pages one "mamba" group's request holds, and one
    # layer's state per sequence before vLLM pads it to the attention page.
    state_blocks: int = 0
    state_page_bytes: int = 0

    @property
    def num_groups(self) -> int:
        return sum(n for _, n in self.groups)

    @property
    def bytes_per_block(self) -> int:
        """Memory one block id costs: a page in each of `group_size` layer tensors (and in
        each indexer cache)."""
        return (self.bytes_per_token_layer * self.group_size
                + self.extra_bytes_per_token) * self.block_size


# DeepSeek Sparse Attention on CUDA: the indexer backend takes 64-token blocks only and sparse
# FlashMLA multiples of 64, so vLLM's `update_block_size_for_backend` settles on 64
# (v1/attention/backends/mla/indexer.py `get_supported_kernel_block_sizes`, flashmla_sparse.py).
SPARSE_MLA_BLOCK_SIZE = 64
# fp8_ds_mla: 512 fp8 latent values, 4 fp32 scales, 64 bf16 rope values (MLAAttention
# `state_content_bytes`, mla_attention.py).
FP8_DS_MLA_BYTES = 656


def block_size_for(spec: ModelSpec, default: int) -> int:
    """The block size vLLM runs this model with, given the version's default."""
    return SPARSE_MLA_BLOCK_SIZE if spec.indexer is not None else default


def indexer_bytes_per_token(spec: ModelSpec, layers: range | None = None) -> int:
    """Indexer cache of one token over `layers` (all by default): the same on every TP rank."""
    if spec.indexer is None:
        return 0
    own = spec.indexer.layers if layers is None else [i for i in spec.indexer.layers
                                                      if i in layers]
    return len(own) * spec.indexer.cache_bytes_per_token


def attention_shape(spec: ModelSpec, kind: str = "") -> tuple[int, int]:
    """(KV heads, head width) of a layer of `kind`: Gemma 4's full layers have their own."""
    ga = spec.global_attention
    if kind == "full" and ga is not None:
        return ga.num_kv_heads, ga.head_dim
    return spec.num_kv_heads, spec.head_dim


def kv_bytes_per_token_layer(spec: ModelSpec, tp: int, kv_bytes: int, kind: str = "") -> int:
    if spec.mla is not None:
        # MLA caches one compressed latent per token, identical on every TP rank.
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kv_bytes
    kv_heads, d = attention_shape(spec, kind)
    heads = max(1, kv_heads // tp)
    return 2 * heads * d * kv_bytes


def kv_token_layer_bytes(spec: ModelSpec, tp: int, kvd: KvDtype, model_bytes: int,
                         kind: str = "") -> int:
    """One layer's KV (or MLA latent) for one token on one GPU in `kvd`'s layout: packed
    formats (nvfp4, per-token-head scales) add their scales, fp8_ds_mla has its own size."""
    if spec.mla is not None and kvd.mla_bytes_per_token:
        return kvd.mla_bytes_per_token
    if spec.indexer is not None and kvd.bits == 8:
        # Sparse FlashMLA serves any fp8 KV cache in DeepSeek's fp8_ds_mla layout (vLLM
        # mla_attention.py `_canonicalize_sparse_mla_kv_cache_dtype`): 656 bytes per token.
        return FP8_DS_MLA_BYTES
    if kvd.bits == 0:  # the model dtype
        return kv_bytes_per_token_layer(spec, tp, model_bytes, kind)
    if spec.mla is not None:
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kvd.bits // 8
    kv_heads, d = attention_shape(spec, kind)
    heads = max(1, kv_heads // tp)
    slot = d * kvd.bits // 8 + kvd.head_scale_bytes
    if kvd.group_size:
        slot += d // kvd.group_size * kvd.group_scale_bytes
    return 2 * heads * slot


def kv_share_target(spec: ModelSpec, layer: int) -> int | None:
    """The layer whose KV a Gemma 4 KV-shared layer reads: the last layer of its type before
    the shared ones (vLLM gemma4.py `kv_sharing_target_layer_name`); None for layers that own
    their KV."""
    owners = spec.num_layers - spec.kv_shared_layers
    if layer < owners:
        return None
    kinds = spec.layer_kinds()
    return max((i for i in range(owners) if kinds[i] == kinds[layer]), default=None)


def cache_layers(spec: ModelSpec) -> tuple[tuple[str, int], ...]:
    """(kind, layer index) of every cache vLLM allocates: one per attention layer, one "mamba"
    per layer with recurrent state (Falcon-H1's layers have both); "linear"/"none" layers hold
    no KV."""
    owners = spec.num_layers - spec.kv_shared_layers  # Gemma 4: the rest read their KV
    out: list[tuple[str, int]] = [(k, i) for i, k in enumerate(spec.layer_kinds())
                                  if k not in ("linear", "none") and i < owners]
    if spec.linear is not None:
        out += [("mamba", i) for i in spec.linear.layers]
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _vllm_groups(entries: tuple[tuple[str, int], ...]
                 ) -> tuple[int, tuple[tuple[str, tuple[int, ...]], ...]]:
    """vLLM's `_get_kv_cache_groups_uniform_page_size` over the whole model: the group size and
    each group's (kind, layer indices). A kind's n groups take its layers i, i+n, i+2n, …"""
    by_kind: dict[str, list[int]] = {}
    for kind, i in entries:
        by_kind.setdefault(kind, []).append(i)
    counts = [len(v) for v in by_kind.values()]
    size = min(counts)
    if max(counts) < size * 1.5:  # vLLM: avoid many padding layers (one kind: one group)
        size = max(counts)
    groups: list[tuple[str, tuple[int, ...]]] = []
    for kind, layers in sorted(by_kind.items()):
        n = math.ceil(len(layers) / size)
        groups += [(kind, tuple(layers[i::n])) for i in range(n)]
    return size, tuple(groups)


def _stage_group_size(groups: Sequence[tuple[str, Sequence[int]]], stage: range) -> int:
    """Pages one block id holds on a pipeline stage: its layers in the fullest group."""
    return max(sum(1 for layer in members if layer in stage) for _, members in groups)


def geometry(spec: ModelSpec, *, tp: int, pp: int, kv_bytes: int, block_size: int,
             stage_layers: int | None = None, stage: int | None = None,
             token_layer_bytes: int | None = None, model_dtype: str | None = None,
             state_rules: st.StateRules | None = None,
             kv_dtype: KvDtype | None = None) -> KvGeometry:
    """KV layout of one pipeline stage: `stage` (index), else the worst stage holding
    `stage_layers` layers, else (pp = 1) the whole model. `token_layer_bytes` (from
    `kv_token_layer_bytes`) replaces `kv_bytes` for packed KV layouts.

    Chunked local attention (Llama 4) is its own group: the 0.19 Scout log shows 4 groups of
    12 (91495 blocks → 365,968 tokens), so the hybrid manager stays on for it.

    Hybrid models with recurrent state (`spec.linear`) add "mamba" groups; the block size is
    raised until an attention page holds a state page (memory/state.py), in the serving
    `model_dtype` (default: the checkpoint's) and the engine's `state_rules`.

    Layer kinds of different widths (Gemma 4) share one page size, the widest kind's: the
    others hold more tokens per block (`kind_block_sizes`), sized in `kv_dtype`'s layout when
    given (else `kv_bytes` per element)."""
    size, members = _vllm_groups(cache_layers(spec))
    per_layer = token_layer_bytes if token_layer_bytes is not None \
        else kv_bytes_per_token_layer(spec, tp, kv_bytes)
    kind_blocks: tuple[tuple[str, int], ...] = ()
    if spec.global_attention is not None:
        per_layer, kind_blocks = _unified_page(spec, tp, kv_bytes, block_size, kv_dtype,
                                               {kind for kind, _ in members})
    extra = indexer_bytes_per_token(spec)
    if pp > 1 and (stage is not None or stage_layers is not None):
        ranges = pp_layer_ranges(spec.num_layers, pp)
        if stage is not None:
            candidates = [ranges[stage]]
        else:  # every stage of that size; a size no stage has: the worst stage of all
            candidates = [r for r in ranges if len(r) == stage_layers] or ranges
        size, extra = max(((_stage_group_size(members, r), indexer_bytes_per_token(spec, r))
                           for r in candidates), key=lambda se: se[0] * per_layer + se[1])
    groups = tuple(sorted(Counter(kind for kind, _ in members).items()))
    state_blocks = state_page = 0
    if spec.linear is not None:
        state_page = st.state_page_bytes(spec.linear, tp, model_dtype or spec.dtype,
                                         state_rules)
        block_size = st.hybrid_block_size(per_layer, state_page, block_size, state_rules,
                                          kind=spec.linear.kind)
        state_blocks = st.state_blocks_per_request(spec.linear, state_rules)
    return KvGeometry(
        bytes_per_token_layer=per_layer, group_size=size, groups=groups, block_size=block_size,
        sliding_window=spec.sliding_window, chunk_size=spec.attention_chunk_size,
        extra_bytes_per_token=extra, state_blocks=state_blocks, state_page_bytes=state_page,
        kind_block_sizes=kind_blocks)


def _unified_page(spec: ModelSpec, tp: int, kv_bytes: int, block_size: int,
                  kvd: KvDtype | None, kinds: set[str]) -> tuple[int, tuple[tuple[str, int], ...]]:
    """vLLM's `unify_kv_cache_spec_page_size`: every layer gets the largest page; a kind whose
    page divides it holds block_size × ratio tokens, any other is padded to it (same tokens).
    Returns the page's bytes per token at `block_size` and the scaled kinds."""
    per_kind = {k: kv_token_layer_bytes(spec, tp, kvd, kv_bytes, k) if kvd is not None
                else kv_bytes_per_token_layer(spec, tp, kv_bytes, k) for k in kinds}
    widest = max(per_kind.values(), default=0)
    page = widest * block_size
    scaled = tuple(sorted((k, block_size * (page // (b * block_size))) for k, b in per_kind.items()
                          if b != widest and page % (b * block_size) == 0))
    return widest, scaled


def num_blocks(geo: KvGeometry, kv_cache_bytes: int) -> int:
    return max(0, kv_cache_bytes // geo.bytes_per_block)


def kv_tokens(geo: KvGeometry, kv_cache_bytes: int) -> int:
    """What vLLM up to 0.19 logs as "GPU KV cache size: N tokens"."""
    return (num_blocks(geo, kv_cache_bytes) // geo.num_groups) * geo.block_size


def kv_capacity_tokens(geo: KvGeometry, kv_cache_bytes: int, max_model_len: int,
                       max_num_batched_tokens: int) -> int:
    """What newer vLLM logs as "GPU KV cache size: N tokens" (`get_kv_cache_capacity`, seen in
    0.26 logs and read in 0.32): concurrency × max_model_len, which for hybrid models counts the
    tokens a sliding window lets go of."""
    return int(max_concurrency(geo, kv_cache_bytes, max_model_len, max_num_batched_tokens)
               * max_model_len)


def blocks_per_request(geo: KvGeometry, max_model_len: int, max_num_batched_tokens: int) -> int:
    """Blocks (summed over groups) one request of `max_model_len` tokens can occupy.

    `max_num_batched_tokens` is the tokens in flight a sliding or chunked layer keeps besides its
    window: one batch up to 0.19; vLLM 0.32 reserves `max_in_flight_tokens`, one batch per
    concurrent step (2 with async scheduling, its default on GPUs; PP + 1 with the V2 runner)."""
    total = 0
    blocks = dict(geo.kind_block_sizes)
    for kind, n in geo.groups:
        block = blocks.get(kind, geo.block_size)
        if kind == "sliding" and geo.sliding_window:
            tokens = min(geo.sliding_window - 1 + max_num_batched_tokens, max_model_len)
            per = math.ceil(tokens / block) + 1
        elif kind == "chunked" and geo.chunk_size:
            tokens = min(geo.chunk_size + max_num_batched_tokens, max_model_len)
            per = math.ceil(tokens / block)
        elif kind == "mamba":  # a fixed state per sequence, whatever its length
            per = geo.state_blocks
        else:
            per = math.ceil(max_model_len / block)
        total += per * n
    return total


def max_concurrency(geo: KvGeometry, kv_cache_bytes: int, max_model_len: int,
                    max_num_batched_tokens: int) -> float:
    need = blocks_per_request(geo, max_model_len, max_num_batched_tokens)
    return num_blocks(geo, kv_cache_bytes) / need if need else 0.0


def bytes_for_one_request(geo: KvGeometry, max_model_len: int, max_num_batched_tokens: int,
                          *, null_block: bool = False) -> int:
    """vLLM refuses to start when the cache cannot hold one full-length request. Since
    vllm-project/vllm#47272 (merged 2026-07-01, after 0.19) the check also leaves out the block
    the block pool keeps as its null block: `null_block=True`."""
    blocks = blocks_per_request(geo, max_model_len, max_num_batched_tokens) + int(null_block)
    return blocks * geo.bytes_per_block


def bytes_for_requests(geo: KvGeometry, requests: int, max_model_len: int,
                       max_num_batched_tokens: int) -> int:
    """A cache that holds `requests` full-length requests at once (plus vLLM's null block)."""
    blocks = requests * blocks_per_request(geo, max_model_len, max_num_batched_tokens) + 1
    return blocks * geo.bytes_per_block
