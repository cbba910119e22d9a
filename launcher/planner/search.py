"""The planning policy (DESIGN §4): walk the ladder, keep the first rung that holds, explain.

Ladder, best first, for each weight precision (as checkpointed → fp8 → 4-bit):
KV cache in the model dtype at full context → fp8 KV at full context → fp8 KV at the longest
context (not below the floor) that still holds `min_concurrency` sequences. On a rung every
valid shape (TP × PP, spare GPUs as DP replicas) is sized; throughput keeps the fewest GPUs per
replica, latency the largest TP. Inside a shape the batch steps down from 8192 to 2048
tokens per step before the shape is given up, because a smaller activation peak is cheaper
than a lower precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo
from launcher.memory.estimate import Refusal, validate_shape
from launcher.memory.overheads import EngineCalibration
from launcher.models.profiles import Variant
from launcher.models.spec import ModelSpec
from launcher.planner.budget import Candidate, evaluate, longest_context
from launcher.planner.options import WeightOption, weight_options
from launcher.planner.plan import Decision, Plan
from launcher.planner.request import PlanRequest
from launcher.units import GiB

# (max_num_batched_tokens, max_num_seqs), tried in order inside each shape.
BATCH_TIERS = ((8192, 256), (2048, 64))
# The CPU backend computes on a few cores: smaller steps keep time-to-first-token sane.
CPU_BATCH_TIERS = ((2048, 32), (512, 8))
LEVEL_NAMES = {0: "full precision", 1: "8-bit", 2: "4-bit"}


def _pow2_upto(n: int) -> list[int]:
    out, v = [], 1
    while v <= n:
        out.append(v)
        v *= 2
    return out


def shapes(spec: ModelSpec, n: int, req: PlanRequest) -> list[tuple[int, int]]:
    """(tp, pp) pairs worth sizing on n GPUs; vLLM's validity is checked when sized."""
    if req.device == "cpu":
        return [(1, 1)]
    tps = [req.tp] if req.tp else _pow2_upto(n)
    pps = [req.pp] if req.pp else [p for p in _pow2_upto(n) if p <= 8]
    out = [(t, p) for t in tps for p in pps if t * p <= n and p <= spec.num_layers]
    return sorted(out, key=lambda s: (s[0] * s[1], s[1]))


def _check_forced_shape(spec: ModelSpec, n: int, req: PlanRequest, cap: int) -> None:
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
    n = len(gpus)
    max_dp = n // (tp * pp)
    dps = [max_dp] if _homogeneous(gpus) else list(range(max_dp, 0, -1))
    first: Candidate | None = None
    for dp in dps:
        tiers = CPU_BATCH_TIERS if req.device == "cpu" else BATCH_TIERS
        for tokens, seqs in tiers:
            c = evaluate(Candidate(opt, kv, tp, pp, dp, length, seqs, tokens), gpus, cal,
                         req.headroom, req.min_concurrency, req.enforce_eager,
                         req.reserve_bytes)
            if c.feasible:
                if first is not None and tokens != tiers[0][0]:
                    c.notes.append(f"batch lowered to {tokens} tokens / {seqs} sequences: at "
                                   f"{first.max_num_batched_tokens}: {first.reason}")
                return c
            if first is None:
                first = c
            if c.reason.startswith("vLLM would refuse"):
                break  # a smaller batch cannot fix a shape vLLM refuses
    assert first is not None
    return first


def _pick(fits: list[Candidate], objective: str) -> Candidate:
    if objective == "latency":
        return max(fits, key=lambda c: (c.tp, -c.pp, c.concurrency))
    return min(fits, key=lambda c: (c.gpus_per_replica, c.pp, -c.concurrency))


@dataclasses.dataclass
class _Rung:
    option: WeightOption
    kv: str
    shorten: bool

    @property
    def name(self) -> str:
        kv = "KV fp8" if self.kv == "fp8" else "KV auto"
        return f"{self.option.label} · {kv} · {'shorter' if self.shorten else 'full'} ctx"


def _rungs(options: list[WeightOption], req: PlanRequest, spec: ModelSpec) -> list[_Rung]:
    out: list[_Rung] = []
    for opt in options:
        kvs = ["auto", "fp8"] if req.kv_cache_dtype == "auto" else [req.kv_cache_dtype]
        if req.device == "cpu":
            kvs = ["auto"]
        out.extend(_Rung(opt, kv, False) for kv in kvs)
        out.append(_Rung(opt, kvs[-1], True))
    return out


