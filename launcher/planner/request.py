"""What the user asks the planner for, checked before any arithmetic.

Conflicting or impossible options fail here with exit code 2 and the fix, so the planner itself
only ever answers "fits" or "does not fit" (exit 3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from launcher.errors import InputError
from launcher.memory.calibration import Device
from launcher.policy import (
    CHAT_INPUT_LEN,
    CHAT_OUTPUT_LEN,
    DEFAULT_HEADROOM,
    DEFAULT_MIN_CONCURRENCY,
    DEFAULT_MIN_CONTEXT,
    KV_CACHE_DTYPE_CHOICES,
    MAX_HEADROOM,
    OBJECTIVES,
    QUANTIZATION_CHOICES,
)
from launcher.speed.workload import Workload


def chat_workload() -> Workload:
    """The workload a plan is predicted for when none is given: chat turns."""
    return Workload(input_len=CHAT_INPUT_LEN, output_len=CHAT_OUTPUT_LEN)


@dataclass(frozen=True)
class PlanRequest:
    headroom: float = DEFAULT_HEADROOM
    max_model_len: int | None = None  # cap; None = the model's maximum
    min_context: int | None = None  # floor when shortening; None = min(4096, model maximum)
    min_concurrency: int = DEFAULT_MIN_CONCURRENCY  # full-length sequences per replica
    quantization: str = "auto"  # one of QUANTIZATION_CHOICES; auto walks the ladder
    kv_cache_dtype: str = "auto"  # auto = the planner may step down to fp8
    tp: int | None = None  # None = auto
    pp: int | None = None
    objective: str = "throughput"  # one of OBJECTIVES
    # Service levels (ms): candidates predicted above them lose; None = no limit.
    max_ttft_ms: float | None = None
    max_itl_ms: float | None = None
    workload: Workload = field(default_factory=chat_workload)  # what speed is predicted for
    enforce_eager: bool = False
    device: Device = Device.CUDA  # CPU: vLLM's CPU backend, budget = host memory
    # Bytes per device added to the runtime budget: the correction a failed launch taught
    # (the memory model underestimated by this much) plus `learned_bytes`; 0 for a first plan.
    reserve_bytes: int = 0
    # The part of `reserve_bytes` that earlier verified boots on this host taught (the boot
    # store, read by `launcher.prepare`; the planner only adds it like any reserve).
    learned_bytes: int = 0

    def __post_init__(self) -> None:
        if self.device in tuple(Device):  # a plain "cpu" from a caller becomes the enum
            object.__setattr__(self, "device", Device(self.device))

    def check(self, model_max_len: int) -> None:
        """Raise InputError for options that contradict each other or the model."""
        if not 0 <= self.headroom <= MAX_HEADROOM:
            raise InputError(f"--headroom {self.headroom} is outside [0, {MAX_HEADROOM}]",
                             fix="Give the fraction of each GPU that stays free, e.g. 0.2.")
        if self.min_concurrency < 1:
            raise InputError(f"--min-concurrency {self.min_concurrency} is below 1",
                             fix="Ask for at least one full-length sequence per replica.")
        if self.quantization not in QUANTIZATION_CHOICES:
            raise InputError(f"--quantization {self.quantization!r} is not one of "
                             f"{', '.join(QUANTIZATION_CHOICES)}",
                             fix="Use auto to let the planner choose.")
        if self.kv_cache_dtype not in KV_CACHE_DTYPE_CHOICES:
            raise InputError(f"--kv-cache-dtype {self.kv_cache_dtype!r} is not auto or fp8",
                             fix="Use auto (planner decides) or fp8.")
        if self.objective not in OBJECTIVES:
            raise InputError(f"--objective {self.objective!r} is not one of "
                             f"{', '.join(OBJECTIVES)}",
                             fix="Use --objective throughput, latency or cost.")
        for flag, ms in (("--max-ttft-ms", self.max_ttft_ms), ("--max-itl-ms", self.max_itl_ms)):
            if ms is not None and not ms > 0:
                raise InputError(f"{flag} {ms} is not above 0",
                                 fix=f"Give the service level in milliseconds, e.g. {flag} 200.")
        if self.device not in tuple(Device):
            raise InputError(f"--device {self.device!r} is not cuda or cpu",
                             fix="Use --device auto, cuda or cpu.")
        for name, v in (("--tp", self.tp), ("--pp", self.pp)):
            if v is not None and v < 1:
                raise InputError(f"{name} {v} is below 1", fix=f"Use {name} auto or a positive size.")
        _check_length("--max-model-len", self.max_model_len, model_max_len, 8192)
        w, cap = self.workload, self.context_cap(model_max_len)
        if w.input_len + w.output_len > cap and w != chat_workload():
            where = "--max-model-len" if self.max_model_len else "the model's maximum context"
            raise InputError(
                f"--input-len {w.input_len:,} + --output-len {w.output_len:,} = "
                f"{w.input_len + w.output_len:,} tokens per request exceed {where} ({cap:,}): "
                "vLLM refuses such requests, so no speed can be predicted for them",
                fix=f"Describe requests of at most {cap:,} tokens in all (the workload is what "
                    "speed is predicted for).")
        _check_length("--min-context", self.min_context, model_max_len, 4096)
        if self.min_context is not None and self.max_model_len is not None \
                and self.min_context > self.max_model_len:
            raise InputError(
                f"--min-context {self.min_context} is above --max-model-len "
                f"{self.max_model_len}",
                fix="The floor must not be above the cap; lower --min-context.")

    def context_cap(self, model_max_len: int) -> int:
        return self.max_model_len or model_max_len

    def context_floor(self, model_max_len: int) -> int:
        cap = self.context_cap(model_max_len)
        floor = self.min_context if self.min_context is not None else DEFAULT_MIN_CONTEXT
        return min(floor, cap)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "device": str(self.device), "workload": self.workload.to_json()}


def _check_length(flag: str, value: int | None, model_max_len: int, example: int) -> None:
    if value is None:
        return
    if value < 1:
        raise InputError(f"{flag} {value} is below 1",
                         fix=f"Give a context length in tokens, e.g. {example}.")
    if value > model_max_len:
        raise InputError(f"{flag} {value} is above the model's maximum context "
                         f"({model_max_len} tokens, from its config)",
                         fix=f"Use {flag} {model_max_len} or less.")
