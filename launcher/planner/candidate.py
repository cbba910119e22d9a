"""One candidate configuration, sized on concrete GPUs: its per-GPU budget and its capacity.

The KV cache gets what is left under the limit on the tightest GPU:

    K = min over GPUs ( (1 − h)·T − other − runtime − weights − activation − graphs )

and vLLM is told exactly K (`--kv-cache-memory-bytes`), so nothing else grows into the
headroom. `gpu_memory_utilization` is then only vLLM's start-up gate (free ≥ U·T), set as
high as the memory other processes leave, never above 1 − h.

`evaluate` returns a new, frozen `Candidate`; a rejected one carries a structured
`Rejection` (which GPU, which component, how many bytes short) from which the prose is
rendered, so no decision ever reads the text of a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from launcher.hardware.inventory import GpuInfo
from launcher.memory import kv as kvm
from launcher.memory.budget import GpuBudget, limit_bytes, start_utilization
from launcher.memory.calibration import EngineCalibration
from launcher.memory.components import Component
from launcher.memory.estimate import EngineFlags, Refusal, StageEstimate, costs
from launcher.planner.options import WeightOption
from launcher.policy import KV_ROUNDING_BYTES, MIN_START_UTILIZATION
from launcher.units import GiB

if TYPE_CHECKING:
    from launcher.planner.speed import Prediction


class Status(StrEnum):
    CHOSEN = "chosen"
    FITS = "fits"
    REJECTED = "rejected"


class RejectKind(StrEnum):
    NO_ROOM = "no_room"  # other processes leave too little free memory to start
    ENGINE_REFUSES = "engine_refuses"  # vLLM's own configuration or start-up check
    OVER_LIMIT = "over_limit"  # everything but the KV cache already exceeds the limit
    KV_SHORT = "kv_short"  # the KV cache holds fewer sequences than wanted
    LOST = "lost"  # fits; the objective preferred another candidate
    SLO_MISS = "slo_miss"  # fits; predicted above --max-ttft-ms / --max-itl-ms


@dataclass(frozen=True)
class Rejection:
    """Why a candidate was not chosen, in numbers. `text()` is the only prose."""

    kind: RejectKind
    gpu: int | None = None  # the GPU that decided it
    component: Component | None = None  # the largest component on that GPU
    short_bytes: int = 0  # how far the limit (or the wanted cache) is missed
    message: str = ""  # vLLM's own words (ENGINE_REFUSES)
    budget: GpuBudget | None = None  # that GPU's planned components and limit
    headroom: float = 0.0
    free_bytes: int = 0  # NO_ROOM: what the others leave
    kv_cache_bytes: int = 0  # KV_SHORT: the cache and what it holds
    kv_tokens: int = 0
    concurrency: float = 0.0
    max_model_len: int = 0
    wanted: int = 0  # KV_SHORT: sequences wanted
    fits_summary: str = ""  # LOST: what the candidate would hold
    objective: str = ""  # LOST
    chosen_tp: int = 0  # LOST
    chosen_gpus_per_replica: int = 0  # LOST
    own_gpus_per_replica: int = 0  # LOST
    own_figure: float = math.nan  # LOST: the objective's figure, this one and the chosen's
    chosen_figure: float = math.nan
    lost_note: str = ""  # LOST: why a better figure still lost (a tie, a shorter context)
    slo: tuple[tuple[str, float, float], ...] = ()  # SLO_MISS: (flag, predicted, limit)

    def text(self) -> str:
        if self.kind == RejectKind.NO_ROOM and self.budget is not None:
            return (f"GPU {self.gpu} has {self.free_bytes / GiB:.1f} GiB free of "
                    f"{self.budget.total_bytes / GiB:.1f} GiB: other processes leave no room")
        if self.kind == RejectKind.ENGINE_REFUSES:
            return f"vLLM would refuse: {self.message}"
        if self.kind == RejectKind.OVER_LIMIT and self.budget is not None:
            p, b = self.budget.planned, self.budget
            other = p[Component.OTHER]
            return (f"GPU {self.gpu}: weights {p[Component.WEIGHTS] / GiB:.1f} + runtime "
                    f"{p[Component.RUNTIME] / GiB:.1f} + activation "
                    f"{p[Component.ACTIVATION] / GiB:.1f} + graphs "
                    f"{p[Component.CUDA_GRAPHS] / GiB:.1f}"
                    + (f" + other {other / GiB:.1f}" if other else "")
                    + f" GiB = {b.non_kv_bytes / GiB:.1f} GiB exceed the "
                    f"{b.limit_bytes / GiB:.1f} GiB limit ({1 - self.headroom:.0%} of "
                    f"{b.total_bytes / GiB:.1f} GiB)")
        if self.kind == RejectKind.KV_SHORT:
            return (f"KV cache {self.kv_cache_bytes / GiB:.2f} GiB/GPU holds "
                    f"{self.kv_tokens:,} tokens = {self.concurrency:.1f} sequences of "
                    f"{self.max_model_len:,}; {self.wanted} wanted")
        if self.kind == RejectKind.LOST:
            return f"fits ({self.fits_summary}); {self.lost_by()}"
        if self.kind == RejectKind.SLO_MISS:
            return f"fits ({self.fits_summary}) but predicts " + "; ".join(
                f"{_ms(v)} > {flag} {_ms(lim, unit=False)} ({_ms(v - lim)} over)"
                for flag, v, lim in self.slo)
        return self.kind.value

    def lost_by(self) -> str:
        """LOST: how far behind the chosen candidate, in the objective's own figure."""
        own, won = self.own_figure, self.chosen_figure
        if math.isnan(own) or math.isnan(won):
            if self.objective == "latency":
                return f"latency prefers the largest TP ({self.chosen_tp}) (no speed model)"
            return (f"uses {self.own_gpus_per_replica} GPUs per replica, the chosen shape "
                    f"{self.chosen_gpus_per_replica} (no speed model)")
        if self.objective == "throughput":
            why = (f"predicts {own:,.0f} output tok/s, "
                   f"{(own - won) / won:+.0%} against the chosen {won:,.0f}" if won > 0 else
                   f"predicts {own:,.0f} output tok/s")
        elif self.objective == "latency":
            why = (f"predicts {own / 1000:.2f} s per request, "
                   f"{(own - won) / won:+.0%} over the chosen {won / 1000:.2f} s")
        else:
            why = (f"predicts {own:.3g} GPU-hours per million output tokens, "
                   f"{(own - won) / won:+.0%} over the chosen {won:.3g}")
        if self.lost_note:
            why += f" ({self.lost_note})"
        return why

    def to_json(self) -> dict[str, object]:
        return {"kind": str(self.kind), "gpu": self.gpu,
                "component": None if self.component is None else str(self.component),
                "short_bytes": self.short_bytes}


