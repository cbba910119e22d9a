"""What would fit when nothing does: the smallest GPU counts per precision, or how much host
memory the CPU backend would need. Runs the same search on clean template GPUs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import EngineCalibration
from launcher.models.profiles import Variant
from launcher.models.spec import ModelSpec
from launcher.planner.options import WeightOption, weight_options
from launcher.planner.request import PlanRequest
from launcher.planner.search import search
from launcher.policy import SUGGESTION_GPU_COUNTS
from launcher.units import GiB


def suggest(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
            variants: tuple[Variant, ...], model_ref: str | None,
            templates: Sequence[GpuInfo]) -> list[str]:
    """"needs 2× RTX 4090 at 4-bit, or 1× H100-80GB at fp8": smallest counts that fit."""
    out: list[str] = []
    free_req = dataclasses.replace(req, tp=None, pp=None, quantization="auto")
    seen: set[str] = set()
    for t in templates:
        if t.name in seen:
            continue
        seen.add(t.name)
        if t.is_cpu:
            out.append(_cpu_suggestion(spec, cal, free_req, variants, model_ref, t))
            continue
        clean = dataclasses.replace(t, used_bytes=0, free_bytes=t.total_bytes, processes=())
        opts, _ = weight_options(spec, variants, [clean], cal, model_ref, req.quantization)
        by_level: dict[int, WeightOption] = {}
        for o in opts:
            by_level.setdefault(o.level, o)
        phrases = []
        for level in sorted(by_level):
            for n in SUGGESTION_GPU_COUNTS:
                gpus = [dataclasses.replace(clean, index=i) for i in range(n)]
                chosen = search(spec, gpus, cal, free_req, [by_level[level]]).chosen
                if chosen is not None:
                    phrases.append(f"{n}× {t.catalog_name or t.name} at "
                                   f"{by_level[level].label}"
                                   + (f" (context {chosen.max_model_len:,})"
                                      if chosen.max_model_len < free_req.context_cap(
                                          spec.max_position_embeddings) else ""))
                    break
        if phrases:
            out.append("would fit on " + ", or ".join(phrases))
        else:
            out.append(f"does not fit on up to {SUGGESTION_GPU_COUNTS[-1]}× "
                       f"{t.catalog_name or t.name} at any precision")
    return out


def _cpu_suggestion(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
                    variants: tuple[Variant, ...], model_ref: str | None, t: GpuInfo) -> str:
    """Host memory is one device: say how much of it the model would need, at the full and at
    the shortest allowed context."""
    big = 1 << 42  # 4 TiB: enough to see what the plan needs
    roomy = dataclasses.replace(t, total_bytes=big, free_bytes=big - t.used_bytes)
    opts, _ = weight_options(spec, variants, [roomy], cal, model_ref, req.quantization)
    needs = []
    cap = req.context_cap(spec.max_position_embeddings)
    for length in dict.fromkeys((cap, req.context_floor(spec.max_position_embeddings))):
        chosen = search(spec, [roomy], cal, dataclasses.replace(req, max_model_len=length),
                        opts).chosen
        if chosen is not None:
            need = chosen.budgets[0].planned_total / (1 - req.headroom)
            needs.append(f"{need / GiB:.1f} GiB at {length:,} tokens of context")
    needs = [needs[0].replace(" GiB at", " GiB of node memory at", 1), *needs[1:]] if needs \
        else needs
    if not needs:
        return "does not fit in any amount of host memory with these options"
    return (f"would need {', or '.join(needs)} (the node has {t.total_bytes / GiB:.1f} GiB, "
            f"{t.used_bytes / GiB:.1f} GiB used by others)")
