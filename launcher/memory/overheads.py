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

What vLLM takes out of its KV budget for CUDA graphs depends on the version and on the model
runner it picks (`uses_v2_runner`): nothing before 0.20; the V1 runner's estimate from 0.20
(`v1_cuda_graph_estimate_bytes`: the forward of the largest capture size plus a per-graph cost
for every further graph of each mode, as vLLM extrapolates from its two largest captures);
nothing for models on the V2 runner until 0.29, whose estimate from then on is a real capture
of the piecewise graphs, i.e. about the pool itself (`cuda_graph_bytes`).
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


def capture_sizes(spec: ModelSpec, cal: EngineCalibration, *, max_num_seqs: int,
                  max_num_batched_tokens: int, compute_capability: tuple[int, int],
                  enforce_eager: bool) -> list[int]:
    """The batch sizes vLLM captures CUDA graphs for (`VllmConfig._set_cudagraph_sizes`,
    no speculative decoding, no user-given sizes); [] without graphs."""
    if enforce_eager:
        return []
    rule = cal.cuda_graphs.capture_sizes
    default_max = rule.sm100_max if compute_capability[0] == 10 else rule.default_max
    largest = rule.model_max.get(spec.model_type) or min(2 * max_num_seqs, default_max)
    largest = min(max_num_batched_tokens, largest)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += list(range(8, min(largest + 1, 256), 8))
    sizes += list(range(256, largest + 1, 16))
    if rule.append_max_num_batched_tokens and max_num_batched_tokens <= largest:
        sizes.append(max_num_batched_tokens)
    if rule.append_max_num_seqs and max_num_seqs <= largest and \
            spec.model_type not in rule.model_max:
        sizes.append(max_num_seqs)
    return sorted(set(sizes))


def cuda_graph_counts(sizes: list[int], max_num_seqs: int) -> tuple[int, int]:
    """(PIECEWISE graphs, FULL decode graphs) of vLLM's default FULL_AND_PIECEWISE mode:
    every capture size, and the sizes a uniform decode batch can take (≤ max_num_seqs;
    v1/cudagraph_dispatcher.py initialize_cudagraph_keys)."""
    return len(sizes), sum(1 for s in sizes if s <= max_num_seqs)


def uses_v2_runner(spec: ModelSpec, cal: EngineCalibration, *, quantized: bool) -> bool:
    """Whether vLLM runs `spec` on Model Runner V2 by default (`use_v2_model_runner`)."""
    rule = cal.model_runner
    if rule.v2_default == "never" or cal.is_cpu:
        return False
    if rule.v2_default == "always":
        return True
    hybrid = spec.linear is not None or "linear" in spec.layer_kinds()  # Falcon-H1: no "linear"
    listed = spec.architecture in rule.v2_architectures
    if rule.v2_default == "listed":
        if not listed:
            return False
        if rule.v2_listed_only_dense_unquantized and (spec.moe is not None or quantized):
            return False
        return not (rule.v2_excludes_hybrid and hybrid)
    # dense_or_listed
    if rule.v2_excludes_hybrid and hybrid and not listed:
        return False
    return listed or spec.moe is None


def v1_cuda_graph_estimate_bytes(spec: ModelSpec, cal: EngineCalibration, *, layers: int,
                                 tp: int, act_bytes: int, sizes: list[int],
                                 max_num_seqs: int) -> int:
    """What the V1 runner's `profile_cudagraph_memory` reports ("Estimated CUDA graph
    memory"): per mode, the first (largest) capture plus (graphs − 1) × the second capture;
    the first captures of the two modes overlap in one pool (max, not sum).

    Approximation: the first capture is the forward of the largest size through one layer
    (the pool holds one layer's intermediates at a time) and the second capture a per-graph
    cost linear in the layers on this GPU, fitted on the estimates vLLM 0.19 logged
    (`cuda_graph_estimate`); vLLM's own figure varies run to run (±30 % and more)."""
    if not sizes:
        return 0
    n_piecewise, n_full = cuda_graph_counts(sizes, max_num_seqs)
    e = cal.cuda_graph_estimate
    per_layer = e.per_graph_per_moe_layer_gib if spec.moe else e.per_graph_per_layer_gib
    per_graph = (e.per_graph_base_gib + per_layer * layers) * GiB
    first = forward_bytes(spec, max(sizes), tp, act_bytes)
    later = max(0, n_piecewise - 1) + max(0, n_full - 1)
    return int(first + later * per_graph)
