"""One engine version range's rules and memory constants, typed and validated.

`profiles/engines/vllm.yaml` is data (what vLLM does, release range by release range, each rule
with its source, each fitted constant with the logs it was fitted on); `launcher.engines
.calibration` reads it once at the edge and hands the memory model an `EngineCalibration` for
the version asked about. Every key is required: a missing or malformed rule is an error naming
it, never a silent default.

Two kinds of content:

- rules read from vLLM's source (defaults, batch tiers, which model runner, how the KV budget is
  computed, capture sizes, quantization spellings, KV-cache layouts): exact per range;
- overhead constants fitted on real start-up logs (`context_gib`, `non_torch_gib`, `activation`,
  `cuda_graph`, `cuda_graph_estimate`): each carries `fitted_on` (the vLLM version whose logs
  fitted it) and `source`; a range without its own logs carries the nearest fit over and says so
  (`carried_over`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from launcher.units import GiB

NonNegGiB = Annotated[float, Field(ge=0, le=4096)]
Source = Annotated[str, Field(min_length=1)]
_MINOR = re.compile(r"^\d+\.\d+$")


class Device(StrEnum):
    CUDA = "cuda"
    CPU = "cpu"  # vLLM's CPU backend: the "GPU" is one NUMA node's memory


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Fitted(_Frozen):
    """A group of constants fitted on start-up logs of vLLM `fitted_on` (major.minor)."""

    fitted_on: str
    source: Source

    @field_validator("fitted_on")
    @classmethod
    def _minor(cls, v: str) -> str:
        if not _MINOR.match(v):
            raise ValueError(f"fitted_on must be a vLLM major.minor version, got {v!r}")
        return v


# ---- rules read from vLLM's source ---------------------------------------------------------


class BatchTier(_Frozen):
    """One branch of vLLM's `get_batch_defaults` (OpenAI API server usage context): it applies
    when the device's total memory (NVML) is at least `min_gib`, its name contains none of
    `exclude_names` (lower case) and its compute capability is none of `exclude_capabilities`."""

    name: str
    min_gib: Annotated[float, Field(ge=0)]
    exclude_names: tuple[str, ...]
    exclude_capabilities: tuple[str, ...]  # "12.1"
    max_num_batched_tokens: Annotated[int, Field(gt=0)]
    max_num_seqs: Annotated[int, Field(gt=0)]

    @field_validator("exclude_capabilities")
    @classmethod
    def _cc(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cc in v:
            if not _MINOR.match(cc):
                raise ValueError(f"compute capability must read like 12.1, got {cc!r}")
        return v

    def matches(self, nvml_total_bytes: int, name: str, capability: tuple[int, int]) -> bool:
        return (nvml_total_bytes >= self.min_gib * GiB
                and not any(x in name.lower() for x in self.exclude_names)
                and f"{capability[0]}.{capability[1]}" not in self.exclude_capabilities)


class BatchDefaults(_Frozen):
    """vLLM's `get_batch_defaults`: the first tier that matches the device applies."""

    source: Source
    tiers: tuple[BatchTier, ...]

    @model_validator(mode="after")
    def _catch_all(self) -> BatchDefaults:
        if not self.tiers or self.tiers[-1].min_gib != 0 or self.tiers[-1].exclude_names \
                or self.tiers[-1].exclude_capabilities:
            raise ValueError("the last tier must match every device (min_gib 0, no exclusions)")
        return self

    def tier_for(self, nvml_total_bytes: int, name: str,
                 capability: tuple[int, int]) -> BatchTier:
        return next(t for t in self.tiers if t.matches(nvml_total_bytes, name, capability))


class CaptureSizes(_Frozen):
    """`VllmConfig._set_cudagraph_sizes`: the batch sizes CUDA graphs are captured for.

    max = min(2·max_num_seqs, default_max (sm100_max on compute capability 10.x), or a model's
    own override), then min(max_num_batched_tokens, max); sizes 1, 2, 4, 8…248 step 8,
    256…max step 16, plus max_num_batched_tokens and max_num_seqs when they fit, where the
    version appends them."""

    source: Source
    default_max: Annotated[int, Field(gt=0)]
    sm100_max: Annotated[int, Field(gt=0)]
    model_max: dict[str, Annotated[int, Field(gt=0)]]  # model_type → max capture size
    append_max_num_batched_tokens: bool
    append_max_num_seqs: bool


