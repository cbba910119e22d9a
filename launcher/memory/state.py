"""Recurrent state of hybrid models: bytes per sequence, vLLM's page unification, blocks.

Gated DeltaNet and Mamba layers keep one fixed-size state per sequence instead of a KV entry
per token: a short convolution window and the SSM (or delta-rule) matrix. vLLM 0.32/0.33 keep it
in the KV block pool:

- shapes: `MambaStateShapeCalculator` (model_executor/layers/mamba/mamba_utils.py), split over
  TP (Mamba2 replicates groups when `n_groups % tp`: `extra_groups_for_head_shards`);
- dtypes: `MambaStateDtypeCalculator`: the conv state in `--mamba-cache-dtype` (auto: the model
  dtype), the SSM state in `--mamba-ssm-cache-dtype` (auto: the conv dtype), except that the
  model's config hook sets the latter first (Nemotron-H: float32 or the config's value;
  Qwen3.5: the config's `mamba_ssm_dtype`; model_executor/models/config.py);
- one page per layer and sequence; `Platform._align_hybrid_block_size` (platforms/interface.py)
  raises the attention block size to the smallest multiple of the kernel alignment whose
  attention page holds a state page, and pads the state page to the attention page;
- groups as for any hybrid (memory/kv.py); a state group's block per request: one without
  prefix caching (`mamba_cache_mode` "none"), else ("align", the default because hybrid models
  support prefix caching: `ModelConfig.is_prefix_caching_supported`, `MambaModelConfig`)
  `2 + speculative + prefill checkpoint` pages (`MambaSpec.max_memory_usage_bytes`): Mamba2
  mixers export one prefill checkpoint (mamba_mixer2.py `get_kv_cache_spec`); in 0.33 so does
  the Gated DeltaNet with FlashInfer's prefill (Hopper; Blackwell with 128-wide keys), whose
  checkpoints also align blocks to 64 tokens (qwen_gdn_linear_attn.py, platforms/interface.py).

Pure: no I/O, no torch; `tests/test_hybrid.py` checks every figure against vLLM's own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from packaging.version import Version

from launcher.models.spec import DTYPE_SIZE, LinearState, ModelSpec

MAMBA_DTYPES = ("auto", "float32", "bfloat16", "float16")
# FLASHINFER_GDN_CHECKPOINT_ALIGNMENT, v1/attention/backends/gdn_attn.py@v0.33.0
GDN_CHECKPOINT_ALIGNMENT = 64


@dataclass(frozen=True)
class StateRules:
    """How an engine version keeps the state: prefix caching (→ "align" mode), speculative
    tokens, the two state dtypes as given on the command line, and whether the Gated DeltaNet
    exports prefill checkpoints (0.33 with FlashInfer's GDN prefill)."""

    prefix_caching: bool = True
    num_speculative_tokens: int = 0
    mamba_cache_dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    gdn_prefill_checkpoint: bool = False


def rules_for(version: str, compute_capability: tuple[int, int], *, is_cpu: bool,
              state: LinearState | None = None) -> StateRules:
    """vLLM's defaults for `version` on a device of `compute_capability`.

    0.33 resolves the GDN prefill backend to FlashInfer on Hopper (9.x) and on Blackwell
    (10.x, 12.x) with 128-wide keys (`_resolve_gdn_prefill_backend`, assuming CUDA 13 on
    Blackwell), and then exports checkpoints in align mode."""
    gdn_flashinfer = (not is_cpu and state is not None and state.kind == "gdn"
                      and (compute_capability[0] == 9 or (compute_capability[0] in (10, 12)
                                                          and state.head_k_dim == 128)))
    newer = Version(version if version.count(".") else version + ".0") >= Version("0.33")
    return StateRules(gdn_prefill_checkpoint=gdn_flashinfer and newer)


def tp_problem(state: LinearState, tp: int) -> str | None:
    """vLLM's `divide()` asserts of the state shapes: why `tp` cannot split them, or None."""
    if state.kind == "gdn":
        conv = 2 * state.num_k_heads * state.head_k_dim + state.num_v_heads * state.head_v_dim
        checks = [("linear_num_value_heads", state.num_v_heads), ("the GDN conv width", conv)]
    elif state.kind == "mamba1":
        checks = [("the Mamba width (mamba_expand × hidden_size)", state.intermediate_size)]
    else:
        groups = state.n_groups + _extra_groups(state.n_groups, tp)
        checks = [("the Mamba heads", state.num_heads),
                  ("the Mamba conv width", state.intermediate_size + 2 * groups * state.d_state)]
    for what, n in checks:
        if n % tp:
            return f"{what} ({n}) is not divisible by tensor parallel size {tp}"
    return None


def _extra_groups(n_groups: int, tp: int) -> int:
    """`MambaStateShapeCalculator.extra_groups_for_head_shards`."""
    return 0 if n_groups % tp == 0 else tp - n_groups


def state_shapes(state: LinearState, tp: int, num_spec: int = 0
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(conv state, SSM / recurrent state) of one layer for one sequence on one rank, in
    vLLM's default "SD" conv layout (state_len, dim)."""
    if state.kind == "gdn":
        conv_dim = 2 * state.num_k_heads * state.head_k_dim + state.num_v_heads * state.head_v_dim
        return ((state.conv_kernel - 1 + num_spec, conv_dim // tp),
                (state.num_v_heads // tp, state.head_v_dim, state.head_k_dim))
    if state.kind == "mamba1":
        return ((state.conv_kernel - 1, state.intermediate_size // tp),
                (state.intermediate_size // tp, state.d_state))
    groups = state.n_groups + _extra_groups(state.n_groups, tp)
    conv_dim = state.intermediate_size + 2 * groups * state.d_state
    return ((state.conv_kernel - 1 + num_spec, conv_dim // tp),
            (state.num_heads // tp, state.head_dim, state.d_state))


def state_dtypes(state: LinearState, model_dtype: str, rules: StateRules) -> tuple[str, str]:
    """(conv dtype, SSM dtype) as vLLM resolves them (`_mamba_state_dtype` after the model's
    config hook)."""
    conv = model_dtype if rules.mamba_cache_dtype == "auto" else rules.mamba_cache_dtype
    ssm = rules.mamba_ssm_cache_dtype
    if ssm == "auto" and state.ssm_dtype is not None:
        ssm = state.ssm_dtype
    return conv, conv if ssm == "auto" else ssm


def state_page_bytes(state: LinearState, tp: int, model_dtype: str,
                     rules: StateRules | None = None) -> int:
    """One layer's state for one sequence on one rank: vLLM's `MambaSpec.page_size_bytes`
    before padding."""
    rules = rules or StateRules()
    conv_shape, ssm_shape = state_shapes(state, tp, rules.num_speculative_tokens)
    conv_dtype, ssm_dtype = state_dtypes(state, model_dtype, rules)
    return (math.prod(conv_shape) * DTYPE_SIZE[conv_dtype]
            + math.prod(ssm_shape) * DTYPE_SIZE[ssm_dtype])


def state_bytes_per_sequence(spec: ModelSpec, tp: int, model_dtype: str,
                             rules: StateRules | None = None) -> int:
    """Every state layer of the model for one sequence on one rank (unpadded)."""
    if spec.linear is None:
        return 0
    return len(spec.linear.layers) * state_page_bytes(spec.linear, tp, model_dtype, rules)


def hybrid_block_size(attn_token_layer_bytes: int, state_page: int, block_size: int,
                      rules: StateRules | None = None, *, kind: str = "mamba2") -> int:
    """`Platform._align_hybrid_block_size`: the attention block size (tokens) whose page of one
    layer holds one state page. The kernel alignment is the engine's block size (FlashAttention
    and FlashInfer on CUDA take multiples of 16, CPU attention of 32 under a 128 default);
    GDN prefill checkpoints align it to 64 tokens as well."""
    rules = rules or StateRules()
    align = block_size
    if rules.prefix_caching and rules.gdn_prefill_checkpoint and kind == "gdn":
        align = math.lcm(align, GDN_CHECKPOINT_ALIGNMENT)
    needed = align * -(-state_page // (align * attn_token_layer_bytes))
    return max(block_size, needed)


def state_blocks_per_request(state: LinearState, rules: StateRules | None = None) -> int:
    """Pages of one state group a request holds (`MambaSpec.max_memory_usage_bytes` ÷ page)."""
    rules = rules or StateRules()
    if not rules.prefix_caching:
        return 1 + rules.num_speculative_tokens
    checkpoint = state.kind == "mamba2" or (state.kind == "gdn" and rules.gdn_prefill_checkpoint)
    return 2 + rules.num_speculative_tokens + int(checkpoint)
