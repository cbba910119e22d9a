"""`plan()`: the planner's one entry point. Checks the request, lists the weight options,
searches, and assembles the frozen `Plan` with its explanations or its suggestions.
Pure: no I/O, no torch, no vllm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import EngineCalibration
from launcher.models.profiles import Variant
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import Candidate
from launcher.planner.explain import explain
from launcher.planner.options import weight_options
from launcher.planner.plan import ModelInfo, Plan
from launcher.planner.request import PlanRequest
from launcher.planner.search import check_forced_shape, search
from launcher.planner.suggest import suggest


def plan(spec: ModelSpec, gpus: Sequence[GpuInfo], cal: EngineCalibration, req: PlanRequest, *,
         variants: tuple[Variant, ...] = (), model_ref: str | None = None,
         engine_version_source: str = "", templates: Sequence[GpuInfo] = (),
         inventory_source: str = "") -> Plan:
    """Plan `spec` on `gpus`. `templates` are GPU types to phrase "what would fit" with."""
    req.check(spec.max_position_embeddings)
    if not gpus:
        raise InputError("No GPU to plan for", fix="Pass --gpus, e.g. --gpus 2xH100-80GB.")
    ordered = sorted(gpus, key=lambda g: (-(g.total_bytes - g.used_bytes), g.index))
    check_forced_shape(spec, len(ordered), req, req.context_cap(spec.max_position_embeddings))
    options, unavailable = weight_options(spec, variants, ordered, cal, model_ref,
                                          req.quantization)
    notes = list(spec.assumptions)
    if spec.mla is not None:
        notes.append(
            f"MLA: every GPU caches the whole compressed latent ({spec.mla.kv_lora_rank} + "
            f"{spec.mla.qk_rope_head_dim} values per token per layer) of the layers it holds; "
            "tensor parallelism does not shrink the KV cache per GPU, pipeline stages do")
    base = Plan(feasible=False, model=ModelInfo.of(spec, model_ref), engine_version=cal.version,
                engine_version_source=engine_version_source, request=req,
                inventory_source=inventory_source, unavailable=tuple(unavailable),
                notes=tuple(notes))
    if not options:
        return dataclasses.replace(base, reason=(
            f"no weight precision is available for --quantization {req.quantization}: "
            + "; ".join(f"{u.label}: {u.reason}" for u in unavailable)))
    found = search(spec, ordered, cal, req, options)
    chosen = found.chosen
    if chosen is None:
        best = _closest(found.tried)
        return dataclasses.replace(
            base, candidates=found.tried,
            reason=(f"nothing fits on {len(ordered)}× {ordered[0].name} with "
                    f"{req.headroom:.0%} headroom and ≥ {req.min_concurrency} sequences"
                    + (f"; closest: {best.rung}, TP{best.tp}×PP{best.pp}: {best.reason}"
                       if best else "")),
            suggestions=tuple(suggest(spec, cal, req, variants, model_ref,
                                      templates or ordered[:1])))
    extra = [*chosen.all_notes(), *([chosen.option.note] if chosen.option.note else [])]
    return dataclasses.replace(
        base, feasible=True, chosen=chosen, candidates=found.tried,
        decisions=tuple(explain(spec, chosen, found, ordered, req)),
        notes=tuple(dict.fromkeys([*notes, *extra])))


def _closest(tried: Sequence[Candidate]) -> Candidate | None:
    """The lowest precision tried on the most GPUs: the candidate that came nearest."""
    if not tried:
        return None
    last = [c for c in tried if c.option is tried[-1].option]
    return max(last, key=lambda c: (c.gpus_per_replica * c.dp, c.gpus_per_replica, -c.pp,
                                    c.concurrency))
