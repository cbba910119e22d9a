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
from launcher.planner.nodes import LINK_NOTE, crossing_hops, layout_lines, nodes_of
from launcher.planner.plan import Explanation
from launcher.planner.request import PlanRequest
from launcher.planner.search import SearchResult, figure
from launcher.planner.speed import internode_step_ms
from launcher.speed.workload import Workload
from launcher.units import GiB


def explain(spec: ModelSpec, c: Candidate, found: SearchResult, gpus: Sequence[GpuInfo],
            req: PlanRequest) -> list[Explanation]:
    tried = found.tried
    out = [_weights(c, tried, found.failed_options), _dtype(spec, c), _quantization(c),
           _kv_dtype(c, req), _tp(c, tried, req, found.fallback), _pp(spec, c, tried, req),
           *_replicas(c, gpus), _max_model_len(spec, c, tried, req), *_batch(spec, c)]
    if c.predicted is not None:
        out.insert(0, _objective(c, tried, req))
    out.append(_kv_bytes(c, req))
    out.extend(_engine_gates(c, req))
    out.extend(_nodes(c, gpus))
    return out


def _nodes(c: Candidate, gpus: Sequence[GpuInfo]) -> list[Explanation]:
    """Several nodes: how the ranks fall on them, what crosses the link, which node bounds."""
    nodes = nodes_of(gpus)
    if not nodes.multi:
        return []
    hops = crossing_hops(c.gpus, c.tp, c.pp)
    if hops:
        step = internode_step_ms(c, float(c.max_num_seqs))
        why = (f"TP{c.tp} inside each node of {nodes.gpus_per_node} GPUs, PP{c.pp} stages "
               f"fill the nodes in order: {hops} stage boundar{'y' if hops == 1 else 'ies'} "
               f"per replica cross{'es' if hops == 1 else ''} the link between nodes "
               f"(charged ≤ {step:.2f} ms per decode step at {c.max_num_seqs} sequences); "
               + LINK_NOTE)
    else:
        why = (f"each replica's TP{c.tp}×PP{c.pp} sits inside one node; {c.dp} replicas "
               f"spread over {nodes.count} nodes, nothing but requests crosses the link")
    by_gpu = {g.index: g.node for g in c.gpus}
    tight = min(c.budgets, key=lambda b: b.room_bytes, default=None)
    if tight is not None and len({g.used_bytes for g in c.gpus}) > 1:
        why += (f"; the tightest GPU ({tight.index}, node {by_gpu.get(tight.index, 0)}) "
                "bounds the KV cache of every rank")
    layout = "; ".join(layout_lines(c.gpus, c.tp, c.pp))
    return [Explanation("nnodes", nodes.count, why),
            Explanation("gpus_per_node", nodes.gpus_per_node, layout)]


def _why_not(cands: Sequence[Candidate]) -> str:
    # The shape with the most GPUs per replica came closest; its numbers say why.
    b = max(cands, key=lambda t: (t.gpus_per_replica, -t.pp, t.concurrency))
    return f"at TP{b.tp}×PP{b.pp}: {b.reason}"


def _weights(c: Candidate, tried: Sequence[Candidate],
             failed_options: Sequence[str]) -> Explanation:
    failed: dict[str, list[Candidate]] = {}
    for t in tried:
        if t.option.label in failed_options:
            failed.setdefault(t.option.label, []).append(t)
    steps = "; ".join(f"{label} rejected {_why_not(cs)}" for label, cs in failed.items()
                      if label != c.option.label)
    return Explanation("weights", c.option.label,
                       "highest precision that fits" + (f" — {steps}" if steps else ""))


def _fmt(v: float, objective: str) -> str:
    if objective == "throughput":
        return f"{v:,.0f} output tok/s"
    if objective == "latency":
        return f"{v / 1000:.2f} s per request"
    return f"{v:.3g} GPU-h per million output tokens"


def workload_text(w: Workload) -> str:
    """"1,024 → 256 tokens, all 1,000 prompts at once"."""
    load = (f"{w.concurrency} in flight" if w.concurrency is not None and not w.open_loop
            else f"{w.request_rate:g} requests/s" if w.open_loop
            else f"all {w.prompts:,} prompts at once")
    return f"{w.input_len:,} → {w.output_len:,} tokens per request, {load}"


