"""The weight precisions a plan can use, best first, each with why it is (not) available.

A rung of the precision ladder is a `WeightOption`: the model as checkpointed (16-bit, or
whatever the checkpoint already is), online fp8, then 4-bit (a pre-quantized variant from the
profile, else bitsandbytes where the engine version has it). Each option carries its own
`ModelSpec` so the same memory model sizes it, and the vLLM flags that produce it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from launcher.hardware.inventory import GpuInfo
from launcher.memory.overheads import EngineCalibration
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


def _cc(gpus: list[GpuInfo]) -> tuple[int, int]:
    return min(g.compute_capability for g in gpus)


def _cc_int(cc: tuple[int, int]) -> int:
    return cc[0] * 10 + cc[1]


def _native_label(spec: ModelSpec, cc: tuple[int, int]) -> str:
    if spec.quantization is not None:
        q = spec.quantization
        return f"{q.method} ({q.scheme or f'{q.weight_bits:g}-bit'}, from the checkpoint)"
    if spec.dtype == "bfloat16" and cc < (8, 0):
        return "fp16 (bf16 checkpoint cast: GPU has no bf16)"
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[spec.dtype]


def weight_options(spec: ModelSpec, variants: tuple[Variant, ...], gpus: list[GpuInfo],
                   cal: EngineCalibration, model_ref: str | None,
                   wanted: str = "auto") -> tuple[list[WeightOption], list[Unavailable]]:
    """Options in ladder order (highest precision first), filtered by `--quantization`."""
    cc = _cc(gpus) if gpus else (9, 0)
    min_cap = cal.raw.get("min_capability", {})
    online = cal.raw.get("online_quantization", {})
    opts: list[WeightOption] = []
    skipped: list[Unavailable] = []
    pre_quantized = spec.quantization is not None
    if cal.device == "cpu":
        native = WeightOption("native", _native_label(spec, (9, 0)), 0, spec, None,
                              spec.quantization.method if pre_quantized else None, model_ref)
        skipped.append(Unavailable("fp8", "fp8 / 4-bit", 1, "the CPU backend serves the "
                                   "checkpoint's own weights; no online quantization"))
        return _filter([native], skipped, wanted)

    opts.append(WeightOption("native", _native_label(spec, cc), 0 if not pre_quantized else
                             (1 if spec.quantization.weight_bits >= 8 else 2),
                             spec, None, spec.quantization.method if pre_quantized else None,
                             model_ref))
    if pre_quantized:
        skipped.append(Unavailable("fp8", "fp8", 1, f"the checkpoint is already quantized "
                                   f"({spec.quantization.method}); vLLM cannot re-quantize it"))
    elif "fp8" not in online:
        skipped.append(Unavailable("fp8", "fp8", 1,
                                   f"vLLM {cal.version} has no online fp8 quantization"))
    elif _cc_int(cc) < min_cap.get("fp8", 80):
        skipped.append(Unavailable("fp8", "fp8", 1, f"fp8 needs compute capability ≥ "
                                   f"{min_cap.get('fp8', 80) / 10:.1f}; GPU has "
                                   f"{cc[0]}.{cc[1]}"))
    else:
        w8a8 = cc >= (8, 9)
        opts.append(WeightOption(
            "fp8", "fp8 W8A8 (online)" if w8a8 else "fp8 weight-only (online, Marlin)", 1,
            spec, online["fp8"], online["fp8"], model_ref,
            note="" if w8a8 else f"compute capability {cc[0]}.{cc[1]} < 8.9: fp8 weights run "
                                 "weight-only through Marlin kernels"))
    four_bit = [v for v in variants if int(v.quantization_config.get("bits") or 0) == 4]
    for v in four_bit:
        q = parse_quantization(v.quantization_config, f"variant {v.name}")
        if q is None:
            continue
        need = min_cap.get(q.method, 75)
        label = f"4-bit {q.method.upper()} ({v.repo_id})"
        if _cc_int(cc) < need:
            skipped.append(Unavailable(v.name, label, 2, f"{q.method} needs compute capability "
                                       f"≥ {need / 10:.1f}; GPU has {cc[0]}.{cc[1]}"))
            continue
        vspec = replace(spec, quantization=q, tensors=None, repo_id=v.repo_id,
                        name=f"{spec.name} ({v.name})", assumptions=[
                            *spec.assumptions, f"{v.repo_id}: sized from the base "
                            f"architecture at {q.weight_bits:g} bits per quantized weight"])
        opts.append(WeightOption(v.name, label, 2, vspec, None, q.method, v.repo_id,
                                 note=f"pre-quantized variant {v.repo_id} from the profile"))
    if not pre_quantized:
        if "bitsandbytes" not in online:
            skipped.append(Unavailable("bitsandbytes", "4-bit bitsandbytes", 2,
                                       f"vLLM {cal.version} has no bitsandbytes support"))
        elif four_bit:
            pass  # a pre-quantized variant is better than in-flight quantization
        elif _cc_int(cc) < min_cap.get("bitsandbytes", 70):
            skipped.append(Unavailable("bitsandbytes", "4-bit bitsandbytes", 2,
                                       f"bitsandbytes needs compute capability ≥ "
                                       f"{min_cap.get('bitsandbytes', 70) / 10:.1f}"))
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
    keep = {
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
