"""One engine version's memory constants, typed and validated.

`profiles/engines/vllm.yaml` is data (what vLLM does, version by version, each figure with its
source); `launcher.engines.calibration` reads it once at the edge and hands the memory model
an `EngineCalibration`. Every key is required: a missing or malformed constant is an error
naming it, never a silent default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from launcher.units import GiB

NonNegGiB = Annotated[float, Field(ge=0, le=4096)]


class Device(StrEnum):
    CUDA = "cuda"
    CPU = "cpu"  # vLLM's CPU backend: the "GPU" is one NUMA node's memory


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchTier(_Frozen):
    max_num_batched_tokens: Annotated[int, Field(gt=0)]
    max_num_seqs: Annotated[int, Field(gt=0)]


class BatchDefaults(_Frozen):
    """vLLM's `get_batch_defaults`: a tier by NVML total (and device name)."""

    large_gpu_min_gib: Annotated[float, Field(gt=0)]
    large: BatchTier
    small: BatchTier


class ContextGiB(_Frozen):
    single: NonNegGiB
    distributed: NonNegGiB


class NonTorchGiB(_Frozen):
    single: NonNegGiB
    tp2: NonNegGiB
    tp4_plus: NonNegGiB
    pipeline_only: NonNegGiB


class ActivationGiB(_Frozen):
    residual_gib: NonNegGiB
    multimodal_encoder_gib: NonNegGiB


class CudaGraphGiB(_Frozen):
    base_gib: NonNegGiB
    per_layer_gib: NonNegGiB
    per_moe_layer_gib: NonNegGiB


class EngineCalibration(_Frozen):
    """Constants of one vLLM version (major.minor) on one kind of device."""

    version: str
    device: Device = Device.CUDA
    source: str
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)]
    block_size: Annotated[int, Field(gt=0)]
    subtract_cuda_graph_estimate: bool
    # How this version spells online quantization of a 16-bit checkpoint: method → flag value.
    online_quantization: dict[str, str]
    # Minimum compute capability per quantization method (major·10 + minor).
    min_capability: dict[str, Annotated[int, Field(ge=0, le=200)]]
    batch_defaults: BatchDefaults
    context_gib: ContextGiB
    non_torch_gib: NonTorchGiB
    activation: ActivationGiB
    cuda_graph: CudaGraphGiB

    @property
    def is_cpu(self) -> bool:
        return self.device == Device.CPU

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