@dataclass(frozen=True)
class Config:
    """What a candidate asks vLLM for."""

    option: WeightOption
    kv_cache_dtype: str  # vLLM's value: "auto" or "fp8"
    tp: int
    pp: int
    dp: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class Candidate:
    """A `Config` and what sizing it on the GPUs found."""

    config: Config
    rung: str = ""
    status: Status = Status.REJECTED
    rejection: Rejection | None = None
    gpus: tuple[GpuInfo, ...] = ()
    budgets: tuple[GpuBudget, ...] = ()
    serve_dtype: str = ""
    gpu_memory_utilization: float = 0.0
    kv_cache_memory_bytes: int = 0
    kv_room_bytes: int = 0  # what the limit leaves for the KV cache (before a CPU cap)
    kv_tokens: int = 0
    num_blocks: int = 0
    concurrency: float = 0.0
    geometry: kvm.KvGeometry | None = None
    kv_capped_for: int | None = None  # CPU: the cache holds this many sequences, not all RAM
    lowered_from: tuple[int, int, Rejection] | None = None  # (tokens, seqs, why) of the batch
    predicted: Prediction | None = None  # the speed model's figures (fitting candidates)
    notes: tuple[str, ...] = field(default=())

    # ---- the configuration, read through ----------------------------------------------
    @property
    def option(self) -> WeightOption:
        return self.config.option

    @property
    def kv_cache_dtype(self) -> str:
        return self.config.kv_cache_dtype

    @property
    def tp(self) -> int:
        return self.config.tp

    @property
    def pp(self) -> int:
        return self.config.pp

    @property
    def dp(self) -> int:
        return self.config.dp

    @property
    def max_model_len(self) -> int:
        return self.config.max_model_len

    @property
    def max_num_seqs(self) -> int:
        return self.config.max_num_seqs

    @property
    def max_num_batched_tokens(self) -> int:
        return self.config.max_num_batched_tokens

    @property
    def gpus_per_replica(self) -> int:
        return self.config.gpus_per_replica

    # ---- the result ---------------------------------------------------------------------
    @property
    def feasible(self) -> bool:
        return self.status != Status.REJECTED

    @property
    def summary(self) -> str:
        if self.config.option.spec.linear is not None:  # hybrid: a state per sequence
            return (f"{int(self.concurrency)} concurrent sequences at "
                    f"{self.max_model_len:,} tokens per replica")
        return (f"{self.kv_tokens:,} KV tokens = {self.concurrency:.1f} sequences of "
                f"{self.max_model_len:,} per replica")

    @property
    def reason(self) -> str:
        if self.rejection is None:
            return self.summary
        return self.rejection.text()

    def lowered_note(self) -> str | None:
        """Why the batch is smaller than the first tier, when it is."""
        if self.lowered_from is None:
            return None
        tokens, _seqs, why = self.lowered_from
        return (f"batch lowered to {self.max_num_batched_tokens} tokens / "
                f"{self.max_num_seqs} sequences: at {tokens}: {why.text()}")

    def all_notes(self) -> tuple[str, ...]:
        """Notes for the plan: the memory model's and the candidate's own decisions."""
        out = list(self.notes)
        if (lowered := self.lowered_note()) is not None:
            out.append(lowered)
        if self.kv_capped_for is not None:
            out.append(f"KV cache sized for {self.kv_capped_for} sequences of "
                       f"{self.max_model_len:,} tokens "
                       f"({self.kv_cache_memory_bytes / GiB:.2f} GiB), not all free host "
                       "memory")
        return tuple(out)

    def to_json(self) -> dict[str, object]:
        ok = self.feasible
        return {
            "rung": self.rung, "weights": self.option.label,
            "quantization": self.option.quantization_name,
            "kv_cache_dtype": self.kv_cache_dtype,
            "tensor_parallel_size": self.tp, "pipeline_parallel_size": self.pp,
            "data_parallel_size": self.dp, "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes if ok else None,
            "kv_tokens": self.kv_tokens if ok else None,
            "concurrency": round(self.concurrency, 2) if ok else None,
            "status": str(self.status), "reason": self.reason,
            "rejection": None if self.rejection is None else self.rejection.to_json(),
            "predicted": None if self.predicted is None else self.predicted.to_json(),
        }


