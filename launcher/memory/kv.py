"""KV-cache geometry: bytes per block, vLLM's hybrid layer groups, capacity and concurrency.

vLLM (v1) allocates the cache in blocks of `block_size` tokens. Models that mix attention
types (sliding window + full, chunked + full) are split into KV-cache groups of equal size:
the group size is the smallest per-type layer count, each type's layers are cut into groups
of that size (the last one padded; when the largest count is under 1.5× the smallest, the
largest is the group size), and one block id then stands for `group_size` layers'
worth of pages. The log line "GPU KV cache size: N tokens" is `(num_blocks // num_groups) ×
block_size`; "Maximum concurrency" divides num_blocks by the blocks one full-length request
needs in every group (sliding layers need only their window plus one batch, plus one block).
Checked against real 0.19 logs of Gemma 2/3, gpt-oss and Llama 4 (tests/test_kv.py).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from launcher.models.spec import ModelSpec


@dataclass(frozen=True)
class KvGeometry:
    bytes_per_token_layer: int  # one layer's K+V (or MLA latent) for one token on one GPU
    group_size: int  # layers that share one block id
    groups: tuple[tuple[str, int], ...]  # (attention kind, number of groups of that kind)
    block_size: int
    sliding_window: int | None
    chunk_size: int | None

    @property
    def num_groups(self) -> int:
        return sum(n for _, n in self.groups)

    @property
    def bytes_per_block(self) -> int:
        """Memory one block id costs: a page in each of `group_size` layer tensors."""
        return self.bytes_per_token_layer * self.block_size * self.group_size


def kv_bytes_per_token_layer(spec: ModelSpec, tp: int, kv_bytes: int) -> int:
    if spec.mla is not None:
        # MLA caches one compressed latent per token, identical on every TP rank.
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kv_bytes
    heads = max(1, spec.num_kv_heads // tp)
    return 2 * heads * spec.head_dim * kv_bytes


def geometry(spec: ModelSpec, *, tp: int, pp: int, kv_bytes: int, block_size: int,
             stage_layers: int | None = None) -> KvGeometry:
    """KV layout of the worst pipeline stage (the one holding the most layers)."""
    # Chunked local attention (Llama 4) is its own group: the 0.19 Scout log shows 4 groups of
    # 12 (91495 blocks → 365,968 tokens), so the hybrid manager stays on for it.
    kinds = spec.layer_kinds()
    if stage_layers is not None and pp > 1:
        # Pipeline stages hold contiguous layers; the mix of kinds is close to the whole model's.
        share = stage_layers / spec.num_layers
        counts = Counter(kinds)
        per_kind = {k: max(1, round(v * share)) for k, v in counts.items()}
    else:
        per_kind = dict(Counter(kinds))
    if len(per_kind) == 1:
        (kind, n), = per_kind.items()
        groups: tuple[tuple[str, int], ...] = ((kind, 1),)
        group_size = n
    else:
        group_size = min(per_kind.values())
        if max(per_kind.values()) < group_size * 1.5:  # vLLM: avoid many padding layers
            group_size = max(per_kind.values())
        groups = tuple((k, math.ceil(n / group_size)) for k, n in sorted(per_kind.items()))
    return KvGeometry(
        bytes_per_token_layer=kv_bytes_per_token_layer(spec, tp, kv_bytes),
        group_size=group_size, groups=groups, block_size=block_size,
        sliding_window=spec.sliding_window, chunk_size=spec.attention_chunk_size)


def num_blocks(geo: KvGeometry, kv_cache_bytes: int) -> int:
    return max(0, kv_cache_bytes // geo.bytes_per_block)


def kv_tokens(geo: KvGeometry, kv_cache_bytes: int) -> int:
    """What vLLM logs as "GPU KV cache size: N tokens"."""
    return (num_blocks(geo, kv_cache_bytes) // geo.num_groups) * geo.block_size


def blocks_per_request(geo: KvGeometry, max_model_len: int, max_num_batched_tokens: int) -> int:
    """Blocks (summed over groups) one request of `max_model_len` tokens can occupy."""
    total = 0
    full = math.ceil(max_model_len / geo.block_size)
    for kind, n in geo.groups:
        if kind == "sliding" and geo.sliding_window:
            tokens = min(geo.sliding_window - 1 + max_num_batched_tokens, max_model_len)
            per = math.ceil(tokens / geo.block_size) + 1
        elif kind == "chunked" and geo.chunk_size:
            tokens = min(geo.chunk_size + max_num_batched_tokens, max_model_len)
            per = math.ceil(tokens / geo.block_size)
        else:
            per = full
        total += per * n
    return total


def max_concurrency(geo: KvGeometry, kv_cache_bytes: int, max_model_len: int,
                    max_num_batched_tokens: int) -> float:
    need = blocks_per_request(geo, max_model_len, max_num_batched_tokens)
    return num_blocks(geo, kv_cache_bytes) / need if need else 0.0


def bytes_for_one_request(geo: KvGeometry, max_model_len: int, max_num_batched_tokens: int) -> int:
    """vLLM refuses to start when the cache cannot hold one full-length request."""
    return blocks_per_request(geo, max_model_len, max_num_batched_tokens) * geo.bytes_per_block


def bytes_for_requests(geo: KvGeometry, requests: int, max_model_len: int,
                       max_num_batched_tokens: int) -> int:
    """A cache that holds `requests` full-length requests at once (plus vLLM's null block)."""
    blocks = requests * blocks_per_request(geo, max_model_len, max_num_batched_tokens) + 1
    return blocks * geo.bytes_per_block