def _objective(c: Candidate, tried: Sequence[Candidate], req: PlanRequest) -> Explanation:
    """The chosen candidate's predicted figures and by how much every other fitting one
    loses on the objective's figure."""
    p = c.predicted
    assert p is not None
    w = req.workload
    mine = figure(c, req.objective)
    assert mine is not None
    why = (f"{req.objective}: predicted {_fmt(mine, req.objective)}"
           + (f" ({p.latency_basis})" if req.objective == "latency" else "")
           + f" for {workload_text(w)}: TTFT {p.ttft_ms:,.0f} ms, ITL {p.itl_ms:.1f} ms, "
           f"{p.output_tokens_per_s:,.0f} output tok/s over {c.dp} "
           f"replica{'s' if c.dp > 1 else ''}, limited by {p.bound}")
    if p.latency_basis != "the workload" and req.objective != "throughput":
        why += (f"; one request alone: TTFT {p.basis_ttft_ms:,.0f} ms, ITL "
                f"{p.basis_itl_ms:.1f} ms (all prompts at once measure throughput, not "
                "latency)")
    others = [t for t in tried if t.feasible and t is not c and t.predicted is not None]
    losers = []
    for t in sorted(others, key=lambda t: abs((figure(t, req.objective) or 0) - mine)):
        f = figure(t, req.objective)
        if f is None or mine == 0:
            continue
        rel = (f - mine) / mine
        losers.append(f"TP{t.tp}×PP{t.pp}×DP{t.dp}"
                      + (f" at {t.max_model_len:,} ctx" if t.max_model_len != c.max_model_len
                         else "") + f" {_fmt(f, req.objective)} ({rel:+.0%})")
    if losers:
        why += "; others: " + ", ".join(losers)
    slo = [t for t in tried if t.rejection is not None and t.rejection.slo]
    if slo:
        why += f"; {len(slo)} fitting shape(s) miss the service levels"
    return Explanation("objective", req.objective, why)


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


def _tp(c: Candidate, tried: Sequence[Candidate], req: PlanRequest,
        fallback: bool) -> Explanation:
    if req.tp:
        return Explanation("tensor_parallel_size", c.tp, f"--tp {req.tp}")
    mark = " (no speed model)" if fallback else ""
    if c.predicted is None and req.objective == "latency":
        return Explanation("tensor_parallel_size", c.tp,
                           f"largest valid tensor-parallel size that fits ({c.tp}), for "
                           f"latency{mark}")
    if c.predicted is None:
        why = (f"fewest GPUs per replica that hold {c.max_model_len:,} tokens × "
               f"{req.min_concurrency} sequences{mark}")
    else:
        mine = figure(c, req.objective)
        assert mine is not None
        why = f"best predicted {req.objective} among the shapes that fit " \
              f"({_fmt(mine, req.objective)})"
    smaller = [t for t in tried if t.option is c.option
               and t.gpus_per_replica < c.gpus_per_replica and not t.feasible]
    if smaller:
        s = max(smaller, key=lambda t: t.gpus_per_replica)
        why += f"; TP{s.tp}×PP{s.pp} rejected: {s.reason}"
    return Explanation("tensor_parallel_size", c.tp, why)


def _pp(spec: ModelSpec, c: Candidate, tried: Sequence[Candidate],
        req: PlanRequest) -> Explanation:
    if req.pp:
        return Explanation("pipeline_parallel_size", c.pp, f"--pp {req.pp}")
    staged = [t for t in tried if t.feasible and t.pp > 1 and t.predicted is not None]
    if c.pp == 1:
        mine = figure(c, req.objective)
        if mine is None or not staged:
            return Explanation("pipeline_parallel_size", 1,
                               "tensor parallel inside one node comes first")
        best = min(staged, key=lambda t: abs((figure(t, req.objective) or 0) - mine))
        f = figure(best, req.objective) or 0.0
        return Explanation("pipeline_parallel_size", 1,
                           f"no pipeline stages: the nearest staged shape, TP{best.tp}×"
                           f"PP{best.pp}×DP{best.dp}, predicts {_fmt(f, req.objective)} "
                           f"({(f - mine) / mine:+.0%})" if mine else "no pipeline stages")
    why = f"{c.pp} stages split the layers"
    if spec.mla is not None:
        why += " and with them the MLA cache, which tensor parallelism does not split"
    tp_only = [t for t in tried if t.option is c.option and t.pp == 1 and not t.feasible
               and t.max_model_len >= c.max_model_len]
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
                    ("node by node, most free memory first inside each"
                     if len({g.node for g in c.gpus}) > 1 else "most free memory first")
                    + (f"; {spare} left unused" if spare else "")),
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
