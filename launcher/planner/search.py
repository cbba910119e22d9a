"""The planning policy (DESIGN §4): memory decides what fits, predicted speed decides among it.

Weight precisions are tried best first (as checkpointed → fp8 → 4-bit); the first precision
on which some configuration fits (and meets `--max-ttft-ms` / `--max-itl-ms`) is used. On it
every valid shape (TP × PP, spare GPUs as DP replicas) walks the ladder until it fits:
KV cache in the model dtype at full context → fp8 KV at full context → fp8 KV at the longest
context (not below the floor) that still holds `min_concurrency` sequences. Inside a shape
the batch steps down through `policy.BATCH_TIERS` before the shape is given up, because a
smaller activation peak is cheaper than a lower precision.

Among the shapes that fit, the objective picks by the speed model's prediction for the
workload (`launcher.speed`): throughput the most output tokens per second, latency the
shortest request (TTFT + output × ITL), cost the fewest GPU-hours per million output tokens.
Speed decides only among the shapes that hold the longest context any shape reached (DESIGN
§4: context is shortened only when no shape holds it): a faster shape that needs a shorter
context loses to a slower one that does not, and the plan says by how much. Each shape keeps the
KV cache in the model dtype when that fits it; whether fp8 KV on another shape is worth its
speed is the objective's call (DeepSeek-R1 on 8×H200: TP4×PP2 with fp8 KV, 2.9× the tokens/s
of TP1×PP8 in bf16 KV).
Without a speed calibration (a caller that passes none) the structural rule stands in
(fewest GPUs per replica; largest TP for latency) and the plan says so.

The planner only searches: every byte comes from `launcher.memory`, every second from
`launcher.speed`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import Device, EngineCalibration
from launcher.memory.estimate import Refusal, validate_shape
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import (
    Candidate,
    Config,
    Rejection,
    RejectKind,
    Status,
    evaluate,
    longest_context,
)
from launcher.planner.nodes import Nodes, nodes_of, shape_fits_nodes, why_not
from launcher.planner.options import WeightOption
from launcher.planner.request import PlanRequest
from launcher.planner.speed import Prediction, SpeedInputs, model_costs, predict_candidate
from launcher.policy import (
    BATCH_TIERS,
    CPU_BATCH_TIERS,
    MAX_PIPELINE_STAGES,
    SPEED_TIE,
)
from launcher.speed.model import ModelCosts


def _pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def shapes(spec: ModelSpec, n: int, req: PlanRequest,
           nodes: Nodes | None = None) -> list[tuple[int, int]]:
    """(tp, pp) pairs worth sizing on n GPUs; vLLM's validity is checked when sized. On
    several nodes only the shapes that keep TP inside a node and use every GPU
    (`planner.nodes`)."""
    if req.device == Device.CPU and n == 1:
        return [(1, 1)]
    tps = [req.tp] if req.tp else _pow2_upto(n)
    pps = [req.pp] if req.pp else [p for p in _pow2_upto(n) if p <= MAX_PIPELINE_STAGES]
    out = [(t, p) for t in tps for p in pps if t * p <= n and p <= spec.num_layers
           and (nodes is None or shape_fits_nodes(t, p, nodes))]
    return sorted(out, key=lambda s: (s[0] * s[1], s[1]))


def check_forced_shape(spec: ModelSpec, n: int, req: PlanRequest, cap: int,
                       nodes: Nodes | None = None) -> None:
    tp, pp = req.tp or 1, req.pp or 1
    if req.tp is None and req.pp is None:
        return
    if tp * pp > 1 and req.device == Device.CPU and n == 1:
        raise InputError("--tp/--pp above 1 on the CPU backend of one node",
                         fix="vLLM's CPU backend runs on one NUMA node per node; use --tp 1 "
                             "--pp 1, or spread TP/PP over nodes with --nnodes.")
    if tp * pp > n:
        raise InputError(f"--tp {tp} × --pp {pp} needs {tp * pp} GPUs; {n} available",
                         fix=f"Use sizes whose product is at most {n}, or --tp auto.")
    if nodes is not None and nodes.multi and not shapes(spec, n, req, nodes):
        raise InputError(f"--tp {req.tp or 'auto'} / --pp {req.pp or 'auto'} on {nodes.count} "
                         f"nodes of {nodes.gpus_per_node} GPUs: {why_not(tp, pp, nodes)}",
                         fix=f"Use --tp {nodes.gpus_per_node} --pp {nodes.count} (TP inside "
                             "a node, PP across nodes), or --tp auto --pp auto.")
    try:
        validate_shape(spec, tp, pp, cap)
    except Refusal as r:
        raise InputError(f"--tp {tp} / --pp {pp} cannot serve {spec.name}: {r}",
                         fix="Use --tp auto, or a size that divides the head counts.") from r


def _homogeneous(gpus: Sequence[GpuInfo]) -> bool:
    return len({(g.total_bytes, g.used_bytes) for g in gpus}) <= 1


Memo = dict[tuple[object, ...], object]  # sizing (Candidate) and speed-model costs


def _evaluate(cfg: Config, gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest,
              memo: Memo | None) -> Candidate:
    """`evaluate`, remembered across plans on GPUs of one idle type (`launcher fit` plans
    every count of a type): on identical GPUs a replica's sizing does not depend on how many
    replicas there are, so DP × one replica is the one replica's figures on more GPUs."""
    homogeneous = memo is not None and _homogeneous(gpus)
    if memo is None or not homogeneous:
        return evaluate(cfg, gpus, cal, req.headroom, req.min_concurrency,
                        req.enforce_eager, req.reserve_bytes)
    g = gpus[0]
    key = (g.name, g.total_bytes, g.used_bytes, g.compute_capability, cfg.option.key,
           cfg.option.label, cfg.kv_cache_dtype, cfg.tp, cfg.pp, cfg.max_model_len,
           cfg.max_num_seqs, cfg.max_num_batched_tokens)
    one = memo.get(key)
    if not isinstance(one, Candidate):
        one = evaluate(dataclasses.replace(cfg, dp=1), gpus, cal, req.headroom,
                       req.min_concurrency, req.enforce_eager, req.reserve_bytes)
        memo[key] = one
    if cfg.dp == 1:
        return dataclasses.replace(one, config=dataclasses.replace(one.config,
                                                                   option=cfg.option))
    n = cfg.gpus_per_replica
    used = tuple(gpus[:n * cfg.dp])
    budgets = tuple(dataclasses.replace(b, index=used[r * n + i].index, replica=r)
                    for r in range(cfg.dp) for i, b in enumerate(one.budgets)) \
        if one.budgets else ()
    return dataclasses.replace(one, config=dataclasses.replace(one.config, option=cfg.option,
                                                               dp=cfg.dp),
                               gpus=used, budgets=budgets)