class ModelRunner(_Frozen):
    """Which GPU model runner vLLM uses by default (`VllmConfig.use_v2_model_runner`), and
    whether the V2 runner estimates CUDA-graph memory before sizing the KV cache."""

    source: Source
    # never: V1 always · listed: V2 for `v2_architectures` · dense_or_listed: V2 for every
    # dense (non-MoE) model and the listed ones · always: V2 for every model
    v2_default: Literal["never", "listed", "dense_or_listed", "always"]
    v2_architectures: tuple[str, ...]
    v2_listed_only_dense_unquantized: bool  # 0.22–0.23: listed AND not MoE AND not quantized
    v2_excludes_hybrid: bool  # linear-attention (mamba) hybrids stay on V1
    v2_estimates_cuda_graphs: bool  # V2's profile_cudagraph_memory returns 0 before 0.29


class CudaGraphBudget(_Frozen):
    """How the KV budget treats CUDA graphs (`Worker.determine_available_memory`)."""

    source: Source
    # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default: the estimate is taken out of U·T before
    # the KV cache (unless --kv-cache-memory-bytes is given: vLLM then skips the estimate).
    subtract_estimate: bool
    capture_sizes: CaptureSizes


class KvTokensLog(_Frozen):
    """What the start-up line "GPU KV cache size: N tokens" counts: `blocks` (num_blocks //
    groups × block_size) or `capacity` (int(max concurrency × max_model_len))."""

    tokens: Literal["blocks", "capacity"]
    source: Source


class ContextRule(_Frozen):
    """How the release derives the default context from config.json's rope scaling. Up to 0.29
    YaRN's context is original_max_position_embeddings × factor (and deepseek_yarn's
    max_position_embeddings × factor); from 0.30 both take max_position_embeddings as stated."""

    yarn_as_stated: bool
    source: Source


class KvDtype(_Frozen):
    """Layout of one `--kv-cache-dtype`: bytes one head slot of K (or V) takes per token is
    head_dim·bits/8 + head_dim/group_size·group_scale_bytes + head_scale_bytes (bits 0: the
    model's dtype). MLA models cache the latent + rope: (kv_lora_rank + rope)·bits/8, or
    `mla_bytes_per_token` where the layout is special (fp8_ds_mla: 656)."""

    bits: Annotated[int, Field(ge=0, le=32)]
    group_size: Annotated[int, Field(ge=0)]  # 0: no per-group scales
    group_scale_bytes: Annotated[int, Field(ge=0)]
    head_scale_bytes: Annotated[int, Field(ge=0)]
    mla: bool  # usable with MLA models
    mla_bytes_per_token: Annotated[int, Field(ge=0)]  # 0: the plain latent formula
    mla_only: bool
    source: Source


# ---- constants fitted on logs --------------------------------------------------------------


class ContextGiB(Fitted):
    single: NonNegGiB
    distributed: NonNegGiB


class NonTorchGiB(Fitted):
    single: NonNegGiB
    tp2: NonNegGiB
    tp4_plus: NonNegGiB
    pipeline_only: NonNegGiB
    # Bytes per byte of weights the rank holds (the CPU engine keeps about a second copy).
    per_weight: Annotated[float, Field(ge=0, le=10)]


class ActivationGiB(Fitted):
    residual_gib: NonNegGiB
    multimodal_encoder_gib: NonNegGiB


class CudaGraphGiB(Fitted):
    """The captured graph pool ("Graph capturing finished … took G GiB")."""

    base_gib: NonNegGiB
    per_layer_gib: NonNegGiB
    per_moe_layer_gib: NonNegGiB


class CudaGraphEstimateGiB(Fitted):
    """vLLM's V1 estimate ("Estimated CUDA graph memory: E GiB total"): it captures the two
    largest graphs of each mode and extrapolates, first capture + (graphs − 1) × second
    capture per mode. Modelled as the forward of the largest capture size (first capture) plus
    a per-graph cost that grows with the layers on the GPU (second capture)."""

    per_graph_base_gib: NonNegGiB
    per_graph_per_layer_gib: NonNegGiB
    per_graph_per_moe_layer_gib: NonNegGiB


