"""One candidate configuration on concrete GPUs: its per-GPU budget and its capacity.

The KV cache gets what is left under the limit on the tightest GPU:

    K = min over GPUs ( (1 − h)·T − other − runtime − weights − activation − graphs )

and vLLM is told exactly K (`--kv-cache-memory-bytes`), so nothing else grows into the
headroom. `gpu_memory_utilization` is then only vLLM's start-up gate (free ≥ U·T), set as
high as the memory other processes leave, never above 1 − h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from launcher.hardware.inventory import GpuInfo
from launcher.memory import kv as kvm
from launcher.memory.estimate import EngineFlags, Refusal, costs
from launcher.memory.overheads import EngineCalibration
from launcher.planner.options import WeightOption
from launcher.units import GiB, MiB

COMPONENTS = ("other", "runtime", "weights", "activation", "cuda_graphs", "kv_cache")


@dataclass
class GpuBudget:
    index: int
    name: str
    total_bytes: int
    limit_bytes: int
    planned: dict[str, int]  # COMPONENTS → bytes
    stage: int = 0
    replica: int = 0

    @property
    def planned_total(self) -> int:
        return sum(self.planned.values())

    @property
    def headroom_bytes(self) -> int:
        return self.total_bytes - self.planned_total

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "total_bytes": self.total_bytes,
                "limit_bytes": self.limit_bytes, "planned": dict(self.planned),
                "planned_total_bytes": self.planned_total,
                "headroom_bytes": self.headroom_bytes,
                "headroom_fraction": round(self.headroom_bytes / self.total_bytes, 4),
                "pipeline_stage": self.stage, "replica": self.replica}


@dataclass
class Candidate:
    option: WeightOption
    kv_cache_dtype: str  # vLLM's value: "auto" or "fp8"
    tp: int
    pp: int
    dp: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    rung: str = ""
    feasible: bool = False
    reason: str = ""
    gpu_memory_utilization: float = 0.0
    kv_cache_memory_bytes: int = 0
    kv_tokens: int = 0
    num_blocks: int = 0
    concurrency: float = 0.0
    budgets: list[GpuBudget] = field(default_factory=list)
    gpus: list[GpuInfo] = field(default_factory=list)
    serve_dtype: str = ""
    geometry: kvm.KvGeometry | None = None
    kv_room_bytes: int = 0  # what the limit leaves for the KV cache (before a CPU cap)
    notes: list[str] = field(default_factory=list)
    status: str = "rejected"  # chosen | rejected | fits

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def to_json(self) -> dict:
        return {
            "rung": self.rung, "weights": self.option.label, "quantization":
            self.option.quantization_name, "kv_cache_dtype": self.kv_cache_dtype,
            "tensor_parallel_size": self.tp, "pipeline_parallel_size": self.pp,
            "data_parallel_size": self.dp, "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes if self.feasible else None,
            "kv_tokens": self.kv_tokens if self.feasible else None,
            "concurrency": round(self.concurrency, 2) if self.feasible else None,
            "status": self.status, "reason": self.reason,
        }


def start_utilization(gpus: list[GpuInfo], ctx: int, headroom: float) -> float:
    """Largest U (2 decimals) with free ≥ U·T on every GPU at start, capped at 1 − h."""
    u = 1.0 - headroom
    for g in gpus:
        free = g.total_bytes - g.used_bytes - ctx
        u = min(u, math.floor(free / g.total_bytes * 100) / 100)
    return round(u, 2)


def evaluate(cand: Candidate, gpus: list[GpuInfo], cal: EngineCalibration, headroom: float,
             min_concurrency: int, enforce_eager: bool, reserve_bytes: int = 0) -> Candidate:
    """Fill the candidate's budget and capacity; `feasible` and `reason` say whether it holds."""
    need = cand.tp * cand.pp * cand.dp
    used = gpus[:need]
    cand.gpus = used
    ctx = cal.context_bytes(cand.tp, cand.pp)
    cpu = cal.device == "cpu"
    util = 1.0 - headroom if cpu else start_utilization(used, ctx, headroom)
    cand.gpu_memory_utilization = util
    if util < 0.05 and not cpu:
        g = min(used, key=lambda x: x.total_bytes - x.used_bytes)
        cand.reason = (f"GPU {g.index} has {(g.total_bytes - g.used_bytes) / GiB:.1f} GiB free of "
                       f"{g.total_bytes / GiB:.1f} GiB: other processes leave no room")
        return cand
    opt = cand.option
    flags = EngineFlags(tensor_parallel_size=cand.tp, pipeline_parallel_size=cand.pp,
                        data_parallel_size=cand.dp, quantization=opt.quantization_flag,
                        kv_cache_dtype=cand.kv_cache_dtype, max_model_len=cand.max_model_len,
                        max_num_seqs=cand.max_num_seqs,
                        max_num_batched_tokens=cand.max_num_batched_tokens,
                        gpu_memory_utilization=util, enforce_eager=enforce_eager)
    try:
        c = costs(opt.spec, used, flags, cal, cand.notes)
    except Refusal as r:
        cand.reason = f"vLLM would refuse: {r}"
        return cand
    cand.serve_dtype = c.dtype
    cand.max_num_seqs, cand.max_num_batched_tokens = c.max_num_seqs, c.max_num_batched_tokens
    budgets: list[GpuBudget] = []
    per_replica = cand.tp * cand.pp
    for i, g in enumerate(used):
        s = c.stages[(i % per_replica) // cand.tp]
        limit = math.floor((1 - headroom) * g.total_bytes)
        planned = {"other": g.used_bytes,
                   "runtime": s.context_bytes + s.non_torch_bytes + reserve_bytes,
                   "weights": s.weights_bytes, "activation": s.activation_bytes,
                   "cuda_graphs": s.cuda_graph_bytes, "kv_cache": 0}
        budgets.append(GpuBudget(g.index, g.name, g.total_bytes, limit, planned,
                                 stage=s.stage, replica=i // per_replica))
    room = {b.index: b.limit_bytes - b.planned_total for b in budgets}
    tight = min(budgets, key=lambda b: room[b.index])
    kv_cache = room[tight.index] // MiB * MiB
    cand.budgets = budgets
    if kv_cache <= 0:
        p = tight.planned
        cand.reason = (
            f"GPU {tight.index}: weights {p['weights'] / GiB:.1f} + runtime "
            f"{p['runtime'] / GiB:.1f} + activation {p['activation'] / GiB:.1f} + graphs "
            f"{p['cuda_graphs'] / GiB:.1f}" + (f" + other {p['other'] / GiB:.1f}" if p["other"]
                                              else "")
            + f" GiB = {tight.planned_total / GiB:.1f} GiB exceed the "
            f"{tight.limit_bytes / GiB:.1f} GiB limit ({1 - headroom:.0%} of "
            f"{tight.total_bytes / GiB:.1f} GiB)")
        return cand
    cand.kv_room_bytes = kv_cache
    if cpu:
        # Host RAM is shared with everything else on the machine: hold what the batch can
        # use (max(max_num_seqs, min_concurrency) full-length sequences), not all that is left.
        geo0 = c.geometries[0]
        seqs_held = max(cand.max_num_seqs, min_concurrency)
        blocks = seqs_held * kvm.blocks_per_request(geo0, cand.max_model_len,
                                                    cand.max_num_batched_tokens) + 1
        need = -(-blocks * geo0.bytes_per_block // MiB) * MiB
        if need < kv_cache:
            kv_cache = need
            cand.notes.append(f"KV cache sized for {seqs_held} sequences of "
                              f"{cand.max_model_len:,} tokens ({need / GiB:.2f} GiB), not all "
                              "free host memory")
    for b in budgets:
        b.planned["kv_cache"] = kv_cache
    cand.kv_cache_memory_bytes = kv_cache
    blocks_by_stage = [kvm.num_blocks(g, kv_cache) for g in c.geometries]
    blocks = min(blocks_by_stage)
    geo = c.geometries[blocks_by_stage.index(blocks)]
    cand.num_blocks = blocks
    cand.geometry = geo
    cand.kv_tokens = (blocks // geo.num_groups) * geo.block_size
    cand.concurrency = blocks / kvm.blocks_per_request(geo, cand.max_model_len,
                                                       cand.max_num_batched_tokens)
    needed = kvm.bytes_for_one_request(geo, cand.max_model_len, cand.max_num_batched_tokens)
    if needed > kv_cache or cand.concurrency < min_concurrency:
        cand.reason = (f"KV cache {kv_cache / GiB:.2f} GiB/GPU holds {cand.kv_tokens:,} tokens "
                       f"= {cand.concurrency:.1f} sequences of {cand.max_model_len:,}; "
                       f"{min_concurrency} wanted")
        return cand
    cand.feasible = True
    cand.status = "fits"
    cand.reason = (f"{cand.kv_tokens:,} KV tokens = {cand.concurrency:.1f} sequences of "
                   f"{cand.max_model_len:,} per replica")
    return cand


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
