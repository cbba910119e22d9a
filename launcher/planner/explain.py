"""Every number of a chosen plan with its reason, in numbers (STYLE 8, 9).

One function per decision; each reads the search's structured results (rejections, the
candidates tried), never the text of a reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import Device
from launcher.memory.components import Component
from launcher.models.spec import ModelSpec
from launcher.planner.candidate import Candidate
from launcher.planner.plan import Explanation
from launcher.planner.request import PlanRequest
from launcher.planner.search import SearchResult
from launcher.units import GiB


def explain(spec: ModelSpec, c: Candidate, found: SearchResult, gpus: Sequence[GpuInfo],
            req: PlanRequest) -> list[Explanation]:
    tried = found.tried
    out = [_weights(c, tried, found.failed_rungs), _dtype(spec, c), _quantization(c),
           _kv_dtype(c, req), _tp(c, tried, req), _pp(spec, c, tried, req),
           *_replicas(c, gpus), _max_model_len(spec, c, tried, req), *_batch(spec, c)]
    out.append(_kv_bytes(c, req))
    out.extend(_engine_gates(c, req))
    return out


def _why_not(cands: Sequence[Candidate]) -> str:
    # The shape with the most GPUs per replica came closest; its numbers say why.
    b = max(cands, key=lambda t: (t.gpus_per_replica, -t.pp, t.concurrency))
    return f"at TP{b.tp}×PP{b.pp}: {b.reason}"


def _weights(c: Candidate, tried: Sequence[Candidate],
             failed_rungs: Sequence[str]) -> Explanation:
    failed: dict[str, list[Candidate]] = {}
    for t in tried:
        if t.rung in failed_rungs:
            failed.setdefault(t.option.label, []).append(t)
    steps = "; ".join(f"{label} rejected {_why_not(cs)}" for label, cs in failed.items()
                      if label != c.option.label)
    same = failed.get(c.option.label)
    return Explanation("weights", c.option.label,
                       "highest precision that fits" + (f" — {steps}" if steps else "")
                       + (f"; at full context and model-dtype KV it did not: {_why_not(same)}"
                          if same else ""))


def _dtype(spec: ModelSpec, c: Candidate) -> Explanation:
    return Explanation("dtype", c.serve_dtype, f"model dtype {spec.dtype}"
                       + ("" if c.serve_dtype == spec.dtype else
                          f", cast to {c.serve_dtype} (no bf16 below compute capability 8.0)"))


def _quantization(c: Candidate) -> Explanation:
    return Explanation("quantization", c.option.quantization_name,
                       c.option.note or ("none: 16-bit weights fit" if c.option.level == 0
                                         else c.option.label))


def _kv_dtype(c: Candidate, req: PlanRequest) -> Explanation:
    why = ("model dtype: fits without fp8 KV" if c.kv_cache_dtype == "auto" else
           "fp8 KV (1 byte per element) doubles the tokens held; " +
           ("asked with --kv-cache-dtype fp8" if req.kv_cache_dtype == "fp8" else
            "the model-dtype KV cache did not hold the context at the wanted concurrency"))
    return Explanation("kv_cache_dtype", c.kv_cache_dtype, why)


def _tp(c: Candidate, tried: Sequence[Candidate], req: PlanRequest) -> Explanation:
    if req.tp:
        return Explanation("tensor_parallel_size", c.tp, f"--tp {req.tp}")
    if req.objective == "latency":
        return Explanation("tensor_parallel_size", c.tp,
                           f"largest valid tensor-parallel size that fits ({c.tp}), for latency")
    why = (f"fewest GPUs per replica that hold {c.max_model_len:,} tokens × "
           f"{req.min_concurrency} sequences")
    smaller = [t for t in tried if t.rung == c.rung and t.gpus_per_replica < c.gpus_per_replica
               and not t.feasible]
    if smaller:
        s = max(smaller, key=lambda t: t.gpus_per_replica)
        why += f"; TP{s.tp}×PP{s.pp} rejected: {s.reason}"
    return Explanation("tensor_parallel_size", c.tp, why)


def _pp(spec: ModelSpec, c: Candidate, tried: Sequence[Candidate],
        req: PlanRequest) -> Explanation:
    if req.pp:
        return Explanation("pipeline_parallel_size", c.pp, f"--pp {req.pp}")
    if c.pp == 1:
        return Explanation("pipeline_parallel_size", 1,
                           "tensor parallel inside one node comes first")
    why = f"{c.pp} stages split the layers"
    if spec.mla is not None:
        why += " and with them the MLA cache, which tensor parallelism does not split"
    tp_only = [t for t in tried if t.rung == c.rung and t.pp == 1 and not t.feasible]
    if tp_only:
        b = max(tp_only, key=lambda t: t.tp)
        why += f"; TP{b.tp} alone: {b.reason}"
    return Explanation("pipeline_parallel_size", c.pp, why)


def _replicas(c: Candidate, gpus: Sequence[GpuInfo]) -> list[Explanation]:
    spare = len(gpus) - c.gpus_per_replica * c.dp
    return [
        Explanation("data_parallel_size", c.dp,
                    f"{len(gpus)} GPUs / {c.gpus_per_replica} per replica = {c.dp} "
                    f"replica{'s' if c.dp > 1 else ''}"
                    + (f"; {spare} GPU(s) left idle" if spare else "")),
        Explanation("gpus", [b.index for b in c.budgets],
                    "most free memory first" + (f"; {spare} left unused" if spare else "")),
    ]


def _max_model_len(spec: ModelSpec, c: Candidate, tried: Sequence[Candidate],
                   req: PlanRequest) -> Explanation:
    cap = req.context_cap(spec.max_position_embeddings)
    if c.max_model_len < cap:
        full = [t for t in tried if t.max_model_len == cap and t.option is c.option
                and t.tp == c.tp and t.pp == c.pp]
        why = f"shortened from {cap:,}"
        if full:
            why += f" ({full[-1].reason})"
        why += (f": longest context with ≥ {req.min_concurrency} sequences, floor "
                f"{req.context_floor(spec.max_position_embeddings):,}")
    elif req.max_model_len:
        why = f"--max-model-len cap (model maximum {spec.max_position_embeddings:,})"
    else:
        why = "the model's full context"
    return Explanation("max_model_len", c.max_model_len, why)


def _batch(spec: ModelSpec, c: Candidate) -> list[Explanation]:
    act = max(b.planned[Component.ACTIVATION] for b in c.budgets)
    lowered = c.lowered_note()
    return [
        Explanation("max_num_batched_tokens", c.max_num_batched_tokens,
                    lowered or f"chunked prefill of {c.max_num_batched_tokens} tokens per "
                    f"step; activation peak {act / GiB:.2f} GiB budgeted"),
        Explanation("max_num_seqs", c.max_num_seqs,
                    f"{c.max_num_seqs} sequences per step: the sampler's {c.max_num_seqs} × "
                    f"vocab {spec.vocab_size:,} buffers are in the activation budget (vLLM's "
                    "default tier would allow more)"),
    ]


def _kv_bytes(c: Candidate, req: PlanRequest) -> Explanation:
    tight = min(c.budgets, key=lambda b: b.room_bytes)
    limit = (f"the {tight.limit_bytes / GiB:.1f} GiB limit ({1 - req.headroom:.0%} of "
             f"{tight.total_bytes / GiB:.1f} GiB)")
    if c.kv_capped_for is not None:
        return Explanation("kv_cache_memory_bytes", c.kv_cache_memory_bytes,
                           f"KV cache sized for {c.kv_capped_for} sequences of "
                           f"{c.max_model_len:,} tokens ({c.kv_cache_memory_bytes / GiB:.2f} "
                           f"GiB), not all free host memory; {limit} would allow more")
    return Explanation("kv_cache_memory_bytes", c.kv_cache_memory_bytes,
                       f"{c.kv_cache_memory_bytes / GiB:.2f} GiB: what is left under {limit} "
                       f"on GPU {tight.index}; passed exactly, so vLLM does not size the cache "
                       "itself")


def _engine_gates(c: Candidate, req: PlanRequest) -> list[Explanation]:
    if req.device == Device.CPU:
        return [
            Explanation("gpu_memory_utilization", None,
                        "not passed: the CPU backend takes the KV cache size as given"),
            Explanation("enforce_eager", req.enforce_eager,
                        "--enforce-eager: no torch.compile warm-up, faster start, slower steps"
                        if req.enforce_eager else
                        "torch.compile kept for step speed (compiled once, then cached)"),
        ]
    graphs = max(b.planned[Component.CUDA_GRAPHS] for b in c.budgets)
    return [
        Explanation("gpu_memory_utilization", c.gpu_memory_utilization,
                    "only vLLM's start-up gate (free memory ≥ U × total); the cache size is "
                    "fixed by kv_cache_memory_bytes"),
        Explanation("enforce_eager", req.enforce_eager,
                    "--enforce-eager: no CUDA graphs" if req.enforce_eager else
                    f"CUDA graphs kept for decode speed; {graphs / GiB:.2f} GiB budgeted"),
    ]