class EngineCalibration(_Frozen):
    """Rules and constants of one vLLM version range on one kind of device."""

    version: str  # the version asked about, major.minor ("0.25" for 0.25.1)
    range: str  # the modelled release range whose rules these are, e.g. ">=0.21,<0.22"
    note: str = ""  # how the version was resolved, when not plainly ("newer than …")
    device: Device = Device.CUDA
    source: str
    changes: str  # what this range changes against the one before, with sources
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)]
    block_size: Annotated[int, Field(gt=0)]
    max_model_len_auto: bool  # --max-model-len -1 / auto fits the longest length in KV
    defaults_source: Source
    cuda_graphs: CudaGraphBudget
    model_runner: ModelRunner
    # How this version spells online quantization of a 16-bit checkpoint: method → flag value.
    online_quantization: dict[str, str]
    # Every --quantization value that quantizes a 16-bit checkpoint online → stored bits
    # per weight of the quantized layers, and which layers ("linear" or "experts").
    online_methods: dict[str, Annotated[float, Field(gt=0, le=16)]]
    online_experts_only: tuple[str, ...]
    quantization_source: Source
    # Minimum compute capability per quantization method (major·10 + minor).
    min_capability: dict[str, Annotated[int, Field(ge=0, le=200)]]
    kv_cache_dtypes: dict[str, KvDtype]
    kv_tokens_log: KvTokensLog
    context: ContextRule
    batch_defaults: BatchDefaults
    context_gib: ContextGiB
    non_torch_gib: NonTorchGiB
    activation: ActivationGiB
    cuda_graph: CudaGraphGiB
    cuda_graph_estimate: CudaGraphEstimateGiB

    @model_validator(mode="after")
    def _consistent(self) -> EngineCalibration:
        for method, flag in self.online_quantization.items():
            if flag not in self.online_methods:
                raise ValueError(f"online_quantization.{method}: {flag!r} is not among "
                                 "online_methods")
        if "auto" not in self.kv_cache_dtypes:
            raise ValueError("kv_cache_dtypes must list auto")
        return self

    @property
    def subtract_cuda_graph_estimate(self) -> bool:
        """VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS's default: whether vLLM takes its
        CUDA-graph estimate out of the KV budget (`cuda_graphs` cites where)."""
        return self.cuda_graphs.subtract_estimate

    def with_graph_estimate_subtracted(self, subtract: bool) -> EngineCalibration:
        return self.model_copy(update={"cuda_graphs": self.cuda_graphs.model_copy(
            update={"subtract_estimate": subtract})})

    @property
    def is_cpu(self) -> bool:
        return self.device == Device.CPU

    @property
    def carried_over(self) -> dict[str, str]:
        """Fitted constant groups whose logs are of a version outside this range: group →
        the version they were fitted on."""
        groups: dict[str, Fitted] = {
            "context_gib": self.context_gib, "non_torch_gib": self.non_torch_gib,
            "activation": self.activation, "cuda_graph": self.cuda_graph,
            "cuda_graph_estimate": self.cuda_graph_estimate}
        held = SpecifierSet(self.range)
        return {k: g.fitted_on for k, g in groups.items() if Version(g.fitted_on) not in held}

    def non_torch_bytes(self, tp: int, pp: int) -> int:
        nt = self.non_torch_gib
        if tp == 1 and pp == 1:
            return int(nt.single * GiB)
        if tp == 1:
            return int(nt.pipeline_only * GiB)
        return int((nt.tp2 if tp == 2 else nt.tp4_plus) * GiB)

    def context_bytes(self, tp: int, pp: int) -> int:
        """Memory in use at worker start (CUDA context, NCCL init): before vLLM's budget."""
        ctx = self.context_gib
        return int((ctx.single if tp * pp == 1 else ctx.distributed) * GiB)

    def min_capability_for(self, method: str) -> tuple[int, int] | None:
        """The lowest compute capability this version runs `method` on; None when the
        version's table does not list the method (it is then not offered)."""
        cc = self.min_capability.get(method)
        return None if cc is None else (cc // 10, cc % 10)
