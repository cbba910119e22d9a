"""What plain vLLM does with exactly these flags: will it start, and where memory goes.

Pure: a ModelSpec, the GPUs, the flags and the engine version's rules (`EngineCalibration`) in;
an `Estimate` out. It follows vLLM's own order of checks (the same from 0.19 to 0.33) and its
own words for the failures, so a user recognizes the error they would have hit:

    config validation → start-up free-memory check (always, also with
    --kv-cache-memory-bytes) → load → profile →
    KV = U·T − weights − activation − non-torch − CUDA-graph estimate (0.20+: the V1 runner's
    extrapolation; V2-runner models nothing until 0.29, then about the pool itself)
    → "No available memory for the cache blocks" / "To serve at least one request …"

What changes with the version is data: the default U, the batch tiers, the capture sizes,
which runner a model gets, the quantization and KV-cache dtypes that exist.

Figures are for the worst rank (the pipeline stage with the least KV room); `stages` keeps
every stage for callers that want them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from launcher.hardware.inventory import GpuInfo
from launcher.memory import capability
from launcher.memory import kv as kvm
from launcher.memory import state as st
from launcher.memory.budget import kv_budget
from launcher.memory.calibration import EngineCalibration, KvDtype
from launcher.memory.overheads import (
    activation_bytes,
    capture_sizes,
    cuda_graph_bytes,
    uses_v2_runner,
    v1_cuda_graph_estimate_bytes,
)
from launcher.memory.tensors import synthesize
from launcher.memory.weights import RankWeights, padded_vocab, pp_layer_ranges, weights_per_rank
from launcher.models.spec import DTYPE_SIZE, TORCH_DTYPES, ModelSpec
from launcher.units import GiB


@dataclass(frozen=True)
class EngineFlags:
    """vLLM's own flags; None means "vLLM's default for this version and GPU"."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_memory_bytes: int | None = None
    enforce_eager: bool = False


@dataclass(frozen=True)
class StageEstimate:
    stage: int
    layers: int
    weights_bytes: int
    weights_by_component: dict[str, int]
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int  # the pool graph capture takes (on top of the KV cache)
    kv_cache_bytes: int
    kv_cache_tokens: int
    num_blocks: int
    context_bytes: int
    # What vLLM took out of its budget U·T for CUDA graphs before sizing the KV cache (0 where
    # the version or the model's runner does not, or the KV size was given).
    cuda_graph_estimate_bytes: int = 0

    @property
    def peak_used_bytes(self) -> int:
        return (self.context_bytes + self.weights_bytes + self.activation_bytes
                + self.non_torch_bytes + self.kv_cache_bytes + self.cuda_graph_bytes)


@dataclass
class Estimate:
    starts: bool
    error: str | None
    engine_version: str
    engine_version_source: str
    gpu_name: str
    total_bytes: int
    flags: dict[str, object]
    resolved: dict[str, object] = field(default_factory=dict)  # defaults vLLM would pick, with why
    stages: list[StageEstimate] = field(default_factory=list)
    max_concurrency: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def worst(self) -> StageEstimate | None:
        if not self.stages:
            return None
        return min(self.stages, key=lambda s: (s.kv_cache_bytes, -s.peak_used_bytes))

    def to_json(self) -> dict[str, object]:
        w = self.worst

        def g(n: int | None) -> float | None:
            return None if n is None else round(n / GiB, 3)

        peak = max((s.peak_used_bytes for s in self.stages), default=None)
        return {
            "starts": self.starts,
            "error": self.error,
            "engine_version": self.engine_version,
            "engine_version_source": self.engine_version_source,
            "gpu": self.gpu_name,
            "total_gib": g(self.total_bytes),
            "weights_gib": g(w.weights_bytes) if w else None,
            "activation_gib": g(w.activation_bytes) if w else None,
            "non_torch_gib": g(w.non_torch_bytes) if w else None,
            "cuda_graph_gib": g(w.cuda_graph_bytes) if w else None,
            "cuda_graph_estimate_gib": g(w.cuda_graph_estimate_bytes) if w else None,
            "kv_cache_gib": g(w.kv_cache_bytes) if w and self.starts else None,
            "kv_cache_tokens": w.kv_cache_tokens if w and self.starts else None,
            "max_concurrency": round(self.max_concurrency, 2)
            if self.max_concurrency is not None and self.starts else None,
            "peak_used_gib": g(peak) if peak is not None and self.starts else None,
            "flags": self.flags,
            "resolved": self.resolved,
            "stages": [{**asdict(s), "peak_used_bytes": s.peak_used_bytes} for s in self.stages],
            "notes": self.notes,
        }