def _size_shape(opt: WeightOption, kv: str, tp: int, pp: int, length: int,
                gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest,
                memo: Memo | None = None) -> Candidate:
    """The best candidate of one shape: most replicas first, then smaller batches."""
    max_dp = len(gpus) // (tp * pp)
    # On several nodes every GPU runs (the engine's multi-node layout): DP is fixed.
    multi = len({g.node for g in gpus}) > 1
    dps = [max_dp] if multi or _homogeneous(gpus) else list(range(max_dp, 0, -1))
    tiers = CPU_BATCH_TIERS if req.device == Device.CPU else BATCH_TIERS
    first: Candidate | None = None
    for dp in dps:
        for tokens, seqs in tiers:
            c = _evaluate(Config(opt, kv, tp, pp, dp, length, seqs, tokens), gpus, cal, req,
                          memo)
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


@dataclasses.dataclass(frozen=True)
class Rung:
    option: WeightOption
    kv: str
    shorten: bool

    @property
    def name(self) -> str:
        kv = "KV fp8" if self.kv == "fp8" else "KV auto"
        return f"{self.option.label} · {kv} · {'shorter' if self.shorten else 'full'} ctx"


def _rungs(opt: WeightOption, req: PlanRequest, floor: int, cap: int) -> list[Rung]:
    """One precision's ladder: model-dtype KV, fp8 KV, then a shorter context."""
    kvs = ["auto", "fp8"] if req.kv_cache_dtype == "auto" else [req.kv_cache_dtype]
    if req.device == Device.CPU:
        kvs = ["auto"]
    out = [Rung(opt, kv, False) for kv in kvs]
    if floor < cap:
        out.append(Rung(opt, kvs[-1], True))
    return out


@dataclasses.dataclass(frozen=True)
class SearchResult:
    chosen: Candidate | None
    tried: tuple[Candidate, ...]  # every candidate sized, in order, with its final status
    failed_options: tuple[str, ...]  # precisions on which nothing fitted (or met the SLOs)
    slo_miss: Candidate | None = None  # nothing met the service levels: the one closest
    fallback: bool = False  # no speed calibration: the structural rule chose


