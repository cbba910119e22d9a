"""Non-weight, non-KV memory: activation peak, non-torch memory, CUDA graphs.

The activation peak is physics first: vLLM's profiling run pushes `max_num_batched_tokens`
through the model, keeps the last hidden states, and samples `N = min(max_num_seqs,
max_num_batched_tokens)` rows: bf16 logits (N × V), three fp32 N × V tensors (float copy,
softmax, random-sample scratch) and a top-k/top-p buffer of min(pow2(N), SMs) × V fp32
(vLLM 0.19 `_dummy_sampler_run`). MoE layers keep their fused-MoE workspaces (T × top-k ×
(3·I/TP + H)). What physics does not explain (allocator slack, the vision encoder's dummy
images) is a small per-version residual fitted on real logs, kept in
`profiles/engines/vllm.yaml` with its source. Non-torch memory (CUDA context, cuBLAS,
NCCL/custom all-reduce buffers) and CUDA-graph pools are calibration constants per shape.
"""

from __future__ import annotations

import math

from launcher.memory.calibration import EngineCalibration
from launcher.memory.weights import padded_vocab
from launcher.models.spec import ModelSpec
from launcher.units import GiB

H100_SMS = 132


def sampler_bytes(vocab: int, n: int, num_sms: int = H100_SMS) -> int:
    """Peak of vLLM's dummy sampler run on the last pipeline stage."""
    vocab_pad = padded_vocab(vocab)
    topk_rows = min(1 << max(0, math.ceil(math.log2(max(1, min(num_sms, n))))), num_sms)
    return n * vocab_pad * 2 + 3 * n * vocab * 4 + topk_rows * vocab * 4


def moe_workspace_bytes(spec: ModelSpec, tokens: int, tp: int, act_bytes: int) -> int:
    """Fused-MoE intermediate caches, allocated in the profiling run and kept."""
    moe = spec.moe
    if moe is None or spec.model_type == "gpt_oss":  # gpt-oss runs its own mxfp4 kernels
        return 0
    inter = moe.expert_intermediate_size / tp
    return int(tokens * moe.experts_per_token * (3 * inter + spec.hidden_size) * act_bytes)


def forward_bytes(spec: ModelSpec, tokens: int, tp: int, act_bytes: int) -> int:
    """Peak of one decoder layer's forward over `tokens`, plus the residual stream."""
    inter = (spec.moe.expert_intermediate_size * spec.moe.experts_per_token if spec.moe
             else spec.intermediate_size) / tp
    q = spec.num_attention_heads * spec.head_dim / tp
    widest = max(3 * inter, q + 2 * max(1, spec.num_kv_heads // tp) * spec.head_dim)
    return int(tokens * (widest + 4 * spec.hidden_size) * act_bytes)


def activation_bytes(spec: ModelSpec, cal: EngineCalibration, *, tp: int, last_stage: bool,
                     max_num_batched_tokens: int, max_num_seqs: int, act_bytes: int) -> int:
    tokens = max_num_batched_tokens
    residual = int(cal.activation.residual_gib * GiB)
    if spec.vision is not None:
        residual += int(cal.activation.multimodal_encoder_gib * GiB)
    moe_ws = moe_workspace_bytes(spec, tokens, tp, act_bytes)
    hidden_out = tokens * spec.hidden_size * act_bytes
    if not last_stage:
        return forward_bytes(spec, tokens, tp, act_bytes) + moe_ws + residual
    n = min(max_num_seqs, max_num_batched_tokens)
    sampler = hidden_out + sampler_bytes(spec.vocab_size, n)
    return max(sampler, forward_bytes(spec, tokens, tp, act_bytes)) + moe_ws + residual


def cuda_graph_bytes(spec: ModelSpec, cal: EngineCalibration, *, layers: int,
                     enforce_eager: bool) -> int:
    """CUDA-graph pool: a base plus a share per captured layer (more for MoE layers)."""
    if enforce_eager:
        return 0
    g = cal.cuda_graph
    per_layer = g.per_moe_layer_gib if spec.moe else g.per_layer_gib
    return int((g.base_gib + per_layer * layers) * GiB)