def search(spec: ModelSpec, gpus: list[GpuInfo], cal: EngineCalibration, req: PlanRequest,
           options: list[WeightOption]) -> tuple[Candidate | None, list[Candidate], list[str]]:
    """(chosen, every candidate sized, per-rung summaries) on these GPUs."""
    cap = req.context_cap(spec.max_position_embeddings)
    floor = req.context_floor(spec.max_position_embeddings)
    tried: list[Candidate] = []
    rung_log: list[str] = []
    for rung in _rungs(options, req, spec):
        if rung.shorten and floor >= cap:
            continue
        fits: list[Candidate] = []
        for tp, pp in shapes(spec, len(gpus), req):
            length = floor if rung.shorten else cap
            c = _size_shape(rung.option, rung.kv, tp, pp, length, gpus, cal, req)
            if rung.shorten and c.feasible:
                best = longest_context(c, floor, cap, req.min_concurrency)
                if best is not None and best != length:
                    c2 = _size_shape(rung.option, rung.kv, tp, pp, best, gpus, cal, req)
                    if c2.feasible:
                        c = c2
            c.rung = rung.name
            tried.append(c)
            if c.feasible:
                fits.append(c)
        if fits:
            chosen = _pick(fits, req.objective)
            chosen.status = "chosen"
            for c in fits:
                if c is not chosen:
                    c.reason = _lost_to(c, chosen, req.objective)
            return chosen, tried, rung_log
        rung_log.append(rung.name)
    return None, tried, rung_log


def _lost_to(c: Candidate, chosen: Candidate, objective: str) -> str:
    if objective == "latency":
        return f"fits ({c.reason}); latency prefers the largest TP ({chosen.tp})"
    return (f"fits ({c.reason}); uses {c.gpus_per_replica} GPUs per replica, the chosen "
            f"shape {chosen.gpus_per_replica}")


def plan(spec: ModelSpec, gpus: Sequence[GpuInfo], cal: EngineCalibration, req: PlanRequest, *,
         variants: tuple[Variant, ...] = (), model_ref: str | None = None,
         engine_version_source: str = "", templates: Sequence[GpuInfo] = (),
         inventory_source: str = "") -> Plan:
    """Plan `spec` on `gpus`. `templates` are GPU types to phrase "what would fit" with."""
    req.check(spec.max_position_embeddings)
    if not gpus:
        raise InputError("No GPU to plan for", fix="Pass --gpus, e.g. --gpus 2xH100-80GB.")
    ordered = sorted(gpus, key=lambda g: (-(g.total_bytes - g.used_bytes), g.index))
    cap = req.context_cap(spec.max_position_embeddings)
    _check_forced_shape(spec, len(ordered), req, cap)
    options, unavailable = weight_options(spec, variants, ordered, cal, model_ref,
                                          req.quantization)
    p = Plan(feasible=False, model=_model_json(spec, model_ref), engine_version=cal.version,
             engine_version_source=engine_version_source, request=dataclasses.asdict(req),
             headroom=req.headroom, inventory_source=inventory_source,
             unavailable=[dataclasses.asdict(u) for u in unavailable])
    p.notes.extend(spec.assumptions)
    if spec.mla is not None:
        p.notes.append(
            f"MLA: every GPU caches the whole compressed latent ({spec.mla.kv_lora_rank} + "
            f"{spec.mla.qk_rope_head_dim} values per token per layer) of the layers it holds; "
            "tensor parallelism does not shrink the KV cache per GPU, pipeline stages do")
    if not options:
        p.reason = (f"no weight precision is available for --quantization {req.quantization}: "
                    + "; ".join(f"{u.label}: {u.reason}" for u in unavailable))
        return p
    chosen, tried, failed_rungs = search(spec, ordered, cal, req, options)
    p.candidates = tried
    if chosen is None:
        best = _closest(tried)
        p.reason = (f"nothing fits on {len(ordered)}× {ordered[0].name} with "
                    f"{req.headroom:.0%} headroom and ≥ {req.min_concurrency} sequences"
                    + (f"; closest: {best.rung}, TP{best.tp}×PP{best.pp}: {best.reason}"
                       if best else ""))
        p.suggestions = suggest(spec, cal, req, variants, model_ref, templates or ordered[:1])
        return p
    p.feasible = True
    p.chosen = chosen
    p.decisions = _explain(spec, chosen, tried, failed_rungs, ordered, req, cal)
    p.notes.extend(dict.fromkeys(chosen.notes + ([chosen.option.note] if chosen.option.note
                                                 else [])))
    return p


