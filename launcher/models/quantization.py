"""`quantization_config` → `Quantization`, in vLLM's method names.

Bits per weight include the scales stored beside the quantized values, because that is what
the checkpoint (and the GPU) holds: AWQ/GPTQ 4-bit with group 128 store an fp16 scale (and a
packed zero point) per 128 weights; MXFP4 one E8M0 scale per 32; NVFP4 one FP8 scale per 16.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import ModelConfigError
from launcher.models.fields import MAX_WIDTH, as_bool, as_dict, as_float, as_int, as_list, as_str
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


class _Fields:
    """Typed access to one quantization mapping; errors name `key.field` in `origin`."""

    def __init__(self, d: dict[str, Any], key: str, origin: str) -> None:
        self.d, self.key, self.origin = d, key, origin

    def path(self, name: str) -> str:
        return f"{self.key}.{name}"

    def get_int(self, *names: str, lo: int = 1, hi: int = 64) -> int | None:
        """The first of `names` that is set (not null), else None."""
        for name in names:
            if self.d.get(name) is not None:
                return as_int(self.d[name], self.path(name), self.origin, lo=lo, hi=hi)
        return None

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.d.get(name)
        return default if value is None else as_bool(value, self.path(name), self.origin)

    def get_str(self, *names: str) -> str | None:
        """The first of `names` that is a non-empty value, which must be a string."""
        for name in names:
            if self.d.get(name):
                return as_str(self.d[name], self.path(name), self.origin)
        return None

    def sub(self, name: str) -> _Fields:
        """A nested mapping (absent or empty: no fields)."""
        value = self.d.get(name)
        return _Fields({} if not value else as_dict(value, self.path(name), self.origin),
                       self.path(name), self.origin)


def parse_quantization(qc: Any, origin: str, key: str = "quantization_config"
                       ) -> Quantization | None:
    """`key` is where `qc` sits in the file, for error messages."""
    if qc is None or qc == {}:
        return None
    q = _Fields(as_dict(qc, key, origin), key, origin)
    method = (q.get_str("quant_method", "quant_algo") or "").lower()
    if method == "fp8" or method == "fbgemm_fp8":
        block = qc.get("weight_block_size")
        if block is not None:
            as_list(block, q.path("weight_block_size"), origin)
        return Quantization("fp8", 8.0, group_size=None, activation_bits=8,
                            scheme="fp8-block" if block else "fp8")
    if method in ("awq", "gptq", "awq_marlin", "gptq_marlin"):
        return _awq_gptq(q, method)
    if method == "mxfp4":
        return Quantization("mxfp4", 4.25, group_size=32, scheme="mxfp4")
    if method == "bitsandbytes":
        if q.get_bool("load_in_4bit", False):
            # NF4/FP4: 4 bits + an fp32 absmax per 64 (double quantization shrinks it to ~8 bits).
            double = q.get_bool("bnb_4bit_use_double_quant", False)
            return Quantization("bitsandbytes", 4.127 if double else 4.5, group_size=64,
                                scheme=q.get_str("bnb_4bit_quant_type") or "nf4")
        return Quantization("bitsandbytes", 8.0, scheme="int8")
    if method in ("modelopt", "modelopt_fp4", "nvfp4", "fp4") or method.upper() in ("FP8", "NVFP4"):
        algo = q.get_str("quant_algo") or q.sub("quantization").get_str("quant_algo") or method
        if "FP4" in algo.upper():
            return Quantization("modelopt_fp4", 4.5, group_size=16, activation_bits=4,
                                scheme="nvfp4")
        return Quantization("modelopt", 8.0, activation_bits=8, scheme="fp8")
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    raise ModelConfigError(
        f"{origin}: unknown quantization method {method or '(none)'!r} in "
        f"{q.path('quant_method')}",
        fix=f"Supported methods: {', '.join(KNOWN_METHODS)}. Use a checkpoint in one of them.")


def _awq_gptq(q: _Fields, method: str) -> Quantization:
    bits = q.get_int("bits", "w_bit") or 4
    # group_size: null means per-channel; GPTQ writes -1 for the same.
    name = "group_size" if "group_size" in q.d else "q_group_size"
    group = q.get_int(name, lo=-1, hi=MAX_WIDTH) if name in q.d else 128
    zero = q.get_bool("zero_point", True) if method.startswith("awq") else not q.get_bool("sym", True)
    return Quantization(method.split("_")[0], _group_bits(bits, group, zero), group_size=group,
                        scheme=f"w{bits}a16")


def _compressed_tensors(q: _Fields) -> Quantization:
    groups = q.sub("config_groups")
    if not groups.d:
        return _compressed_tensors_summary(q)
    name, first = next(iter(groups.d.items()))
    group_fields = _Fields(as_dict(first, groups.path(name), q.origin), groups.path(name),
                           q.origin)
    weights, acts = group_fields.sub("weights"), group_fields.sub("input_activations")
    bits = weights.get_int("num_bits") or 8
    kind = weights.get_str("type") or "int"
    strategy = weights.get_str("strategy") or "tensor"
    group = weights.get_int("group_size", hi=MAX_WIDTH) if strategy == "group" else None
    a_bits = acts.get_int("num_bits")
    fmt = q.get_str("format") or ""
    if kind == "float" and bits == 4:
        return Quantization("compressed-tensors", 4.5, group_size=16, activation_bits=a_bits,
                            scheme="nvfp4")
    stored = float(bits) if kind == "float" or group is None else \
        _group_bits(bits, group, not weights.get_bool("symmetric", True))
    scheme = f"w{bits}a{a_bits or 16}" + ("-fp8" if kind == "float" else "")
    return Quantization("compressed-tensors", stored, group_size=group, activation_bits=a_bits,
                        scheme=scheme if not fmt else f"{scheme} ({fmt})")


def _compressed_tensors_summary(q: _Fields) -> Quantization:
    """Summaries written in profiles: {quant_method, weight_bits, group_size, format}."""
    raw_bits = q.d.get("weight_bits")
    if raw_bits is None:
        raise ModelConfigError(f"{q.origin}: compressed-tensors {q.key} without config_groups",
                               fix="Use the checkpoint's complete config.json.")
    group = q.get_int("group_size", hi=MAX_WIDTH)
    fmt = q.get_str("format") or ""
    activation_bits = q.get_int("activation_bits")
    if "float" in fmt or "fp8" in fmt or not group:
        bits = as_float(raw_bits, q.path("weight_bits"), q.origin, lo=0.0, hi=64.0)
    else:
        bits = _group_bits(as_int(raw_bits, q.path("weight_bits"), q.origin, hi=64), group, False)
    return Quantization("compressed-tensors", bits, group_size=group,
                        activation_bits=activation_bits, scheme=fmt or None)