class Refusal(Exception):
    """vLLM would refuse to start; carries vLLM's own message."""


def batch_defaults(gpu: GpuInfo, cal: EngineCalibration) -> tuple[int, int, str]:
    """vLLM's `get_batch_defaults` for the OpenAI server: the first tier of the version that
    matches the device's NVML total, name and compute capability."""
    nvml_total = gpu.nvml_total_bytes or gpu.total_bytes
    t = cal.batch_defaults.tier_for(nvml_total, gpu.name, gpu.compute_capability)
    return t.max_num_batched_tokens, t.max_num_seqs, f"{t.name} GPU tier"


def estimate(spec: ModelSpec, gpus: list[GpuInfo], flags: EngineFlags, cal: EngineCalibration,
             *, version_source: str = "calibration") -> Estimate:
    _tp, _pp = flags.tensor_parallel_size, flags.pipeline_parallel_size
    gpu = gpus[0] if gpus else None
    est = Estimate(starts=False, error=None, engine_version=cal.version,
                   engine_version_source=version_source,
                   gpu_name=gpu.name if gpu else "none",
                   total_bytes=gpu.total_bytes if gpu else 0, flags=asdict(flags))
    if cal.note:
        est.notes.append(f"vLLM {cal.version}: {cal.note} ({cal.range})")
    try:
        if gpu is None:
            raise Refusal("No GPU to estimate for.")
        _run(spec, gpus, flags, cal, est)
        est.starts = True
    except Refusal as r:
        est.error = str(r)
    return est


def _serve_dtype(spec: ModelSpec, flags: EngineFlags, gpu: GpuInfo, notes: list[str]) -> str:
    dtype = spec.dtype if flags.dtype in ("auto", None) else \
        TORCH_DTYPES.get(flags.dtype.lower(), flags.dtype)
    if dtype == "bfloat16" and not capability.supports_bf16(gpu.compute_capability) \
            and not gpu.is_cpu:
        if flags.dtype in ("auto", None):
            notes.append("bfloat16 model on compute capability < 8.0: vLLM casts to float16")
            dtype = "float16"
        else:
            raise Refusal(
                "Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
                f"Your {gpu.name} GPU has compute capability "
                f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}. "
                "You can use float16 instead by explicitly setting the `dtype` flag in CLI.")
    return dtype


def _quant_bits(spec: ModelSpec, flags: EngineFlags, gpu: GpuInfo,
                cal: EngineCalibration) -> tuple[float | None, str]:
    """(bits of quantized layers, scope) from the checkpoint or an online method of the
    version (scope "online" or "online-experts" for methods that quantize MoE experts only)."""
    q = spec.quantization
    want = flags.quantization
    if q is not None:
        if want and want.split("_")[0] not in (q.method, q.method.split("-")[0]) and \
                not (q.method in ("awq", "gptq") and want.startswith(q.method)):
            raise Refusal(
                f"Quantization method specified in the model config ({q.method}) does not "
                f"match the quantization method specified in the `quantization` argument "
                f"({want}).")
        if q.method in ("fp8",) or (q.scheme and "fp8" in q.scheme):
            _check_capability(gpu, cal, "fp8")
        return q.weight_bits, "experts" if q.method == "mxfp4" else "linear"
    if want:
        if want not in cal.online_methods:
            online = ", ".join(sorted(cal.online_methods)) or "none"
            raise Refusal(f"Quantization method {want!r} needs a pre-quantized checkpoint in "
                           f"vLLM {cal.version} (online methods: {online}); {spec.name} is not "
                           "quantized.")
        _check_capability(gpu, cal, "fp8" if want == "fp8" else want)
        scope = "online-experts" if want in cal.online_experts_only else "online"
        return cal.online_methods[want], scope
    return None, "none"


