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

from launcher.models.spec import ModelSpec, TensorInfo

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
    extra_norms = 2 if spec.model_type.startswith("gemma2") or spec.model_type.startswith("gemma3") else 0
    qk_norm = spec.model_type.startswith(("qwen3", "gemma3", "olmo2"))

    out.append(TensorInfo("model.embed_tokens.weight", dt, (spec.vocab_size, h)))
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        if spec.mla is not None:
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
        else:
            dense(p + "self_attn.q_proj.weight", q_dim, h, quantize=quant_linear)
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
        _mlp(spec, i, p, dense, vec, out, dt, quant_linear, quant_experts, quant_bits)
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