def _size_on(rung: Rung, tp: int, pp: int, spec: ModelSpec, gpus: list[GpuInfo],
             cal: EngineCalibration, req: PlanRequest, memo: Memo | None) -> Candidate:
    cap = req.context_cap(spec.max_position_embeddings)
    floor = req.context_floor(spec.max_position_embeddings)
    length = floor if rung.shorten else cap
    c = _size_shape(rung.option, rung.kv, tp, pp, length, gpus, cal, req, memo)
    if rung.shorten and c.feasible:
        best = longest_context(c, floor, cap, req.min_concurrency)
        if best is not None and best != length:
            c2 = _size_shape(rung.option, rung.kv, tp, pp, best, gpus, cal, req, memo)
            if c2.feasible:
                c = c2
    return dataclasses.replace(c, rung=rung.name)


def _size_option(opt: WeightOption, spec: ModelSpec, gpus: list[GpuInfo],
                 cal: EngineCalibration, req: PlanRequest,
                 memo: Memo | None) -> list[Candidate]:
    """Every shape walks this precision's ladder until it fits (all rungs when it never
    does): the best configuration of each shape at this precision, and what it tried."""
    cap = req.context_cap(spec.max_position_embeddings)
    floor = req.context_floor(spec.max_position_embeddings)
    out: list[Candidate] = []
    for tp, pp in shapes(spec, len(gpus), req, nodes_of(gpus)):
        for rung in _rungs(opt, req, floor, cap):
            c = _size_on(rung, tp, pp, spec, gpus, cal, req, memo)
            out.append(c)
            if c.feasible:
                break
    return out


# ---- the objective in numbers ---------------------------------------------------------------

def figure(c: Candidate, objective: str) -> float | None:
    """The number the objective ranks by (None without a prediction)."""
    p = c.predicted
    if p is None:
        return None
    if objective == "latency":
        return p.request_latency_ms
    if objective == "cost":
        return p.gpu_hours_per_million_tokens
    return p.output_tokens_per_s


def higher_is_better(objective: str) -> bool:
    return objective == "throughput"


def _better(a: float, b: float, objective: str, factor: float = 1.0) -> bool:
    """a beats b by at least `factor` (1.0: at all)."""
    return a > b * factor if higher_is_better(objective) else a * factor < b


def _rank_key(c: Candidate, objective: str) -> tuple[float, ...]:
    f = figure(c, objective)
    assert f is not None
    main = -f if higher_is_better(objective) else f
    # ties: fewer GPUs per replica, fewer stages, more sequences held, longer context
    return (main, c.gpus_per_replica, c.pp, -c.concurrency, -c.max_model_len)


def _structural(fits: list[Candidate], objective: str) -> Candidate:
    """Without a speed model: the fixed rule (kept only for callers with no calibration)."""
    if objective == "latency":
        return max(fits, key=lambda c: (c.tp, -c.pp, c.concurrency))
    return min(fits, key=lambda c: (c.gpus_per_replica, c.pp, -c.concurrency))


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= SPEED_TIE * max(abs(a), abs(b))


def _best(group: list[Candidate], objective: str) -> Candidate:
    """The best figure; predictions within SPEED_TIE of it are a tie (closer than the speed
    model can tell), settled by fewer pipeline stages, then fewer GPUs per replica."""
    lead = min(group, key=lambda c: _rank_key(c, objective))
    f = figure(lead, objective)
    assert f is not None
    near = [c for c in group if _tied(figure(c, objective) or 0.0, f)]
    return min(near, key=lambda c: (c.pp, c.gpus_per_replica, _rank_key(c, objective)))


def pick(fits: list[Candidate], objective: str) -> Candidate:
    """The best by the objective's figure among the shapes at the longest context."""
    longest = max(c.max_model_len for c in fits)
    return _best([c for c in fits if c.max_model_len == longest], objective)


def _lost_note(c: Candidate, chosen: Candidate, own: float, won: float, objective: str) -> str:
    """Why a candidate whose figure is not worse still lost."""
    if not _better(own, won, objective):
        return ""
    if c.max_model_len < chosen.max_model_len:
        return (f"but only at {c.max_model_len:,} tokens of context: the chosen one holds "
                f"{chosen.max_model_len:,}, and context comes before speed")
    return (f"within {SPEED_TIE:.0%}, closer than the speed model can tell: the chosen one has "
            "fewer pipeline stages or GPUs per replica")