def evaluate(cfg: Config, gpus: list[GpuInfo], cal: EngineCalibration, headroom: float,
             min_concurrency: int, enforce_eager: bool, reserve_bytes: int = 0) -> Candidate:
    """Size `cfg` on the first TP·PP·DP GPUs; the result says whether it holds and why."""
    used = tuple(gpus[:cfg.tp * cfg.pp * cfg.dp])
    ctx = cal.context_bytes(cfg.tp, cfg.pp)
    cpu = cal.is_cpu
    util = 1.0 - headroom if cpu else start_utilization(
        ((g.total_bytes - g.used_bytes - ctx, g.total_bytes) for g in used), headroom)
    result = Candidate(cfg, gpus=used, gpu_memory_utilization=util)
    if util < MIN_START_UTILIZATION and not cpu:
        g = min(used, key=lambda x: x.total_bytes - x.used_bytes)
        b = GpuBudget(g.index, g.name, g.total_bytes, limit_bytes(g.total_bytes, headroom),
                      dict.fromkeys(Component, 0))
        return replace(result, rejection=Rejection(
            RejectKind.NO_ROOM, gpu=g.index, component=Component.OTHER, budget=b,
            free_bytes=g.total_bytes - g.used_bytes,
            short_bytes=max(0, int(MIN_START_UTILIZATION * g.total_bytes)
                            - (g.total_bytes - g.used_bytes))))
    flags = EngineFlags(tensor_parallel_size=cfg.tp, pipeline_parallel_size=cfg.pp,
                        data_parallel_size=cfg.dp, quantization=cfg.option.quantization_flag,
                        kv_cache_dtype=cfg.kv_cache_dtype, max_model_len=cfg.max_model_len,
                        max_num_seqs=cfg.max_num_seqs,
                        max_num_batched_tokens=cfg.max_num_batched_tokens,
                        gpu_memory_utilization=util, enforce_eager=enforce_eager)
    notes: list[str] = []
    try:
        c = costs(cfg.option.spec, list(used), flags, cal, notes)
    except Refusal as r:
        return replace(result, notes=tuple(notes), rejection=Rejection(
            RejectKind.ENGINE_REFUSES, message=str(r)))
    cfg = replace(cfg, max_num_seqs=c.max_num_seqs, max_num_batched_tokens=c.max_num_batched_tokens)
    budgets = _budgets(used, c.stages, cfg, headroom, reserve_bytes)
    result = replace(result, config=cfg, serve_dtype=c.dtype, budgets=budgets,
                     notes=tuple(notes))
    tight = min(budgets, key=lambda b: b.room_bytes)
    room = tight.room_bytes // KV_ROUNDING_BYTES * KV_ROUNDING_BYTES
    if room <= 0:
        return replace(result, rejection=Rejection(
            RejectKind.OVER_LIMIT, gpu=tight.index, component=tight.largest_component(),
            short_bytes=tight.non_kv_bytes - tight.limit_bytes, budget=tight,
            headroom=headroom))
    kv_cache, capped = room, None
    if cpu:
        # Host RAM is shared with everything else on the machine: hold what the batch can
        # use (max(max_num_seqs, min_concurrency) full-length sequences), not all that is left.
        seqs_held = max(cfg.max_num_seqs, min_concurrency)
        need = kvm.bytes_for_requests(c.geometries[0], seqs_held, cfg.max_model_len,
                                      cfg.max_num_batched_tokens)
        need = -(-need // KV_ROUNDING_BYTES) * KV_ROUNDING_BYTES
        if need < kv_cache:
            kv_cache, capped = need, seqs_held
    budgets = tuple(b.with_kv(kv_cache) for b in budgets)
    blocks_by_stage = [kvm.num_blocks(g, kv_cache) for g in c.geometries]
    blocks = min(blocks_by_stage)
    geo = c.geometries[blocks_by_stage.index(blocks)]
    tokens = (blocks // geo.num_groups) * geo.block_size
    concurrency = blocks / kvm.blocks_per_request(geo, cfg.max_model_len,
                                                  cfg.max_num_batched_tokens)
    if geo.state_blocks and cal.kv_tokens_log.tokens == "capacity":
        # Hybrid (recurrent-state) models: a token count per group means nothing; vLLM logs
        # "GPU KV cache size" as concurrency × max_model_len (get_kv_cache_capacity).
        tokens = int(concurrency * cfg.max_model_len)
    result = replace(result, budgets=budgets, kv_cache_memory_bytes=kv_cache,
                     kv_room_bytes=room, kv_tokens=tokens, num_blocks=blocks,
                     concurrency=concurrency, geometry=geo, kv_capped_for=capped)
    needed = kvm.bytes_for_one_request(geo, cfg.max_model_len, cfg.max_num_batched_tokens)
    if needed > kv_cache or concurrency < min_concurrency:
        wanted = kvm.bytes_for_requests(geo, min_concurrency, cfg.max_model_len,
                                        cfg.max_num_batched_tokens)
        return replace(result, rejection=Rejection(
            RejectKind.KV_SHORT, gpu=tight.index, component=Component.KV_CACHE,
            short_bytes=max(0, wanted - kv_cache), kv_cache_bytes=kv_cache, kv_tokens=tokens,
            concurrency=concurrency, max_model_len=cfg.max_model_len, wanted=min_concurrency))
    return replace(result, status=Status.FITS)


def _budgets(used: tuple[GpuInfo, ...], stages: list[StageEstimate], cfg: Config, headroom: float,
             reserve_bytes: int) -> tuple[GpuBudget, ...]:
    """Every used GPU's components before the KV cache (its stage decides the figures)."""
    out = []
    for i, g in enumerate(used):
        s = stages[(i % cfg.gpus_per_replica) // cfg.tp]
        planned = {Component.OTHER: g.used_bytes,
                   Component.RUNTIME: s.context_bytes + s.non_torch_bytes + reserve_bytes,
                   Component.WEIGHTS: s.weights_bytes, Component.ACTIVATION: s.activation_bytes,
                   Component.CUDA_GRAPHS: s.cuda_graph_bytes, Component.KV_CACHE: 0}
        out.append(GpuBudget(g.index, g.name, g.total_bytes, limit_bytes(g.total_bytes, headroom),
                             planned, stage=s.stage, replica=i // cfg.gpus_per_replica))
    return tuple(out)


def longest_context(cand: Candidate, low: int, high: int, min_concurrency: int) -> int | None:
    """Longest max_model_len in [low, high] at which the candidate's KV cache still holds
    `min_concurrency` sequences (KV size does not depend on the length), or None."""
    geo = cand.geometry
    if geo is None or cand.kv_cache_memory_bytes <= 0:
        return None
    # The room under the limit, not a cache already capped for `low`-length sequences (CPU).
    room = max(cand.kv_room_bytes, cand.kv_cache_memory_bytes)
    blocks = kvm.num_blocks(geo, room)

    def ok(length: int) -> bool:
        per = kvm.blocks_per_request(geo, length, cand.max_num_batched_tokens)
        return (blocks / per >= min_concurrency and
                kvm.bytes_for_one_request(geo, length, cand.max_num_batched_tokens) <= room)

    if not ok(low):
        return None
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    step = 1024 if lo >= 2048 else geo.block_size
    nice = lo // step * step
    return nice if nice >= low else lo


def _ms(v: float, unit: bool = True) -> str:
    return f"{v:,.1f}{' ms' if unit else ''}" if v < 100 else f"{v:,.0f}{' ms' if unit else ''}"
