"""The weight precisions a plan can use, best first, each with why it is (not) available.

A rung of the precision ladder is a `WeightOption`: the model as checkpointed (16-bit, or
whatever the checkpoint already is), online fp8, then 4-bit (a pre-quantized variant from the
profile, else bitsandbytes where the engine version has it). Each option carries its own
`ModelSpec` so the same memory model sizes it, and the vLLM flags that produce it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from launcher.hardware.inventory import GpuInfo
from launcher.memory import capability
from launcher.memory.calibration import EngineCalibration
from launcher.memory.capability import Capability
from launcher.models.profiles import Variant
from launcher.models.quantization import parse_quantization
from launcher.models.spec import ModelSpec


@dataclass(frozen=True)
class WeightOption:
    key: str  # "native", "fp8", "awq", "gptq-int4", "bitsandbytes"
    label: str  # what people read: "bf16", "fp8 W8A8", "4-bit AWQ (variant)"
    level: int  # 0 native, 1 8-bit, 2 4-bit: the rung of the ladder
    spec: ModelSpec
    quantization_flag: str | None  # what `--quantization` gets (None: from the checkpoint)
    quantization_name: str | None  # the decision's `quantization` (null when none)
    model_ref: str | None  # repo id or path the engine loads (a variant has its own)
    note: str = ""


@dataclass(frozen=True)
class Unavailable:
    key: str
    label: str
    level: int
    reason: str


def _cc(gpus: list[GpuInfo]) -> Capability:
    return min(g.compute_capability for g in gpus)


def _too_old(cal: EngineCalibration, method: str, cc: Capability) -> str | None:
    """Why `method` cannot run on compute capability `cc` with this engine version, or None."""
    need = cal.min_capability_for(method)
    if need is None:
        return f"vLLM {cal.version} does not list {method} among its quantization methods"
    if cc < need:
        return (f"{method} needs compute capability ≥ {capability.fmt(need)}; GPU has "
                f"{capability.fmt(cc)}")
    return None


def _native_label(spec: ModelSpec, cc: Capability) -> str:
    if spec.quantization is not None:
        q = spec.quantization
        return f"{q.method} ({q.scheme or f'{q.weight_bits:g}-bit'}, from the checkpoint)"
    if spec.dtype == "bfloat16" and not capability.supports_bf16(cc):
        return "fp16 (bf16 checkpoint cast: GPU has no bf16)"
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[spec.dtype]


def weight_options(spec: ModelSpec, variants: tuple[Variant, ...], gpus: list[GpuInfo],
                   cal: EngineCalibration, model_ref: str | None,
                   wanted: str = "auto") -> tuple[list[WeightOption], list[Unavailable]]:
    """Options in ladder order (highest precision first), filtered by `--quantization`."""
    cc = _cc(gpus) if gpus else (9, 0)
    online = cal.online_quantization
    opts: list[WeightOption] = []
    skipped: list[Unavailable] = []
    q = spec.quantization
    if cal.is_cpu:
        native = WeightOption("native", _native_label(spec, (9, 0)), 0, spec, None,
                              q.method if q is not None else None, model_ref)
        skipped.append(Unavailable("fp8", "fp8 / 4-bit", 1, "the CPU backend serves the "
                                   "checkpoint's own weights; no online quantization"))
        return _filter([native], skipped, wanted)

    opts.append(WeightOption("native", _native_label(spec, cc),
                             0 if q is None else (1 if q.weight_bits >= 8 else 2),
                             spec, None, q.method if q is not None else None, model_ref))
    if q is not None:
        skipped.append(Unavailable("fp8", "fp8", 1, f"the checkpoint is already quantized "
                                   f"({q.method}); vLLM cannot re-quantize it"))
    elif "fp8" not in online:
        skipped.append(Unavailable("fp8", "fp8", 1,
                                   f"vLLM {cal.version} has no online fp8 quantization"))
    elif (why := _too_old(cal, "fp8", cc)) is not None:
        skipped.append(Unavailable("fp8", "fp8", 1, why))
    else:
        w8a8 = capability.fp8_compute(cc)
        opts.append(WeightOption(
            "fp8", "fp8 W8A8 (online)" if w8a8 else "fp8 weight-only (online, Marlin)", 1,
            spec, online["fp8"], online["fp8"], model_ref,
            note="" if w8a8 else f"compute capability {capability.fmt(cc)} < "
                                 f"{capability.fmt(capability.FP8_W8A8_MIN)}: fp8 weights run "
                                 "weight-only through Marlin kernels"))
    four_bit = [v for v in variants if int(v.quantization_config.get("bits") or 0) == 4]
    for v in four_bit:
        vq = parse_quantization(v.quantization_config, f"variant {v.name}")
        if vq is None:
            continue
        label = f"4-bit {vq.method.upper()} ({v.repo_id})"
        if (why := _too_old(cal, vq.method, cc)) is not None:
            skipped.append(Unavailable(v.name, label, 2, why))
            continue
        vspec = replace(spec, quantization=vq, tensors=None, repo_id=v.repo_id,
                        name=f"{spec.name} ({v.name})", assumptions=(
                            *spec.assumptions, f"{v.repo_id}: sized from the base "
                            f"architecture at {vq.weight_bits:g} bits per quantized weight"))
        opts.append(WeightOption(v.name, label, 2, vspec, None, vq.method, v.repo_id,
                                 note=f"pre-quantized variant {v.repo_id} from the profile"))
    if q is None:
        if "bitsandbytes" not in online:
            skipped.append(Unavailable("bitsandbytes", "4-bit bitsandbytes", 2,
                                       f"vLLM {cal.version} has no bitsandbytes support"))
        elif four_bit:
            # A pre-quantized variant is better than in-flight quantization.
            skipped.append(Unavailable(
                "bitsandbytes", "4-bit bitsandbytes", 2, "the profile has a pre-quantized 4-bit "
                "variant, which is used instead; ask for it with --quantization awq, gptq or "
                "4bit"))
        elif (why := _too_old(cal, "bitsandbytes", cc)) is not None:
            skipped.append(Unavailable("bitsandbytes", "4-bit bitsandbytes", 2, why))
        else:
            opts.append(WeightOption(
                "bitsandbytes", "4-bit bitsandbytes (in-flight)", 2, spec,
                online["bitsandbytes"], "bitsandbytes", model_ref,
                note="no pre-quantized 4-bit variant in the profile: in-flight NF4 "
                     "(needs the bitsandbytes package beside vLLM)"))
    return _filter(opts, skipped, wanted)


def _filter(opts: list[WeightOption], skipped: list[Unavailable],
            wanted: str) -> tuple[list[WeightOption], list[Unavailable]]:
    if wanted == "auto":
        return opts, skipped
    keep: Callable[[WeightOption], bool] = {
        "none": lambda o: o.key == "native",
        "fp8": lambda o: o.key == "fp8" or (o.key == "native" and o.level == 1),
        "4bit": lambda o: o.level == 2,
        "awq": lambda o: o.quantization_name == "awq",
        "gptq": lambda o: o.quantization_name == "gptq",
        "bitsandbytes": lambda o: o.key == "bitsandbytes",
    }[wanted]
    chosen = [o for o in opts if keep(o)]
    dropped = [Unavailable(o.key, o.label, o.level, f"--quantization {wanted}")
               for o in opts if not keep(o)]
    return chosen, skipped + dropped
