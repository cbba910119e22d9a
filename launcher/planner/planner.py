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
from launcher.planner.nodes import EP_UNAVAILABLE, LINK_NOTE, MOE_DP_NOTE, Nodes, nodes_of
from launcher.planner.options import Unavailable, WeightOption, weight_options
from launcher.planner.plan import ModelInfo, Plan
from launcher.planner.request import PlanRequest
from launcher.planner.search import Memo, check_forced_shape, search
from launcher.planner.speed import SpeedInputs
from launcher.planner.suggest import suggest


def plan(spec: ModelSpec, gpus: Sequence[GpuInfo], cal: EngineCalibration, req: PlanRequest, *,
         variants: tuple[Variant, ...] = (), model_ref: str | None = None,
         engine_version_source: str = "", templates: Sequence[GpuInfo] = (),
         inventory_source: str = "", speed: SpeedInputs | None = None,
         suggestions: bool = True, memo: Memo | None = None) -> Plan:
    """Plan `spec` on `gpus`. `templates` are GPU types to phrase "what would fit" with;
    `speed` predicts each fitting candidate for `req.workload` (the objective ranks by it);
    `suggestions=False` skips working out what would fit (`launcher fit` lists that itself);
    `memo` shares sizing between plans on idle GPUs of one type (`launcher fit`)."""
    req.check(spec.max_position_embeddings)
    if not gpus:
        raise InputError("No GPU to plan for", fix="Pass --gpus, e.g. --gpus 2xH100-80GB.")
    nodes = nodes_of(gpus)
    # Node by node (ranks fill node 0 first, as vLLM numbers them), most free first inside one.
    ordered = sorted(gpus, key=lambda g: (g.node, -(g.total_bytes - g.used_bytes), g.index))
    check_forced_shape(spec, len(ordered), req, req.context_cap(spec.max_position_embeddings),
                       nodes)
    options, unavailable = _weight_options(spec, variants, ordered, cal, model_ref,
                                           req.quantization, memo)
    notes = list(spec.assumptions)
    if nodes.multi:
        notes.append(LINK_NOTE)
        if spec.moe is not None:
            unavailable = [*unavailable, Unavailable("dp-ep", "DP+EP across nodes", 0,
                                                     EP_UNAVAILABLE)]
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
    found = search(spec, ordered, cal, req, options, speed, memo)
    chosen = found.chosen
    if chosen is None:
        if found.slo_miss is not None:
            m = found.slo_miss
            reason = (f"fits on {_here(ordered, nodes)}, but no configuration is "
                      f"predicted to meet the service levels; closest: {m.rung}, "
                      f"TP{m.tp}×PP{m.pp}×DP{m.dp}: {m.reason}")
        else:
            best = _closest(found.tried)
            reason = (f"nothing fits on {_here(ordered, nodes)} with "
                      f"{req.headroom:.0%} headroom and ≥ {req.min_concurrency} sequences"
                      + (f"; closest: {best.rung}, TP{best.tp}×PP{best.pp}: {best.reason}"
                         if best else ""))
        ways = suggest(spec, cal, req, variants, model_ref, ordered, templates or ordered[:1],
                       speed, found) if suggestions else []
        return dataclasses.replace(base, candidates=found.tried, reason=reason,
                                   suggestions=tuple(ways))
    extra = [*chosen.all_notes(), *([chosen.option.note] if chosen.option.note else [])]
    if nodes.multi and spec.moe is not None and chosen.dp > 1:
        extra.append(MOE_DP_NOTE)
    if found.fallback:
        extra.append("no speed prediction for these devices: the shape was chosen by the "
                     "structural rule (fewest GPUs per replica; largest TP for latency), not "
                     "by predicted speed")
    return dataclasses.replace(
        base, feasible=True, chosen=chosen, candidates=found.tried,
        decisions=tuple(explain(spec, chosen, found, ordered, req)),
        notes=tuple(dict.fromkeys([*notes, *extra])))


def _here(gpus: Sequence[GpuInfo], nodes: Nodes) -> str:
    if nodes.multi:
        return f"{nodes.count} nodes × {nodes.gpus_per_node}× {gpus[0].name}"
    return f"{len(gpus)}× {gpus[0].name}"


def _closest(tried: Sequence[Candidate]) -> Candidate | None:
    """The lowest precision tried on the most GPUs: the candidate that came nearest."""
    if not tried:
        return None
    last = [c for c in tried if c.option is tried[-1].option]
    return max(last, key=lambda c: (c.gpus_per_replica * c.dp, c.gpus_per_replica, -c.pp,
                                    c.concurrency))


def _weight_options(spec: ModelSpec, variants: tuple[Variant, ...], gpus: list[GpuInfo],
                    cal: EngineCalibration, model_ref: str | None, quantization: str,
                    memo: Memo | None) -> tuple[list[WeightOption], list[Unavailable]]:
    """`weight_options`, shared through `memo` by plans of one model (`launcher fit`): the
    same option objects then reuse the memory model's per-rank weights."""
    if memo is None:
        return weight_options(spec, variants, gpus, cal, model_ref, quantization)
    key = ("weight-options", min(g.compute_capability for g in gpus), quantization)
    hit = memo.get(key)
    if isinstance(hit, tuple):
        return hit
    found = weight_options(spec, variants, gpus, cal, model_ref, quantization)
    memo[key] = found
    return found
