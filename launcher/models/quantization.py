"""`quantization_config` → `Quantization`, in vLLM's method names.

Bits per weight include the scales stored beside the quantized values, because that is what
the checkpoint (and the GPU) holds: AWQ/GPTQ 4-bit with group 128 store an fp16 scale (and a
packed zero point) per 128 weights; MXFP4 one E8M0 scale per 32; NVFP4 one FP8 scale per 16.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import ModelConfigError
from launcher.models.spec import Quantization

# vLLM method names the estimator knows how to size.
KNOWN_METHODS = ("fp8", "compressed-tensors", "awq", "awq_marlin", "gptq", "gptq_marlin",
                 "mxfp4", "bitsandbytes", "modelopt", "modelopt_fp4", "fbgemm_fp8", "int8")


def _group_bits(bits: int, group_size: int | None, zero_point: bool) -> float:
    """Stored bits per weight: the value plus its share of fp16 scale (and packed zero)."""
    if not group_size or group_size <= 0:
        return float(bits)
    extra = 16 + (bits if zero_point else 0)
    return bits + extra / group_size


def parse_quantization(qc: dict[str, Any] | None, origin: str) -> Quantization | None:
    if not qc:
        return None
    if not isinstance(qc, dict):
        raise ModelConfigError(f"{origin}: quantization_config must be an object",
                               fix="Correct config.json.")
    method = str(qc.get("quant_method") or qc.get("quant_algo") or "").lower()
    if method == "fp8" or method == "fbgemm_fp8":
        block = qc.get("weight_block_size")
        return Quantization("fp8", 8.0, group_size=None, activation_bits=8,
                            scheme="fp8-block" if block else "fp8")
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        bits = int(qc.get("bits") or qc.get("w_bit") or 4)
        group = qc.get("group_size", qc.get("q_group_size", 128))
        group = int(group) if group is not None else None
        zero = bool(qc.get("zero_point", True)) if method.startswith("awq") else not qc.get("sym", True)
        return Quantization(method.split("_")[0], _group_bits(bits, group, zero), group_size=group,
                            scheme=f"w{bits}a16")
    if method == "mxfp4":
        return Quantization("mxfp4", 4.25, group_size=32, scheme="mxfp4")
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            # NF4/FP4: 4 bits + an fp32 absmax per 64 (double quantization shrinks it to ~8 bits).
            double = qc.get("bnb_4bit_use_double_quant", False)
            return Quantization("bitsandbytes", 4.127 if double else 4.5, group_size=64,
                                scheme=str(qc.get("bnb_4bit_quant_type") or "nf4"))
        return Quantization("bitsandbytes", 8.0, scheme="int8")
    if method in ("modelopt", "modelopt_fp4", "nvfp4", "fp4") or method.upper() in ("FP8", "NVFP4"):
        algo = str(qc.get("quant_algo") or (qc.get("quantization") or {}).get("quant_algo") or method)
        if "FP4" in algo.upper():
            return Quantization("modelopt_fp4", 4.5, group_size=16, activation_bits=4,
                                scheme="nvfp4")
        return Quantization("modelopt", 8.0, activation_bits=8, scheme="fp8")
    if method == "compressed-tensors":
        return _compressed_tensors(qc, origin)
    raise ModelConfigError(
        f"{origin}: unknown quantization method {method or '(none)'!r} in quantization_config",
        fix=f"Supported methods: {', '.join(KNOWN_METHODS)}. Use a checkpoint in one of them.")


def _compressed_tensors(qc: dict[str, Any], origin: str) -> Quantization:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or not groups:
        # Summaries written in profiles: {quant_method, weight_bits, group_size, format}.
        bits = qc.get("weight_bits")
        if bits is None:
            raise ModelConfigError(f"{origin}: compressed-tensors config without config_groups",
                                   fix="Use the checkpoint's complete config.json.")
        group = qc.get("group_size")
        fmt = str(qc.get("format") or "")
        is_float = "float" in fmt or "fp8" in fmt
        return Quantization("compressed-tensors",
                            float(bits) if is_float or not group else _group_bits(int(bits), group, False),
                            group_size=group, activation_bits=qc.get("activation_bits"),
                            scheme=fmt or None)
    first = next(iter(groups.values()))
    weights = first.get("weights") or {}
    acts = first.get("input_activations") or {}
    bits = int(weights.get("num_bits") or 8)
    kind = str(weights.get("type") or "int")
    strategy = str(weights.get("strategy") or "tensor")
    group = weights.get("group_size") if strategy == "group" else None
    fmt = str(qc.get("format") or "")
    if kind == "float" and bits == 4:
        return Quantization("compressed-tensors", 4.5, group_size=16,
                            activation_bits=acts.get("num_bits"), scheme="nvfp4")
    stored = float(bits) if kind == "float" or group is None else \
        _group_bits(bits, int(group), not weights.get("symmetric", True))
    a_bits = acts.get("num_bits") if acts else None
    scheme = f"w{bits}a{a_bits or 16}" + ("-fp8" if kind == "float" else "")
    return Quantization("compressed-tensors", stored, group_size=group, activation_bits=a_bits,
                        scheme=scheme if not fmt else f"{scheme} ({fmt})")