def _closest(tried: list[Candidate]) -> Candidate | None:
    """The lowest precision tried on the most GPUs: the candidate that came nearest."""
    if not tried:
        return None
    last = [c for c in tried if c.option is tried[-1].option]
    return max(last, key=lambda c: (c.gpus_per_replica * c.dp, c.gpus_per_replica, -c.pp,
                                    c.concurrency))


def _model_json(spec: ModelSpec, model_ref: str | None) -> dict:
    return {"name": spec.name, "source": spec.source, "model_ref": model_ref,
            "architecture": spec.architecture, "max_position_embeddings":
            spec.max_position_embeddings, "dtype": spec.dtype, "params": spec.param_count,
            "layers": spec.num_layers, "attention_heads": spec.num_attention_heads,
            "kv_heads": spec.num_kv_heads, "mla": spec.mla is not None,
            "moe": spec.moe is not None}


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
            for n in (1, 2, 4, 8, 16):
                gpus = [dataclasses.replace(clean, index=i) for i in range(n)]
                chosen, _, _ = search(spec, gpus, cal, free_req, [by_level[level]])
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
            out.append(f"does not fit on up to 16× {t.catalog_name or t.name} at any precision")
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
        chosen, _, _ = search(spec, [roomy], cal, dataclasses.replace(req, max_model_len=length),
                              opts)
        if chosen is not None:
            need = chosen.budgets[0].planned_total / (1 - req.headroom)
            needs.append(f"{need / GiB:.1f} GiB at {length:,} tokens of context")
    needs = [needs[0].replace(" GiB at", " GiB of node memory at", 1), *needs[1:]] if needs \
        else needs
    if not needs:
        return "does not fit in any amount of host memory with these options"
    return (f"would need {', or '.join(needs)} (the node has {t.total_bytes / GiB:.1f} GiB, "
            f"{t.used_bytes / GiB:.1f} GiB used by others)")


