"""Which number formats a GPU generation computes in, by CUDA compute capability.

Hardware facts, one place: bf16 tensor cores arrive with Ampere (8.0), fp8 tensor cores with
Ada/Hopper (8.9). Per-method minimums of a vLLM version are data in its calibration
(`EngineCalibration.min_capability_for`).
"""

from __future__ import annotations

Capability = tuple[int, int]

BF16_MIN: Capability = (8, 0)  # vLLM refuses bf16 below (casts to fp16 under --dtype auto)
FP8_W8A8_MIN: Capability = (8, 9)  # below, vLLM runs fp8 weights weight-only (Marlin)


def fmt(cc: Capability) -> str:
    return f"{cc[0]}.{cc[1]}"


def supports_bf16(cc: Capability) -> bool:
    return cc >= BF16_MIN


def fp8_compute(cc: Capability) -> bool:
    """fp8 activations as well as weights (W8A8), not weight-only."""
    return cc >= FP8_W8A8_MIN
