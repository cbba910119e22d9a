"""Every way out when nothing fits, each with its numbers (or how much host memory the CPU
backend would need):

* more GPUs of this type, and other (larger) catalog types: the smallest count per precision,
  found by the same search on clean template GPUs;
* the headroom at which it would fit here: the closest full-context configuration's need on
  its tightest GPU against the limit (`misses 80 % of one H100-80GB by 4.1 GiB`);
* a shorter context, or fewer full-length sequences, that would fit here;
* a lower precision than a forced `--quantization`, or the precision and shape that would
  meet the service levels when memory is not the problem.

Pure: the same search on other inputs; every phrase is built from sized candidates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from launcher.hardware.inventory import GpuInfo
from launcher.memory import kv as kvm
from launcher.memory.budget import limit_bytes
from launcher.memory.calibration import EngineCalibration
from launcher.models.profiles import Variant
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import Candidate, RejectKind
from launcher.planner.nodes import Nodes, nodes_of
from launcher.planner.options import WeightOption, weight_options
from launcher.planner.request import PlanRequest
from launcher.planner.search import SearchResult, search
from launcher.planner.speed import SpeedInputs
from launcher.policy import SUGGESTION_GPU_COUNTS
from launcher.units import GiB

SHORTEST_SUGGESTED_CONTEXT = 512  # a context below this serves no chat turn
SUGGESTION_NODE_COUNTS = (1, 2, 3, 4, 6, 8)  # "would fit on K nodes × …" tries these (≤ 8
# pipeline stages: policy.MAX_PIPELINE_STAGES)


def suggest(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
            variants: tuple[Variant, ...], model_ref: str | None, gpus: Sequence[GpuInfo],
            templates: Sequence[GpuInfo], speed: SpeedInputs | None = None,
            found: SearchResult | None = None) -> list[str]:
    """What would fit, most useful first: other GPU counts and types, then what to change
    here (headroom, context, sequences, precision)."""
    if found is not None and found.slo_miss is not None:
        return _slo_ways(spec, cal, req, variants, model_ref, gpus, speed)
    free_req = dataclasses.replace(req, tp=None, pp=None, quantization="auto",
                                   max_ttft_ms=None, max_itl_ms=None)
    out: list[str] = []
    seen: set[str] = set()
    nodes = nodes_of(gpus)
    if nodes.multi:
        out.append(_more_nodes(spec, cal, free_req, variants, model_ref, gpus[0], nodes))
        seen.add(gpus[0].name)
    for t in templates:
        if t.name in seen:
            continue
        seen.add(t.name)
        if t.is_cpu:
            out.append(_cpu_suggestion(spec, cal, free_req, variants, model_ref, t))
            continue
        out.append(_counts(spec, cal, free_req, variants, model_ref, t))
    if gpus and not gpus[0].is_cpu:
        here = f"{len(gpus)}× {_name(gpus[0])}" if not nodes.multi else \
            f"{nodes.count} nodes × {nodes.gpus_per_node}× {_name(gpus[0])}"
        out.extend(w for w in (
            _headroom(spec, cal, req, variants, model_ref, gpus, here),
            _shorter(spec, cal, req, variants, model_ref, gpus, here, found),
            _fewer(req, found, here),
            _precision(spec, cal, req, variants, model_ref, gpus, here)) if w)
    return out


def _more_nodes(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
                variants: tuple[Variant, ...], model_ref: str | None, t: GpuInfo,
                nodes: Nodes) -> str:
    """"would fit on 4 nodes × 8× H100-80GB at bf16 (TP8×PP4)": the fewest nodes of this
    size per precision, on clean GPUs, TP inside a node and PP across."""
    clean = dataclasses.replace(t, used_bytes=0, free_bytes=t.total_bytes, processes=())
    opts, _ = weight_options(spec, variants, [clean], cal, model_ref, "auto")
    by_level: dict[int, WeightOption] = {}
    for o in opts:
        by_level.setdefault(o.level, o)
    g = nodes.gpus_per_node
    counts = [k for k in SUGGESTION_NODE_COUNTS if k >= nodes.count] or [nodes.count]
    cap = req.context_cap(spec.max_position_embeddings)
    phrases = []
    for level in sorted(by_level):
        for k in counts:
            gpus = [dataclasses.replace(clean, index=i, node=i // g) for i in range(k * g)]
            chosen = search(spec, gpus, cal, req, [by_level[level]]).chosen
            if chosen is not None:
                phrases.append(
                    f"{k} node{'s' if k > 1 else ''} × {g}× {_name(t)} at "
                    f"{by_level[level].label} (TP{chosen.tp}×PP{chosen.pp}×DP{chosen.dp}"
                    + (f", context {chosen.max_model_len:,}" if chosen.max_model_len < cap
                       else "") + f", {chosen.concurrency:.1f} sequences per replica)")
                break
    if phrases:
        return "would fit on " + ", or ".join(phrases)
    return (f"does not fit on up to {counts[-1]} nodes × {g}× {_name(t)} at any precision")


def _name(g: GpuInfo) -> str:
    return g.catalog_name or g.name


def _counts(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
            variants: tuple[Variant, ...], model_ref: str | None, t: GpuInfo) -> str:
    """"would fit on 2× H100-80GB at bf16 (TP2, 131,072 ctx), or 1× … at fp8": the
    smallest count per precision on clean GPUs of type `t`."""
    clean = dataclasses.replace(t, used_bytes=0, free_bytes=t.total_bytes, processes=())
    opts, _ = weight_options(spec, variants, [clean], cal, model_ref, "auto")
    by_level: dict[int, WeightOption] = {}
    for o in opts:
        by_level.setdefault(o.level, o)
    cap = req.context_cap(spec.max_position_embeddings)
    phrases = []
    for level in sorted(by_level):
        for n in SUGGESTION_GPU_COUNTS:
            gpus = [dataclasses.replace(clean, index=i) for i in range(n)]
            chosen = search(spec, gpus, cal, req, [by_level[level]]).chosen
            if chosen is not None:
                phrases.append(
                    f"{n}× {_name(t)} at {by_level[level].label} (TP{chosen.tp}"
                    + (f"×PP{chosen.pp}" if chosen.pp > 1 else "")
                    + (f", context {chosen.max_model_len:,}" if chosen.max_model_len < cap
                       else "") + f", {chosen.concurrency:.1f} sequences per replica)")
                break
    if phrases:
        return "would fit on " + ", or ".join(phrases)
    return (f"does not fit on up to {SUGGESTION_GPU_COUNTS[-1]}× {_name(t)} at any "
            "precision")


def _need_fraction(c: Candidate, req: PlanRequest, length: int) -> float:
    """The share of total memory `c` needs on its tightest GPU with a KV cache that just
    holds `min_concurrency` sequences of `length` tokens."""
    geo = c.geometry
    assert geo is not None
    kv = kvm.bytes_for_requests(geo, req.min_concurrency, length, c.max_num_batched_tokens)
    return max((b.non_kv_bytes + kv) / b.total_bytes for b in c.budgets)


def _headroom(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
              variants: tuple[Variant, ...], model_ref: str | None, gpus: Sequence[GpuInfo],
              here: str) -> str | None:
    """The largest headroom at which it fits on these GPUs (the context may step down to the
    floor as usual): the configuration that needs the least of the tightest GPU at the
    floor context, by how much it misses the limit, and the headroom that holds it."""
    opts, _ = weight_options(spec, variants, list(gpus), cal, model_ref, req.quantization)
    floor = req.context_floor(spec.max_position_embeddings)
    relaxed = dataclasses.replace(req, max_ttft_ms=None, max_itl_ms=None)
    zero = dataclasses.replace(relaxed, headroom=0.0)
    best: tuple[float, Candidate] | None = None
    for opt in opts:
        for c in search(spec, list(gpus), cal, zero, [opt]).tried:
            if c.feasible and c.geometry is not None:
                frac = _need_fraction(c, req, min(floor, c.max_model_len))
                if best is None or frac < best[0]:
                    best = (frac, c)
    if best is None:
        return f"does not fit on {here} with any headroom (not even --headroom 0)"
    frac, c = best
    tight = min(c.budgets, key=lambda b: b.total_bytes)
    over = frac * tight.total_bytes - limit_bytes(tight.total_bytes, req.headroom)
    for h in (math.floor((1 - frac) * 100) / 100, math.floor((1 - frac) * 100) / 100 - 0.01):
        if h < 0:
            continue
        fit = search(spec, list(gpus), cal, dataclasses.replace(relaxed, headroom=h),
                     opts).chosen
        if fit is not None:
            return (f"misses {1 - req.headroom:.0%} of {here} by {over / GiB:.1f} GiB per "
                    f"GPU: fits with --headroom {h:.2f} ({fit.option.label}, TP{fit.tp}"
                    + (f"×PP{fit.pp}" if fit.pp > 1 else "")
                    + f", context {fit.max_model_len:,}, {1 - h:.0%} of each GPU in use)")
    return (f"misses {1 - req.headroom:.0%} of {here} by {over / GiB:.1f} GiB per GPU; it "
            f"would need {frac:.0%} of each GPU")


def _shorter(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
             variants: tuple[Variant, ...], model_ref: str | None, gpus: Sequence[GpuInfo],
             here: str, found: SearchResult | None) -> str | None:
    """The longest context below the floor that would fit here."""
    floor = req.context_floor(spec.max_position_embeddings)
    if floor <= SHORTEST_SUGGESTED_CONTEXT:
        return None
    opts, _ = weight_options(spec, variants, list(gpus), cal, model_ref, req.quantization)
    short = dataclasses.replace(req, min_context=SHORTEST_SUGGESTED_CONTEXT,
                                max_model_len=floor - 1, max_ttft_ms=None, max_itl_ms=None)
    chosen = search(spec, list(gpus), cal, short, opts).chosen
    if chosen is None:
        return None
    return (f"fits on {here} at a {chosen.max_model_len:,}-token context "
            f"({chosen.option.label}, {chosen.concurrency:.1f} sequences): "
            f"--min-context {chosen.max_model_len}")


def _fewer(req: PlanRequest, found: SearchResult | None, here: str) -> str | None:
    """Fewer full-length sequences: what the closest cache-short candidate holds."""
    if found is None:
        return None
    short = [c for c in found.tried if c.rejection is not None
             and c.rejection.kind == RejectKind.KV_SHORT and c.concurrency >= 1]
    if not short:
        return None
    b = max(short, key=lambda c: (c.max_model_len, c.concurrency))
    return (f"holds {b.concurrency:.1f} sequences of {b.max_model_len:,} tokens on {here} "
            f"({b.option.label}, TP{b.tp}" + (f"×PP{b.pp}" if b.pp > 1 else "")
            + f"): --min-concurrency {int(b.concurrency)}")


def _precision(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
               variants: tuple[Variant, ...], model_ref: str | None, gpus: Sequence[GpuInfo],
               here: str) -> str | None:
    """A precision `--quantization` ruled out that would fit here."""
    if req.quantization == "auto":
        return None
    opts, _ = weight_options(spec, variants, list(gpus), cal, model_ref, "auto")
    chosen = search(spec, list(gpus), cal, dataclasses.replace(req, quantization="auto"),
                    opts).chosen
    if chosen is None:
        return None
    return (f"fits on {here} at {chosen.option.label} (TP{chosen.tp}, "
            f"{chosen.max_model_len:,} ctx): --quantization auto")


def _slo_ways(spec: ModelSpec, cal: EngineCalibration, req: PlanRequest,
              variants: tuple[Variant, ...], model_ref: str | None, gpus: Sequence[GpuInfo],
              speed: SpeedInputs | None) -> list[str]:
    """Memory fits; the service levels do not: what the fastest configuration predicts."""
    out = []
    free = dataclasses.replace(req, max_ttft_ms=None, max_itl_ms=None, objective="latency")
    opts, _ = weight_options(spec, variants, list(gpus), cal, model_ref, "auto")
    for opt in opts:
        c = search(spec, list(gpus), cal, free, [opt], speed).chosen
        if c is not None and c.predicted is not None:
            p = c.predicted
            out.append(f"fastest at {opt.label}: TP{c.tp}×PP{c.pp}×DP{c.dp} predicts TTFT "
                       f"{p.basis_ttft_ms:,.0f} ms, ITL {p.basis_itl_ms:.1f} ms "
                       f"({p.latency_basis})")
    if req.max_ttft_ms is not None:
        out.append("a shorter prompt (--input-len) or fewer requests at once "
                   "(--concurrency) lowers TTFT; more GPUs add replicas")
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
