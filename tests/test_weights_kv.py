"""Sharding and KV rules of the memory model, each against vLLM's behaviour."""

from __future__ import annotations

import json

from conftest import CONFIGS

from launcher.memory import kv as kvm
from launcher.memory.tensors import synthesize
from launcher.memory.weights import padded_vocab, pp_layer_ranges, weights_per_rank
from launcher.models.config import spec_from_config
from launcher.units import GiB


def spec(slug: str):
    return spec_from_config(json.loads((CONFIGS / f"{slug}.json").read_text()), name=slug,
                            source="t")


def test_pp_split_gives_remainder_to_stages_before_last() -> None:
    # vLLM get_pp_indices: 30 layers over 4 stages → [7, 8, 8, 7]
    assert [len(r) for r in pp_layer_ranges(30, 4)] == [7, 8, 8, 7]
    assert [len(r) for r in pp_layer_ranges(32, 2)] == [16, 16]


def test_vocab_padding() -> None:
    assert padded_vocab(49155, 1) == 49216
    assert padded_vocab(128256, 8) == 128256


def test_tp_halves_sharded_weights_but_not_norms() -> None:
    s = spec("meta-llama--llama-3-1-8b-instruct")
    t = synthesize(s)
    one, two = (weights_per_rank(s, t, tp=tp, pp=1, serve_size=2)[0] for tp in (1, 2))
    assert one.by_component["mlp"] == 2 * two.by_component["mlp"]
    assert one.by_component["norms"] == two.by_component["norms"]
    assert round(one.total / GiB, 2) == 14.99  # "Model loading took 14.99 GiB" (0.19 log)


def test_kv_heads_replicate_beyond_tp() -> None:
    s = spec("qwen--qwen2-5-7b-instruct")  # 4 KV heads
    assert kvm.kv_bytes_per_token_layer(s, 8, 2) == kvm.kv_bytes_per_token_layer(s, 4, 2)
    assert kvm.kv_bytes_per_token_layer(s, 2, 2) == 2 * kvm.kv_bytes_per_token_layer(s, 4, 2)


def test_mla_kv_does_not_shrink_with_tp() -> None:
    s = spec("deepseek-ai--deepseek-v3")
    assert kvm.kv_bytes_per_token_layer(s, 1, 2) == kvm.kv_bytes_per_token_layer(s, 8, 2) \
        == (512 + 64) * 2


def test_tied_embedding_is_held_again_by_the_last_pp_stage() -> None:
    s = spec("google--gemma-2-2b-it")
    ranks = weights_per_rank(s, synthesize(s), tp=1, pp=2, serve_size=2)
    assert "embedding" in ranks[0].by_component and "lm_head" in ranks[1].by_component


def test_hybrid_groups_pad_like_vllm() -> None:
    geo = kvm.geometry(spec("google--gemma-3-27b-it"), tp=1, pp=1, kv_bytes=2, block_size=16)
    # 52 sliding + 10 full → groups of 10: 6 sliding groups (padded) + 1 full
    assert geo.group_size == 10 and geo.num_groups == 7
    geo = kvm.geometry(spec("openai--gpt-oss-20b"), tp=1, pp=1, kv_bytes=2, block_size=16)
    assert geo.group_size == 12 and geo.num_groups == 2