def slo_misses(c: Candidate, req: PlanRequest) -> list[tuple[str, float, float]]:
    """(flag, predicted, limit) for every service level `c` misses, judged on the latency
    basis (the workload, or one request at a time when it sends all prompts at once)."""
    p = c.predicted
    if p is None:
        return []
    out = []
    if req.max_ttft_ms is not None and p.basis_ttft_ms > req.max_ttft_ms:
        out.append(("--max-ttft-ms", p.basis_ttft_ms, req.max_ttft_ms))
    if req.max_itl_ms is not None and p.basis_itl_ms > req.max_itl_ms:
        out.append(("--max-itl-ms", p.basis_itl_ms, req.max_itl_ms))
    return out


def _slo_rejected(c: Candidate, req: PlanRequest) -> Candidate:
    misses = slo_misses(c, req)
    return dataclasses.replace(c, status=Status.REJECTED, rejection=Rejection(
        RejectKind.SLO_MISS, fits_summary=c.summary,
        slo=tuple(misses)))


def _miss_ratio(c: Candidate, req: PlanRequest) -> float:
    return max((v / lim for _, v, lim in slo_misses(c, req)), default=1.0)


def lost_to(c: Candidate, chosen: Candidate, objective: str) -> Candidate:
    """`c` fits but the objective chose `chosen`: by how much, in the objective's figure."""
    own, theirs = figure(c, objective), figure(chosen, objective)
    note = "" if own is None or theirs is None else _lost_note(c, chosen, own, theirs, objective)
    return dataclasses.replace(c, status=Status.FITS, rejection=Rejection(
        RejectKind.LOST, fits_summary=c.summary, objective=objective, chosen_tp=chosen.tp,
        chosen_gpus_per_replica=chosen.gpus_per_replica,
        own_gpus_per_replica=c.gpus_per_replica,
        own_figure=math.nan if own is None else own,
        chosen_figure=math.nan if theirs is None else theirs, lost_note=note))


def _costs(opt: WeightOption, memo: Memo | None) -> ModelCosts:
    key = ("speed-costs", opt.key, opt.label)
    hit = None if memo is None else memo.get(key)
    if isinstance(hit, ModelCosts):
        return hit
    costs = model_costs(opt.spec)
    if memo is not None:
        memo[key] = costs
    return costs


def search(spec: ModelSpec, gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest,
           options: list[WeightOption], speed: SpeedInputs | None = None,
           memo: Memo | None = None) -> SearchResult:
    """The highest precision on which some shape fits (and meets the service levels), and
    the shape the objective prefers on it. `memo` (one per idle GPU type and request) lets
    plans of several counts of that type share their sizing."""
    tried: list[Candidate] = []
    failed: list[str] = []
    closest: Candidate | None = None
    for opt in options:
        sized = _size_option(opt, spec, gpus, cal, req, memo)
        if speed is not None and any(c.feasible for c in sized):
            costs = _costs(opt, memo)
            sized = [dataclasses.replace(c, predicted=predict_candidate(c, speed, req.workload,
                                                                        costs))
                     if c.feasible else c for c in sized]
        fits = [c for c in sized if c.feasible]
        meets = [c for c in fits if not slo_misses(c, req)]
        if not meets:
            for c in fits:
                if closest is None or _miss_ratio(c, req) < _miss_ratio(closest, req):
                    closest = c
            tried.extend(_slo_rejected(c, req) if c.feasible else c for c in sized)
            failed.append(opt.label)
            continue
        no_speed = speed is None or any(c.predicted is None for c in meets)
        picked = _structural(meets, req.objective) if no_speed else pick(meets, req.objective)
        fallback = no_speed and len(meets) > 1  # a choice was made without predictions
        chosen = dataclasses.replace(picked, status=Status.CHOSEN)
        for c in sized:
            if c is picked:
                tried.append(chosen)
            elif not c.feasible:
                tried.append(c)
            elif slo_misses(c, req):
                tried.append(_slo_rejected(c, req))
            else:
                tried.append(lost_to(c, chosen, req.objective))
        return SearchResult(chosen, tuple(tried), tuple(failed), fallback=fallback)
    return SearchResult(None, tuple(tried), tuple(failed),
                        slo_miss=None if closest is None
                        else _slo_rejected(closest, req))


# Re-exported for explain/suggest.
__all__ = ["Prediction", "SearchResult", "figure", "pick", "search", "shapes", "slo_misses"]