def _explain(spec: ModelSpec, c: Candidate, tried: list[Candidate], failed_rungs: list[str],
             gpus: list[GpuInfo], req: PlanRequest, cal: EngineCalibration) -> list[Decision]:
    d: list[Decision] = []
    cap = req.context_cap(spec.max_position_embeddings)
    lost = [t for t in tried if t.rung in failed_rungs]

    failed_opts: dict[str, list[Candidate]] = {}
    for t in lost:
        failed_opts.setdefault(t.option.label, []).append(t)

    def why_not(cands: list[Candidate]) -> str:
        # The shape with the most GPUs per replica came closest; its numbers say why.
        b = max(cands, key=lambda t: (t.gpus_per_replica, -t.pp, t.concurrency))
        return f"at TP{b.tp}×PP{b.pp}: {b.reason}"

    steps = "; ".join(f"{label} rejected {why_not(cs)}" for label, cs in failed_opts.items()
                      if label != c.option.label)
    same = failed_opts.get(c.option.label)
    d.append(Decision("weights", c.option.label,
                      "highest precision that fits" + (f" — {steps}" if steps else "")
                      + (f"; at full context and model-dtype KV it did not: {why_not(same)}"
                         if same else "")))
    d.append(Decision("dtype", c.serve_dtype, f"model dtype {spec.dtype}"
                      + ("" if c.serve_dtype == spec.dtype else
                         f", cast to {c.serve_dtype} (no bf16 below compute capability 8.0)")))
    d.append(Decision("quantization", c.option.quantization_name,
                      c.option.note or ("none: 16-bit weights fit" if c.option.level == 0
                                        else c.option.label)))
    kv_why = ("model dtype: fits without fp8 KV" if c.kv_cache_dtype == "auto" else
              "fp8 KV (1 byte per element) doubles the tokens held; " +
              ("asked with --kv-cache-dtype fp8" if req.kv_cache_dtype == "fp8" else
               "the model-dtype KV cache did not hold the context at the wanted concurrency"))
    d.append(Decision("kv_cache_dtype", c.kv_cache_dtype, kv_why))
    smaller = [t for t in tried if t.rung == c.rung and t.gpus_per_replica < c.gpus_per_replica
               and not t.feasible]
    if req.tp:
        tp_why = f"--tp {req.tp}"
    elif req.objective == "latency":
        tp_why = f"largest valid tensor-parallel size that fits ({c.tp}), for latency"
    else:
        tp_why = f"fewest GPUs per replica that hold {c.max_model_len:,} tokens × " \
                 f"{req.min_concurrency} sequences"
        if smaller:
            s = max(smaller, key=lambda t: t.gpus_per_replica)
            tp_why += f"; TP{s.tp}×PP{s.pp} rejected: {s.reason}"
    d.append(Decision("tensor_parallel_size", c.tp, tp_why))
    if req.pp:
        pp_why = f"--pp {req.pp}"
    elif c.pp == 1:
        pp_why = "tensor parallel inside one node comes first"
    else:
        tp_only = [t for t in tried if t.rung == c.rung and t.pp == 1 and not t.feasible]
        pp_why = f"{c.pp} stages split the layers"
        if spec.mla is not None:
            pp_why += " and with them the MLA cache, which tensor parallelism does not split"
        if tp_only:
            b = max(tp_only, key=lambda t: t.tp)
            pp_why += f"; TP{b.tp} alone: {b.reason}"
    d.append(Decision("pipeline_parallel_size", c.pp, pp_why))
    spare = len(gpus) - c.gpus_per_replica * c.dp
    d.append(Decision("data_parallel_size", c.dp,
                      f"{len(gpus)} GPUs / {c.gpus_per_replica} per replica = {c.dp} "
                      f"replica{'s' if c.dp > 1 else ''}" + (f"; {spare} GPU(s) left idle"
                                                            if spare else "")))
    d.append(Decision("gpus", [b.index for b in c.budgets],
                      "most free memory first" + ("" if spare == 0 else
                                                  f"; {spare} left unused")))
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
    d.append(Decision("max_model_len", c.max_model_len, why))
    act = max(b.planned["activation"] for b in c.budgets)
    lowered = next((n for n in c.notes if n.startswith("batch lowered")), None)
    d.append(Decision("max_num_batched_tokens", c.max_num_batched_tokens,
                      lowered or f"chunked prefill of {c.max_num_batched_tokens} tokens per "
                      f"step; activation peak {act / GiB:.2f} GiB budgeted"))
    d.append(Decision("max_num_seqs", c.max_num_seqs,
                      f"{c.max_num_seqs} sequences per step: the sampler's "
                      f"{c.max_num_seqs} × vocab {spec.vocab_size:,} buffers are in the "
                      "activation budget (vLLM's default tier would allow more)"))
    tight = min(c.budgets, key=lambda b: b.limit_bytes - b.planned_total + b.planned["kv_cache"])
    capped = next((n for n in c.notes if n.startswith("KV cache sized for")), None)
    if capped:
        d.append(Decision("kv_cache_memory_bytes", c.kv_cache_memory_bytes,
                          f"{capped}; the {tight.limit_bytes / GiB:.1f} GiB limit "
                          f"({1 - req.headroom:.0%} of {tight.total_bytes / GiB:.1f} GiB) "
                          "would allow more"))
    else:
        d.append(Decision("kv_cache_memory_bytes", c.kv_cache_memory_bytes,
                          f"{c.kv_cache_memory_bytes / GiB:.2f} GiB: what is left under the "
                          f"{tight.limit_bytes / GiB:.1f} GiB limit ({1 - req.headroom:.0%} "
                          f"of {tight.total_bytes / GiB:.1f} GiB) on GPU {tight.index}; "
                          "passed exactly, so vLLM does not size the cache itself"))
    if req.device == "cpu":
        d.append(Decision("gpu_memory_utilization", None,
                          "not passed: the CPU backend takes the KV cache size as given"))
        d.append(Decision("enforce_eager", req.enforce_eager,
                          "--enforce-eager: no torch.compile warm-up, faster start, slower "
                          "steps" if req.enforce_eager else
                          "torch.compile kept for step speed (compiled once, then cached)"))
        return d
    d.append(Decision("gpu_memory_utilization", c.gpu_memory_utilization,
                      "only vLLM's start-up gate (free memory ≥ U × total); the cache size "
                      "is fixed by kv_cache_memory_bytes"))
    graphs = max(b.planned["cuda_graphs"] for b in c.budgets)
    d.append(Decision("enforce_eager", req.enforce_eager,
                      "--enforce-eager: no CUDA graphs" if req.enforce_eager else
                      f"CUDA graphs kept for decode speed; {graphs / GiB:.2f} GiB budgeted"))
    return d
