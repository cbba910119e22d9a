"""A checkpoint's tensor table, real or synthesized from the architecture.

When safetensors headers are available they are the truth. Without them (a profile, a bare
config.json) the table is synthesized in Hugging Face naming from the architecture, so both
paths go through the same sharding rules in `weights.py`. Quantized linear weights are emitted
as packed `U8` tensors holding exactly `params × bits / 8` bytes (scales included), because their
on-disk layout differs per method but their byte count is what the GPU holds.
Experts are emitted as one fused tensor per layer to keep 256-expert models fast to plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from launcher.models.hybrid import GDN_TYPES
from launcher.models.spec import LinearState, ModelSpec, TensorInfo

_Dense = Callable[..., None]  # dense(name, rows, cols, *, quantize)
_Vec = Callable[[str, int], None]  # vec(name, n)

_SERVE_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def synthesize(spec: ModelSpec, serve_dtype: str | None = None,
               quant_bits: float | None = None, quant_scope: str = "linear") -> list[TensorInfo]:
    """Tensor table a checkpoint of this architecture would have.

    `quant_bits` packs the quantized linear layers (`quant_scope` "linear": attention + MLP +
    experts; "experts": experts only, as MXFP4 checkpoints do). Embeddings, LM head, norms and
    routers always stay in the 16-bit serving dtype.
    """
    dt = _SERVE_DTYPE[serve_dtype or spec.dtype]
    out: list[TensorInfo] = []

    def dense(name: str, rows: int, cols: int, *, quantize: bool) -> None:
        if quantize and quant_bits is not None:
            nbytes = math.ceil(rows * cols * quant_bits / 8)
            out.append(TensorInfo(name, "U8", (nbytes,)))
        else:
            out.append(TensorInfo(name, dt, (rows, cols)))

    def vec(name: str, n: int) -> None:
        out.append(TensorInfo(name, dt, (n,)))

    h, hd = spec.hidden_size, spec.head_dim
    q_dim, kv_dim = spec.num_attention_heads * hd, spec.num_kv_heads * hd
    quant_linear = quant_bits is not None and quant_scope == "linear"
    quant_experts = quant_bits is not None
    extra_norms = 2 if spec.model_type.startswith(("gemma2", "gemma3", "gemma4")) else 0
    qk_norm = spec.model_type.startswith(("qwen3", "gemma3", "olmo2"))
    # Gemma 4: KV-shared layers (the last ones) may carry MLPs of twice the width.
    wide = replace(spec, intermediate_size=2 * spec.intermediate_size) \
        if spec.double_wide_shared_mlp else spec
    kv_owners = spec.num_layers - spec.kv_shared_layers

    out.append(TensorInfo("model.embed_tokens.weight", dt, (spec.vocab_size, h)))
    if spec.per_layer_embedding is not None:  # Gemma 4 PLE: one table for every layer
        ple = spec.per_layer_embedding
        out.append(TensorInfo("model.embed_tokens_per_layer.weight", dt,
                              (ple.vocab_size, spec.num_layers * ple.hidden_size)))
        out.append(TensorInfo("model.per_layer_model_projection.weight", dt,
                              (spec.num_layers * ple.hidden_size, h)))
        vec("model.per_layer_projection_norm.weight", ple.hidden_size)
    kinds = spec.layer_kinds()
    state_layers = set(spec.linear.layers) if spec.linear is not None else set()
    # Qwen3-Next / Qwen3.5 gate the attention output: q_proj also yields the gate.
    q_rows = q_dim * (2 if spec.model_type in GDN_TYPES else 1)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        if kinds[i] in ("linear", "none"):
            pass  # no attention: recurrent state (below) or an MLP-only layer (Nemotron-H)
        elif spec.mla is not None:
            m = spec.mla
            qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                dense(p + "self_attn.q_a_proj.weight", m.q_lora_rank, h, quantize=quant_linear)
                vec(p + "self_attn.q_a_layernorm.weight", m.q_lora_rank)
                dense(p + "self_attn.q_b_proj.weight", spec.num_attention_heads * qk_head,
                      m.q_lora_rank, quantize=quant_linear)
            else:
                dense(p + "self_attn.q_proj.weight", spec.num_attention_heads * qk_head, h,
                      quantize=quant_linear)
            dense(p + "self_attn.kv_a_proj_with_mqa.weight", m.kv_lora_rank + m.qk_rope_head_dim,
                  h, quantize=quant_linear)
            vec(p + "self_attn.kv_a_layernorm.weight", m.kv_lora_rank)
            dense(p + "self_attn.kv_b_proj.weight",
                  spec.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank,
                  quantize=quant_linear)
            dense(p + "self_attn.o_proj.weight", h, spec.num_attention_heads * m.v_head_dim,
                  quantize=quant_linear)
            if spec.indexer is not None and i in spec.indexer.layers:
                _indexer(spec, p + "self_attn.indexer.", dense, out, dt, quant_linear)
        elif spec.global_attention is not None:
            _gemma4_attention(spec, kinds[i], i >= kv_owners, p, dense, vec, quant_linear)
        else:
            dense(p + "self_attn.q_proj.weight", q_rows, h, quantize=quant_linear)
            dense(p + "self_attn.k_proj.weight", kv_dim, h, quantize=quant_linear)
            dense(p + "self_attn.v_proj.weight", kv_dim, h, quantize=quant_linear)
            dense(p + "self_attn.o_proj.weight", h, q_dim, quantize=quant_linear)
            if spec.attention_bias:
                vec(p + "self_attn.q_proj.bias", q_dim)
                vec(p + "self_attn.k_proj.bias", kv_dim)
                vec(p + "self_attn.v_proj.bias", kv_dim)
                if spec.model_type in ("phi", "gpt_oss", "gpt2", "gpt_neox", "starcoder2"):
                    vec(p + "self_attn.o_proj.bias", h)
            if spec.model_type == "gpt_oss":
                vec(p + "self_attn.sinks", spec.num_attention_heads)
            if qk_norm:
                vec(p + "self_attn.q_norm.weight", hd)
                vec(p + "self_attn.k_norm.weight", hd)
        if i in state_layers:
            assert spec.linear is not None
            _state(spec.linear, h, p, dense, vec, quant_linear)
        if spec.model_type == "nemotron_h":  # one mixer per layer: MLP-only layers have the MLP
            if kinds[i] == "none":
                _mlp(spec, i, p, dense, vec, out, dt, quant_linear, quant_experts, quant_bits)
            vec(p + "norm.weight", h)
            continue
        _mlp(wide if i >= kv_owners else spec, i, p, dense, vec, out, dt, quant_linear,
             quant_experts, quant_bits)
        vec(p + "input_layernorm.weight", h)
        vec(p + "post_attention_layernorm.weight", h)
        if spec.model_type == "phi":  # LayerNorm with bias, one per layer (parallel block)
            out.pop()
            vec(p + "input_layernorm.bias", h)
        for k in range(extra_norms):
            vec(p + f"extra_layernorm_{k}.weight", h)
    vec("model.norm.weight", h)
    if spec.model_type == "phi":
        vec("model.final_layernorm.bias", h)
        vec("lm_head.bias", spec.vocab_size)
    if not spec.tie_word_embeddings:
        out.append(TensorInfo("lm_head.weight", dt, (spec.vocab_size, h)))
    if spec.vision is not None:
        out.append(TensorInfo("vision_tower.all_parameters", dt, (spec.vision.params,)))
    return out


def _indexer(spec: ModelSpec, p: str, dense: _Dense, out: list[TensorInfo], dt: str,
             quant_linear: bool) -> None:
    """DeepSeek Sparse Attention's indexer, replicated on every TP rank (vLLM: wq_b a
    ReplicatedLinear under the checkpoint's quantization; wk and weights_proj one unquantized
    `disable_tp` linear, fp8 wk upcast to bf16; k_norm a float32 LayerNorm)."""
    assert spec.indexer is not None and spec.mla is not None and spec.mla.q_lora_rank
    ix = spec.indexer
    dense(p + "wq_b.weight", ix.n_heads * ix.head_dim, spec.mla.q_lora_rank,
          quantize=quant_linear)
    out.append(TensorInfo(p + "wk.weight", dt, (ix.head_dim, spec.hidden_size)))
    out.append(TensorInfo(p + "weights_proj.weight", dt, (ix.n_heads, spec.hidden_size)))
    out.append(TensorInfo(p + "k_norm.weight", "F32", (ix.head_dim,)))
    out.append(TensorInfo(p + "k_norm.bias", "F32", (ix.head_dim,)))


def _state(ls: LinearState, h: int, p: str, dense: _Dense, vec: _Vec, quant: bool) -> None:
    """A Gated DeltaNet or Mamba mixer (vLLM qwen3_next.py GatedDeltaNet, mamba_mixer2.py,
    mamba_mixer.py): projections split over TP, per-head vectors and norms small."""
    k = ls.conv_kernel
    if ls.kind == "gdn":
        key, value = ls.num_k_heads * ls.head_k_dim, ls.num_v_heads * ls.head_v_dim
        dense(p + "linear_attn.in_proj_qkvz.weight", 2 * key + 2 * value, h, quantize=quant)
        dense(p + "linear_attn.in_proj_ba.weight", 2 * ls.num_v_heads, h, quantize=False)
        dense(p + "linear_attn.conv1d.weight", 2 * key + value, k, quantize=False)
        vec(p + "linear_attn.dt_bias", ls.num_v_heads)
        vec(p + "linear_attn.A_log", ls.num_v_heads)
        vec(p + "linear_attn.norm.weight", ls.head_v_dim)
        dense(p + "linear_attn.out_proj.weight", h, value, quantize=quant)
        return
    d = ls.intermediate_size
    if ls.kind == "mamba1":
        dense(p + "mamba.in_proj.weight", 2 * d, h, quantize=quant)
        dense(p + "mamba.conv1d.weight", d, k, quantize=False)
        dense(p + "mamba.x_proj.weight", ls.dt_rank + 2 * ls.d_state, d, quantize=quant)
        dense(p + "mamba.dt_proj.weight", d, ls.dt_rank, quantize=quant)
        dense(p + "mamba.A_log", d, ls.d_state, quantize=False)
        for name, n in (("dt_proj.bias", d), ("D", d), ("dt_layernorm.weight", ls.dt_rank),
                        ("b_layernorm.weight", ls.d_state), ("c_layernorm.weight", ls.d_state)):
            vec(p + "mamba." + name, n)
        if ls.conv_bias:
            vec(p + "mamba.conv1d.bias", d)
        dense(p + "mamba.out_proj.weight", h, d, quantize=quant)
        return
    conv = d + 2 * ls.n_groups * ls.d_state
    dense(p + "mixer.in_proj.weight", d + conv + ls.num_heads, h, quantize=quant)
    dense(p + "mixer.conv1d.weight", conv, k, quantize=False)
    if ls.conv_bias:
        vec(p + "mixer.conv1d.bias", conv)
    for name, n in (("dt_bias", ls.num_heads), ("A_log", ls.num_heads), ("D", ls.num_heads),
                    ("norm.weight", d)):
        vec(p + "mixer." + name, n)
    dense(p + "mixer.out_proj.weight", h, d, quantize=quant)


def _gemma4_attention(spec: ModelSpec, kind: str, shared: bool, p: str, dense: _Dense,
                      vec: _Vec, quant_linear: bool) -> None:
    """Gemma 4 attention (vLLM gemma4.py): full layers use the global head width and KV heads;
    with `attention_k_eq_v` they ship k_proj only (loaded as K and V); KV-shared layers have
    q_proj and o_proj alone; every layer with a PLE gets its gate and projection (replicated)."""
    ga = spec.global_attention
    assert ga is not None
    h = spec.hidden_size
    kv_heads, hd = (ga.num_kv_heads, ga.head_dim) if kind == "full" else \
        (spec.num_kv_heads, spec.head_dim)
    q_dim, kv_dim = spec.num_attention_heads * hd, kv_heads * hd
    dense(p + "self_attn.q_proj.weight", q_dim, h, quantize=quant_linear)
    if not shared:
        dense(p + "self_attn.k_proj.weight", kv_dim, h, quantize=quant_linear)
        if not (ga.k_eq_v and kind == "full"):
            dense(p + "self_attn.v_proj.weight", kv_dim, h, quantize=quant_linear)
        vec(p + "self_attn.k_norm.weight", hd)
    dense(p + "self_attn.o_proj.weight", h, q_dim, quantize=quant_linear)
    vec(p + "self_attn.q_norm.weight", hd)
    ple = spec.per_layer_embedding
    if ple is not None:
        dense(p + "per_layer_input_gate.weight", ple.hidden_size, h, quantize=False)
        dense(p + "per_layer_projection.weight", h, ple.hidden_size, quantize=False)
        vec(p + "post_per_layer_input_norm.weight", h)


def _mlp(spec: ModelSpec, i: int, p: str, dense: _Dense, vec: _Vec, out: list[TensorInfo], dt: str,
         quant_linear: bool, quant_experts: bool, quant_bits: float | None) -> None:
    h = spec.hidden_size
    moe = spec.moe
    is_moe_layer = moe is not None and i >= moe.dense_layers and (
        (i + 1) % moe.moe_layer_step == 0 if moe.moe_layer_step > 1 else True)
    n_mats = 3 if spec.gated_mlp else 2
    if not is_moe_layer:
        inter = moe.dense_intermediate_size if moe is not None else spec.intermediate_size
        if spec.gated_mlp:
            dense(p + "mlp.gate_proj.weight", inter, h, quantize=quant_linear)
            dense(p + "mlp.up_proj.weight", inter, h, quantize=quant_linear)
        else:
            dense(p + "mlp.fc1.weight", inter, h, quantize=quant_linear)
        dense(p + "mlp.down_proj.weight", h, inter, quantize=quant_linear)
        if spec.mlp_bias:
            vec(p + "mlp.fc1.bias", inter)
            vec(p + "mlp.fc2.bias", h)
        return
    assert moe is not None
    e, ei = moe.num_experts, moe.expert_intermediate_size
    numel = e * n_mats * ei * h
    if quant_experts and quant_bits is not None:
        out.append(TensorInfo(p + "mlp.experts.fused", "U8", (math.ceil(numel * quant_bits / 8),)))
    else:
        out.append(TensorInfo(p + "mlp.experts.fused", dt, (e, n_mats * ei, h)))
    if spec.model_type == "gpt_oss":  # expert biases
        out.append(TensorInfo(p + "mlp.experts.bias", dt, (e, 3 * ei)))
    out.append(TensorInfo(p + "mlp.gate.weight", dt, (e, h)))  # router: replicated
    if spec.model_type == "gpt_oss":
        vec(p + "mlp.gate.bias", e)
    if moe.shared_expert_intermediate_size:
        si = moe.shared_expert_intermediate_size
        dense(p + "mlp.shared_experts.gate_proj.weight", si, h, quantize=quant_linear)
        dense(p + "mlp.shared_experts.up_proj.weight", si, h, quantize=quant_linear)
        dense(p + "mlp.shared_experts.down_proj.weight", h, si, quantize=quant_linear)
        if spec.model_type == "qwen2_moe":
            out.append(TensorInfo(p + "mlp.shared_expert_gate.weight", dt, (1, h)))
