"""The planning policy (DESIGN §4): walk the ladder, keep the first rung that holds, explain.

Ladder, best first, for each weight precision (as checkpointed → fp8 → 4-bit):
KV cache in the model dtype at full context → fp8 KV at full context → fp8 KV at the longest
context (not below the floor) that still holds `min_concurrency` sequences. On a rung every
valid shape (TP × PP, spare GPUs as DP replicas) is sized; throughput keeps the fewest GPUs per
replica, latency the largest TP. Inside a shape the batch steps down through
`policy.BATCH_TIERS` before the shape is given up, because a smaller activation peak is cheaper
than a lower precision. The planner only searches: every byte comes from `launcher.memory`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import Device, EngineCalibration
from launcher.memory.estimate import Refusal, validate_shape
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import (
    Candidate,
    Config,
    RejectKind,
    Status,
    evaluate,
    longest_context,
    lost_to,
)
from launcher.planner.options import WeightOption
from launcher.planner.request import PlanRequest
from launcher.policy import BATCH_TIERS, CPU_BATCH_TIERS, MAX_PIPELINE_STAGES


def _pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def shapes(spec: ModelSpec, n: int, req: PlanRequest) -> list[tuple[int, int]]:
    """(tp, pp) pairs worth sizing on n GPUs; vLLM's validity is checked when sized."""
    if req.device == Device.CPU:
        return [(1, 1)]
    tps = [req.tp] if req.tp else _pow2_upto(n)
    pps = [req.pp] if req.pp else [p for p in _pow2_upto(n) if p <= MAX_PIPELINE_STAGES]
    out = [(t, p) for t in tps for p in pps if t * p <= n and p <= spec.num_layers]
    return sorted(out, key=lambda s: (s[0] * s[1], s[1]))


def check_forced_shape(spec: ModelSpec, n: int, req: PlanRequest, cap: int) -> None:
    tp, pp = req.tp or 1, req.pp or 1
    if req.tp is None and req.pp is None:
        return
    if tp * pp > n:
        raise InputError(f"--tp {tp} × --pp {pp} needs {tp * pp} GPUs; {n} available",
                         fix=f"Use sizes whose product is at most {n}, or --tp auto.")
    try:
        validate_shape(spec, tp, pp, cap)
    except Refusal as r:
        raise InputError(f"--tp {tp} / --pp {pp} cannot serve {spec.name}: {r}",
                         fix="Use --tp auto, or a size that divides the head counts.") from r


def _homogeneous(gpus: Sequence[GpuInfo]) -> bool:
    return len({(g.total_bytes, g.used_bytes) for g in gpus}) <= 1


def _size_shape(opt: WeightOption, kv: str, tp: int, pp: int, length: int,
                gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest) -> Candidate:
    """The best candidate of one shape: most replicas first, then smaller batches."""
    max_dp = len(gpus) // (tp * pp)
    dps = [max_dp] if _homogeneous(gpus) else list(range(max_dp, 0, -1))
    tiers = CPU_BATCH_TIERS if req.device == Device.CPU else BATCH_TIERS
    first: Candidate | None = None
    for dp in dps:
        for tokens, seqs in tiers:
            c = evaluate(Config(opt, kv, tp, pp, dp, length, seqs, tokens), gpus, cal,
                         req.headroom, req.min_concurrency, req.enforce_eager,
                         req.reserve_bytes)
            if c.feasible:
                if first is not None and first.rejection is not None \
                        and tokens != tiers[0][0]:
                    c = dataclasses.replace(c, lowered_from=(
                        first.max_num_batched_tokens, first.max_num_seqs, first.rejection))
                return c
            if first is None:
                first = c
            if c.rejection is not None and c.rejection.kind == RejectKind.ENGINE_REFUSES:
                break  # a smaller batch cannot fix a shape vLLM refuses
    assert first is not None
    return first


def _pick(fits: list[Candidate], objective: str) -> Candidate:
    if objective == "latency":
        return max(fits, key=lambda c: (c.tp, -c.pp, c.concurrency))
    return min(fits, key=lambda c: (c.gpus_per_replica, c.pp, -c.concurrency))


@dataclasses.dataclass(frozen=True)
class Rung:
    option: WeightOption
    kv: str
    shorten: bool

    @property
    def name(self) -> str:
        kv = "KV fp8" if self.kv == "fp8" else "KV auto"
        return f"{self.option.label} · {kv} · {'shorter' if self.shorten else 'full'} ctx"


def _rungs(options: list[WeightOption], req: PlanRequest) -> list[Rung]:
    out: list[Rung] = []
    for opt in options:
        kvs = ["auto", "fp8"] if req.kv_cache_dtype == "auto" else [req.kv_cache_dtype]
        if req.device == Device.CPU:
            kvs = ["auto"]
        out.extend(Rung(opt, kv, False) for kv in kvs)
        out.append(Rung(opt, kvs[-1], True))
    return out


@dataclasses.dataclass(frozen=True)
class SearchResult:
    chosen: Candidate | None
    tried: tuple[Candidate, ...]  # every candidate sized, in order, with its final status
    failed_rungs: tuple[str, ...]  # rungs on which nothing fitted


def _size_rung(rung: Rung, spec: ModelSpec, gpus: list[GpuInfo], cal: EngineCalibration,
               req: PlanRequest) -> list[Candidate]:
    cap = req.context_cap(spec.max_position_embeddings)
    floor = req.context_floor(spec.max_position_embeddings)
    out = []
    for tp, pp in shapes(spec, len(gpus), req):
        length = floor if rung.shorten else cap
        c = _size_shape(rung.option, rung.kv, tp, pp, length, gpus, cal, req)
        if rung.shorten and c.feasible:
            best = longest_context(c, floor, cap, req.min_concurrency)
            if best is not None and best != length:
                c2 = _size_shape(rung.option, rung.kv, tp, pp, best, gpus, cal, req)
                if c2.feasible:
                    c = c2
        out.append(dataclasses.replace(c, rung=rung.name))
    return out


def search(spec: ModelSpec, gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest,
           options: list[WeightOption]) -> SearchResult:
    """The first rung on which some shape fits, and the shape the objective prefers."""
    cap = req.context_cap(spec.max_position_embeddings)
    floor = req.context_floor(spec.max_position_embeddings)
    tried: list[Candidate] = []
    failed: list[str] = []
    for rung in _rungs(options, req):
        if rung.shorten and floor >= cap:
            continue
        sized = _size_rung(rung, spec, gpus, cal, req)
        fits = [c for c in sized if c.feasible]
        if not fits:
            tried.extend(sized)
            failed.append(rung.name)
            continue
        picked = _pick(fits, req.objective)
        chosen = dataclasses.replace(picked, status=Status.CHOSEN)
        tried.extend(chosen if c is picked else
                     lost_to(c, chosen, req.objective) if c.feasible else c for c in sized)
        return SearchResult(chosen, tuple(tried), tuple(failed))
    return SearchResult(None, tuple(tried), tuple(failed))