def _check_capability(gpu: GpuInfo, cal: EngineCalibration, method: str) -> None:
    need = cal.min_capability_for(method)
    if need is None:
        raise Refusal(f"Unknown quantization method: {method}. Must be one of "
                      f"{sorted(cal.min_capability)}.")
    if gpu.compute_capability < need and not gpu.is_cpu:
        cap = gpu.compute_capability[0] * 10 + gpu.compute_capability[1]
        raise Refusal(f"The quantization method {method} is not supported for the current GPU. "
                       f"Minimum capability: {need[0] * 10 + need[1]}. Current capability: {cap}.")


def validate_shape(spec: ModelSpec, tp: int, pp: int, max_model_len: int) -> None:
    """vLLM's config checks for a TP × PP shape and length; raises Refusal in its words."""
    heads, kv = spec.num_attention_heads, spec.num_kv_heads
    if heads % tp:
        raise Refusal(f"Total number of attention heads ({heads}) must be divisible by tensor "
                       f"parallel size ({tp}).")
    if spec.mla is None and kv and (kv % tp and tp % kv):
        raise Refusal(f"{max(tp, kv)} is not divisible by {min(tp, kv)}: the model's "
                       f"{kv} KV heads cannot be split or replicated over tensor parallel "
                       f"size {tp}.")
    padded = padded_vocab(spec.vocab_size)
    if padded % tp:
        raise Refusal(f"{padded} is not divisible by {tp}: the padded vocabulary cannot be "
                       "split over tensor parallel ranks.")
    if spec.moe is None and spec.intermediate_size % tp:
        raise Refusal(f"{spec.intermediate_size} is not divisible by {tp}: the MLP width "
                       "cannot be split over tensor parallel ranks.")
    if spec.linear is not None and (why := st.tp_problem(spec.linear, tp)):
        raise Refusal(f"{why}: vLLM cannot split the model's recurrent (Mamba / linear "
                      "attention) state over the tensor parallel ranks.")
    if pp > spec.num_layers:
        raise Refusal(f"Pipeline parallel size ({pp}) exceeds the number of layers "
                       f"({spec.num_layers}).")
    if pp > 1 and spec.kv_shared_layers:
        # A KV-shared layer must find its target among the attention layers of its own
        # pipeline stage (vLLM attention.py `validate_kv_sharing_target`).
        stage = {i: k for k, r in enumerate(pp_layer_ranges(spec.num_layers, pp)) for i in r}
        for i in range(spec.num_layers - spec.kv_shared_layers, spec.num_layers):
            t = kvm.kv_share_target(spec, i)
            if t is not None and stage[t] != stage[i]:
                raise Refusal(
                    f"Specified KV sharing target layer for model.layers.{i}.self_attn.attn is "
                    f"not valid: target layer model.layers.{t}.self_attn.attn is not a valid "
                    f"Attention layer in the model (pipeline parallel size {pp} puts it on "
                    "another stage).")
    if max_model_len > spec.max_position_embeddings:
        raise Refusal(
            f"User-specified max_model_len ({max_model_len}) is greater than the derived "
            f"max_model_len (max_position_embeddings={spec.max_position_embeddings} in model's "
            "config.json). To allow overriding this maximum, set the env var "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.")


@dataclass(frozen=True)
class Costs:
    """Everything but the KV cache, for the GPUs of one replica (worst GPU decides)."""

    gpu: GpuInfo
    dtype: str
    kv_bytes: int  # bytes per KV element
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    requested_bytes: int  # ceil(U·T): vLLM's budget
    stages: list[StageEstimate]
    geometries: list[kvm.KvGeometry]
    resolved: dict[str, object]


_RANKS: dict[tuple[object, ...], tuple[ModelSpec, list[RankWeights]]] = {}


def _rank_weights(spec: ModelSpec, dtype: str, serve_size: int, bits: float | None, scope: str,
                  tp: int, pp: int) -> list[RankWeights]:
    """weights_per_rank, memoized: the planner sizes the same model at many shapes.

    The cache keeps the spec alive beside its id, so an id is never reused while cached."""
    key = (id(spec), dtype, bits, scope, tp, pp)
    hit = _RANKS.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    online = bits if scope.startswith("online") else None
    tensors = spec.tensors if spec.tensors is not None else synthesize(
        spec, dtype, None if scope == "none" or scope.startswith("online") else bits,
        quant_scope="experts" if scope == "experts" else "linear")
    ranks = weights_per_rank(spec, tensors, tp=tp, pp=pp, serve_size=serve_size,
                             online_quant_bits=online,
                             online_experts_only=scope == "online-experts")
    if len(_RANKS) > 512:
        _RANKS.clear()
    _RANKS[key] = (spec, ranks)
    return ranks


def costs(spec: ModelSpec, gpus: list[GpuInfo], flags: EngineFlags, cal: EngineCalibration,
          notes: list[str] | None = None) -> Costs:
    """Validity checks, start-up check and the non-KV memory of every pipeline stage.

    Raises `Refusal` with vLLM's own words when vLLM would refuse these flags.
    """
    notes = notes if notes is not None else []
    tp, pp, dp = (flags.tensor_parallel_size, flags.pipeline_parallel_size,
                  flags.data_parallel_size)
    need = tp * pp * dp
    if len(gpus) < need:
        raise Refusal(f"TP×PP×DP = {tp}×{pp}×{dp} = {need} GPUs needed, {len(gpus)} available.")
    used = gpus[:need]
    gpu = min(used, key=lambda g: g.free_bytes)  # the tightest GPU decides
    auto_len = flags.max_model_len == -1
    if auto_len and not cal.max_model_len_auto:
        raise Refusal(f"vLLM {cal.version} has no --max-model-len -1 (auto).")
    max_model_len = spec.max_position_embeddings if auto_len or not flags.max_model_len \
        else flags.max_model_len
    validate_shape(spec, tp, pp, max_model_len)
    dtype = _serve_dtype(spec, flags, gpu, notes)
    serve_size = DTYPE_SIZE[dtype]
    bits, scope = _quant_bits(spec, flags, gpu, cal)
    kv_dtype = kv_cache_dtype(spec, cal, flags.kv_cache_dtype)
    kv_bytes = serve_size if kv_dtype.bits == 0 else max(1, kv_dtype.bits // 8)
    token_layer = kvm.kv_token_layer_bytes(spec, tp, kv_dtype, serve_size)

    # Batch sizes: vLLM's tier defaults, then its own clamps.
    d_tokens, d_seqs, why = batch_defaults(gpu, cal)
    seqs = flags.max_num_seqs or d_seqs
    tokens = flags.max_num_batched_tokens or d_tokens
    if not flags.max_num_batched_tokens:
        tokens = min(seqs * max_model_len, tokens)
    seqs = min(seqs, tokens)
    util = flags.gpu_memory_utilization or cal.gpu_memory_utilization
    v2 = uses_v2_runner(spec, cal, quantized=bits is not None)
    sizes = capture_sizes(spec, cal, max_num_seqs=seqs, max_num_batched_tokens=tokens,
                          compute_capability=gpu.compute_capability,
                          enforce_eager=flags.enforce_eager)
    kv_name = flags.kv_cache_dtype if flags.kv_cache_dtype not in ("auto", None) else dtype
    resolved = {
        "dtype": dtype, "max_model_len": max_model_len, "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens, "gpu_memory_utilization": util,
        "kv_cache_dtype": "fp8" if kv_name.startswith("fp8") and kv_name != "fp8_ds_mla"
        else kv_name, "quantization_bits": bits,
        "batch_defaults": why, "block_size": kvm.block_size_for(spec, cal.block_size),
        "model_runner": "V2" if v2 else "V1",
        "cuda_graph_capture_sizes": len(sizes),
        "engine_rules": cal.range,
    }
    # Start-up check: free memory must cover U·T.
    ctx = cal.context_bytes(tp, pp)
    free_at_start = gpu.total_bytes - gpu.used_bytes - ctx
    requested = math.ceil(gpu.total_bytes * util)
    if free_at_start < requested and cal.device != "cpu":  # CPU plans pass the KV size
        raise Refusal(
            f"Free memory on device cuda:{gpu.index} ({free_at_start / GiB:.2f}/"
            f"{gpu.total_bytes / GiB:.2f} GiB) on startup is less than desired GPU memory "
            f"utilization ({util}, {requested / GiB:.2f} GiB). Decrease GPU memory utilization "
            "or reduce GPU memory used by other processes.")

    ranks = _rank_weights(spec, dtype, serve_size, bits, scope, tp, pp)
    state_rules = st.rules_for(cal.version, gpu.compute_capability, is_cpu=cal.is_cpu,
                               state=spec.linear)
    non_torch = cal.non_torch_bytes(tp, pp)
    carried = cal.carried_over
    if carried and not cal.is_cpu:
        fitted = sorted(set(carried.values()))
        notes.append(f"overheads ({', '.join(carried)}) fitted on vLLM {', '.join(fitted)} "
                     f"start-up logs, carried over to {cal.version} (no log of {cal.range} "
                     "fitted yet)")
    stages: list[StageEstimate] = []
    geos: list[kvm.KvGeometry] = []
    for i, (rw, layers) in enumerate(zip(ranks, pp_layer_ranges(spec.num_layers, pp),
                                         strict=True)):
        act = activation_bytes(spec, cal, tp=tp, last_stage=i == pp - 1,
                               max_num_batched_tokens=tokens, max_num_seqs=seqs,
                               act_bytes=serve_size)
        graphs = cuda_graph_bytes(spec, cal, layers=len(layers),
                                  enforce_eager=flags.enforce_eager)
        estimate_cg = cuda_graph_estimate_bytes(
            spec, cal, layers=len(layers), tp=tp, act_bytes=serve_size, sizes=sizes,
            max_num_seqs=seqs, pool_bytes=graphs, v2=v2)
        geos.append(kvm.geometry(spec, tp=tp, pp=pp, kv_bytes=kv_bytes,
                                 block_size=kvm.block_size_for(spec, cal.block_size),
                                 stage_layers=len(layers),
                                 token_layer_bytes=token_layer, model_dtype=dtype,
                                 state_rules=state_rules, kv_dtype=kv_dtype))
        stages.append(StageEstimate(
            stage=i, layers=len(layers), weights_bytes=rw.total,
            weights_by_component=dict(rw.by_component), activation_bytes=act,
            non_torch_bytes=non_torch + int(cal.non_torch_gib.per_weight * rw.total),
            cuda_graph_bytes=graphs, kv_cache_bytes=0,
            kv_cache_tokens=0, num_blocks=0, context_bytes=ctx,
            cuda_graph_estimate_bytes=estimate_cg))
    if spec.linear is not None and geos:
        g = geos[0]
        resolved["block_size"] = g.block_size  # raised so a page holds a recurrent state
        notes.append(
            f"hybrid model: {len(spec.linear.layers)} {spec.linear.kind} layers keep "
            f"{g.state_page_bytes / 2**20:.2f} MiB of state per sequence each on a GPU; vLLM "
            f"raises the attention block to {g.block_size} tokens so one page holds it, and a "
            f"sequence holds {g.state_blocks} state page(s) per group"
            + (" (prefix caching on: mamba_cache_mode align)" if state_rules.prefix_caching
               else ""))
    if padded_vocab(spec.vocab_size, tp) != spec.vocab_size:
        notes.append(f"vocabulary padded {spec.vocab_size} → "
                     f"{padded_vocab(spec.vocab_size, tp)} for the embedding and LM head")
    return Costs(gpu=gpu, dtype=dtype, kv_bytes=kv_bytes, max_model_len=max_model_len,
                 max_num_seqs=seqs, max_num_batched_tokens=tokens, gpu_memory_utilization=util,
                 requested_bytes=requested, stages=stages, geometries=geos, resolved=resolved)


def _run(spec: ModelSpec, gpus: list[GpuInfo], flags: EngineFlags, cal: EngineCalibration,
         est: Estimate) -> None:
    c = costs(spec, gpus, flags, cal, est.notes)
    est.gpu_name, est.total_bytes = c.gpu.name, c.gpu.total_bytes
    est.resolved = c.resolved
    requested, util, tokens, max_model_len = (c.requested_bytes, c.gpu_memory_utilization,
                                              c.max_num_batched_tokens, c.max_model_len)
    kv = [vllm_kv_cache_bytes(s, requested, flags.kv_cache_memory_bytes, cal)
          for s in c.stages]
    if flags.kv_cache_memory_bytes is not None:
        # vLLM skips its CUDA-graph estimate when the KV size is given.
        c = replace(c, stages=[replace(s, cuda_graph_estimate_bytes=0) for s in c.stages])
    elif cal.subtract_cuda_graph_estimate and not flags.enforce_eager and not cal.is_cpu:
        cg = c.stages[0].cuda_graph_estimate_bytes if c.stages else 0
        runner = c.resolved["model_runner"]
        est.notes.append(
            f"vLLM {cal.version} takes its CUDA-graph estimate ({cg / GiB:.2f} GiB, {runner} "
            "runner) out of the KV budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1)" if cg
            else f"vLLM {cal.version} runs this model on Model Runner {runner}, which does not "
                 "estimate CUDA-graph memory: none is taken out of the KV budget, the graphs "
                 "are captured on top of it")
    # vLLM gives every pipeline stage the smallest block count of all stages.
    blocks = min(kvm.num_blocks(g, max(0, k)) for g, k in zip(c.geometries, kv, strict=True))
    est.stages = [replace(s, kv_cache_bytes=k, num_blocks=blocks,
                          kv_cache_tokens=(blocks // g.num_groups) * g.block_size)
                  for s, k, g in zip(c.stages, kv, c.geometries, strict=True)]
    worst_i = min(range(len(est.stages)), key=lambda i: est.stages[i].kv_cache_bytes)
    worst, geo = est.stages[worst_i], c.geometries[worst_i]
    if flags.max_model_len == -1 and worst.kv_cache_bytes > 0:
        fit = max_fitting_len(geo, worst.kv_cache_bytes, tokens, max_model_len)
        if fit <= 0:
            raise Refusal("Cannot auto-fit max_model_len: not enough GPU memory available to "
                          "serve even a single token. Try increasing `gpu_memory_utilization`.")
        if fit < max_model_len:
            est.notes.append(f"Auto-fit max_model_len: reduced from {max_model_len} to {fit} "
                             "to fit in available GPU memory")
            max_model_len = fit
            est.resolved = {**est.resolved, "max_model_len": fit}
    if worst.kv_cache_bytes <= 0:
        raise Refusal(
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            f"when initializing the engine. (weights {worst.weights_bytes / GiB:.2f} GiB + "
            f"activation {worst.activation_bytes / GiB:.2f} GiB + non-torch "
            f"{worst.non_torch_bytes / GiB:.2f} GiB"
            + (f" + CUDA-graph estimate {worst.cuda_graph_estimate_bytes / GiB:.2f} GiB"
               if cal.subtract_cuda_graph_estimate and worst.cuda_graph_estimate_bytes else "")
            + f" exceed {requested / GiB:.2f} GiB = "
            f"{util} × {c.gpu.total_bytes / GiB:.2f} GiB)")
    needed = kvm.bytes_for_one_request(geo, max_model_len, tokens)
    if needed > worst.kv_cache_bytes:
        fit_len = max_fitting_len(geo, worst.kv_cache_bytes, tokens, max_model_len)
        raise Refusal(
            f"To serve at least one request with the models's max seq len ({max_model_len}), "
            f"({needed / GiB:.2f} GiB KV cache is needed, which is larger than the available KV "
            f"cache memory ({worst.kv_cache_bytes / GiB:.2f} GiB). Based on the available "
            f"memory, the estimated maximum model length is {fit_len}. Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
            "engine.")
    est.max_concurrency = blocks / kvm.blocks_per_request(geo, max_model_len, tokens)
    if cal.kv_tokens_log.tokens == "capacity":
        # "GPU KV cache size: N tokens" = int(concurrency × max_model_len) from 0.21 on.
        n = int(est.max_concurrency * max_model_len)
        est.stages = [replace(s, kv_cache_tokens=n) for s in est.stages]


def vllm_kv_cache_bytes(stage: StageEstimate, requested_bytes: int, explicit: int | None,
                        cal: EngineCalibration) -> int:
    """The KV cache vLLM sizes for one stage: `--kv-cache-memory-bytes` when given (vLLM then
    skips its own sizing), else its budget U·T less weights, activation peak and non-torch
    memory, and less the CUDA-graph estimate in versions that take it out."""
    if explicit is not None:
        return explicit
    spent = [stage.weights_bytes, stage.activation_bytes, stage.non_torch_bytes]
    if cal.subtract_cuda_graph_estimate:
        spent.append(stage.cuda_graph_estimate_bytes)
    return kv_budget(requested_bytes, spent)


def cuda_graph_estimate_bytes(spec: ModelSpec, cal: EngineCalibration, *, layers: int, tp: int,
                              act_bytes: int, sizes: list[int], max_num_seqs: int,
                              pool_bytes: int, v2: bool) -> int:
    """What vLLM's worker would get from `model_runner.profile_cudagraph_memory()`: the V1
    runner's extrapolation; 0 on the V2 runner before 0.29 (it does not estimate), the
    captured pool from 0.29 (it captures the piecewise graphs for real). Whether it is then
    taken out of KV is `cal.subtract_cuda_graph_estimate`."""
    if not sizes or cal.is_cpu:
        return 0
    if v2:
        return pool_bytes if cal.model_runner.v2_estimates_cuda_graphs else 0
    return v1_cuda_graph_estimate_bytes(spec, cal, layers=layers, tp=tp, act_bytes=act_bytes,
                                        sizes=sizes, max_num_seqs=max_num_seqs)


def kv_cache_dtype(spec: ModelSpec, cal: EngineCalibration, name: str | None) -> KvDtype:
    """The layout of `--kv-cache-dtype name` in this version; Refusal in vLLM's terms when the
    version has no such dtype or the model cannot use it."""
    key = name or "auto"
    kvd = cal.kv_cache_dtypes.get(key)
    if kvd is None:
        raise Refusal(f"kv_cache_dtype {key!r} is not among vLLM {cal.version}'s KV cache "
                      f"dtypes the launcher models ({', '.join(cal.kv_cache_dtypes)}).")
    if spec.mla is not None and not kvd.mla:
        raise Refusal(f"{key} KV cache is not supported with MLA (Multi-head Latent Attention) "
                      "backends. Please use a different --kv-cache-dtype (e.g., 'fp8' or "
                      "'auto') for MLA models such as DeepSeek.")
    if spec.mla is None and kvd.mla_only:
        raise Refusal(f"kv_cache_dtype {key} is only for MLA models (DeepSeek V3.2-style "
                      "sparse attention).")
    return kvd


def max_fitting_len(geo: kvm.KvGeometry, kv_cache: int, tokens: int, upper: int) -> int:
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if kvm.bytes_for_one_request(geo, mid, tokens) <= kv_cache:
            lo = mid
        else:
            hi = mid - 1
    return lo
