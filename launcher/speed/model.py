"""Serving speed from the hardware's physics: time per engine step, batch, queue.

One decode step of a tensor-parallel replica reads every active weight and the KV cache of
every running sequence once, and multiplies each token by every active weight twice (FLOPs).
Its time on one GPU is

    max(bytes / (bandwidth · e_bw), FLOPs / (tensor peak · e_c)) + all-reduces + host time

with `e_bw`, `e_c` and the host time fitted per engine (`SpeedCalibration`), plus a fixed
time per MoE layer (`moe_layer_overhead_us`). The terms:

* bytes: dense weights at `weight_bits`, routed experts only as far as the step's tokens
  touch them (E·(1 − (1 − k/E)^tokens) distinct experts of E, k per token; shared experts are
  dense), the LM head at 16 bits, all split over TP × PP; plus each running sequence's KV over
  the attention layers only (sliding-window layers read at most their window), and, for
  hybrids, its recurrent state (Gated DeltaNet / Mamba layers: read and written back once per
  step, whatever the context).
* FLOPs: 2 × active parameters per token (k of E experts) + attention's 2·heads·(d_qk+d_v)
  per attention layer, token and context token (the quadratic part of a prefill: half the prompt on average).
* MoE layers: routing, top-k, token permutation and the grouped-GEMM launches cost a fixed
  time per layer and step whatever the batch (fitted: it is what a low-concurrency step of a
  MoE model takes beyond reading its weights).
* all-reduces: 2 per layer. Over NVLink / NVSwitch (and a 2-card NVLink bridge) the engine's
  custom kernel: one-shot (a fixed latency α, then each GPU reads the tp − 1 others' partial
  sums: (tp − 1) × msg / link) or, for large messages, two-shot (2α + a ring's
  2(tp − 1)/tp × msg / link), whichever is faster; msg = tokens × hidden × 2 bytes. Over PCIe
  NCCL's ring with its own (larger) latency. α grows by ALLREDUCE_GROWTH per doubling of tp.
  The latencies are set from microbenchmarks (profiles/engines/speed.yaml cites them), not
  fitted: a fitted latency absorbed what MoE layers and small kernels cost.
* pipeline: a sequence passes the stages in turn, so a step takes pp stage-steps; up to pp
  micro-batches keep the stages busy (vLLM's virtual engines), a single sequence leaves
  bubbles.
* continuous batching: the running batch is min(concurrency, max_num_seqs, KV capacity /
  tokens a sequence holds on average (prompt + half the answer), what chunked prefill can feed:
  steps of max_num_batched_tokens carry every decode plus prompt chunks); the rest queue.
  Over one answer's lifetime (output_len steps) each running sequence is replaced once, so
  a prompt's prefill lands in some step and costs what it adds to that step.
* load: a closed loop (concurrency) queues what does not run (Little's law); all prompts at
  once (rate inf) runs one wave when they all fit, else the steady state plus their wait; a
  finite rate settles where the batch that rate implies serves it (fixed point), or saturates.
  DP replicas split the load evenly.

Pure: data in, data out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from launcher.errors import InputError
from launcher.memory.tensors import synthesize
from launcher.models.spec import ModelSpec
from launcher.speed.calibration import EngineSpeed, SpeedCalibration
from launcher.speed.hardware import GpuSpeed
from launcher.speed.workload import Workload

# Growth of an all-reduce's fixed latency per doubling of tp beyond 2. Measured on H100: SGLang's
# one-shot kernel 3.7 / 4.8 / 5.9 us and vLLM's (eager, with a copy) 9.5 / 9.1 / 10.1 us at
# tp 2 / 4 / 8 for small messages (github.com/sgl-project/sglang/pull/2904); vLLM's one-shot
# under CUDA graphs 7 / 10 / 13 us at tp 2 / 4 / 6 for a 0.5 MB message, about 5 us of it fixed
# (github.com/vllm-project/vllm/pull/24111). 25 % per doubling: 5 -> 6.25 -> 7.5 us.
ALLREDUCE_GROWTH = 0.25
# Times a decode step moves a sequence's recurrent state: read once, written back once.
STATE_TRAFFIC = 2


class Bound(StrEnum):
    """What limits the speed at the predicted operating point."""

    MEMORY_BANDWIDTH = "memory_bandwidth"
    COMPUTE = "compute"
    INTERCONNECT = "interconnect"
    KV_CAPACITY = "kv_capacity"
    SCHEDULER = "scheduler"


@dataclass(frozen=True)
class ModelCosts:
    """Parameter counts by how a decode step uses them (from the architecture)."""

    layers: int
    hidden: int
    attention_layers: int  # layers that attend over the context (not "linear" / "none")
    attn_flops_per_pair: int  # FLOPs per layer per (query token, context token)
    dense_params: int  # attention, dense MLPs, shared experts, routers, norms
    expert_params: int  # all routed experts of all layers
    lm_head_params: int
    num_experts: int
    experts_per_token: int
    experts_only_quantized: bool  # MXFP4 checkpoints: dense layers stay 16-bit
    sliding_fraction: float
    sliding_window: int | None
    moe_layers: int = 0  # layers with routed experts

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelCosts:
        dense = experts = head = 0
        moe_layers: set[str] = set()
        for t in synthesize(spec):
            n = math.prod(t.shape)
            if "embed_tokens" in t.name or "vision_tower" in t.name:
                continue
            if t.name.startswith("lm_head"):
                head += n
            elif ".mlp.experts." in t.name:
                experts += n
                moe_layers.add(t.name.split(".mlp.experts.")[0])
            else:
                dense += n
        if spec.tie_word_embeddings:
            head = spec.vocab_size * spec.hidden_size
        if spec.mla is not None:
            m = spec.mla
            pair = 2 * spec.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim
                                                   + m.v_head_dim)
        else:
            pair = 4 * spec.num_attention_heads * spec.head_dim
        kinds = spec.layer_kinds()
        attending = [k for k in kinds if k not in ("linear", "none")]
        sliding = sum(k in ("sliding", "chunked") for k in attending) / max(1, len(attending))
        window = spec.sliding_window or spec.attention_chunk_size
        moe = spec.moe
        q = spec.quantization
        return cls(layers=spec.num_layers, hidden=spec.hidden_size,
                   attention_layers=len(attending), attn_flops_per_pair=pair,
                   dense_params=dense, expert_params=experts, lm_head_params=head,
                   num_experts=moe.num_experts if moe else 0,
                   experts_per_token=moe.experts_per_token if moe else 0,
                   experts_only_quantized=q is not None and q.method == "mxfp4",
                   sliding_fraction=sliding if window else 0.0, sliding_window=window,
                   moe_layers=len(moe_layers))

    @property
    def active_params(self) -> float:
        """Parameters one token multiplies (k of E experts)."""
        share = self.experts_per_token / self.num_experts if self.num_experts else 0.0
        return self.dense_params + self.expert_params * share + self.lm_head_params

    def touched_experts(self, tokens: float) -> float:
        """Expected share of the routed experts a step of `tokens` tokens reads."""
        if not self.num_experts or tokens <= 0:
            return 0.0
        return float(1.0 - (1.0 - self.experts_per_token / self.num_experts) ** tokens)


@dataclass(frozen=True)
class SpeedTerm:
    name: str
    value: float
    unit: str
    note: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "value": round(self.value, 4), "unit": self.unit,
                "note": self.note}


@dataclass(frozen=True)
class SpeedPrediction:
    ttft_ms: float  # mean time to first token, queueing included
    itl_ms: float  # mean time between tokens of one answer
    output_tokens_per_s: float  # all replicas together
    output_tokens_per_s_per_user: float  # 1000 / itl_ms: the decode speed one client sees
    requests_per_s: float
    bound: Bound
    running_batch: float  # sequences decoding at once, per replica
    queued: float  # requests waiting for a slot, per replica (0: none)
    breakdown: tuple[SpeedTerm, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"ttft_ms": round(self.ttft_ms, 2), "itl_ms": round(self.itl_ms, 3),
                "output_tokens_per_s": round(self.output_tokens_per_s, 1),
                "output_tokens_per_s_per_user": round(self.output_tokens_per_s_per_user, 2),
                "requests_per_s": round(self.requests_per_s, 4), "bound": str(self.bound),
                "running_batch": round(self.running_batch, 2), "queued": round(self.queued, 2),
                "breakdown": [t.to_json() for t in self.breakdown], "notes": list(self.notes)}


@dataclass(frozen=True)
class _Step:
    """One stage-step on one GPU, in seconds, by term."""

    weights: float
    kv: float
    compute: float
    comm: float
    fixed: float = 0.0  # MoE layers' fixed kernel cost

    @property
    def time(self) -> float:
        return max(self.weights + self.kv, self.compute) + self.comm + self.fixed


@dataclass(frozen=True)
class _Shape:
    costs: ModelCosts
    gpu: GpuSpeed
    f: EngineSpeed
    tp: int
    pp: int
    weight_bits: float
    kv_bytes_per_token: int
    peak_tflops: float
    max_num_batched_tokens: int
    state_bytes_per_sequence: int = 0

    def step(self, dec: float, pre: float, ctx: float, prompt: float) -> _Step:
        """A stage-step with `dec` decoding sequences at mean context `ctx` and `pre` prompt
        tokens (of prompts of `prompt` tokens)."""
        c, shards = self.costs, self.tp * self.pp
        tokens = dec + pre
        dense_bits = 16.0 if c.experts_only_quantized else self.weight_bits
        weight_bytes = (c.dense_params * dense_bits / 8
                        + c.expert_params * c.touched_experts(tokens) * self.weight_bits / 8
                        + c.lm_head_params * 2) / shards
        read = ctx if c.sliding_window is None else \
            ctx * (1 - c.sliding_fraction) + min(ctx, c.sliding_window) * c.sliding_fraction
        # A recurrent layer's decode kernel loads each sequence's state and stores it back
        # updated (vLLM's fused_recurrent_gated_delta_rule / selective_state_update).
        kv_bytes = dec * (read * self.kv_bytes_per_token
                          + STATE_TRAFFIC * self.state_bytes_per_sequence)
        share = c.experts_per_token / c.num_experts if c.num_experts else 0.0
        matmul = c.dense_params + c.expert_params * share
        flops = (2 * matmul * tokens + 2 * c.lm_head_params * dec
                 + c.attn_flops_per_pair * c.attention_layers
                 * (dec * read + pre * prompt / 2)) / shards
        bw = self.gpu.memory_bandwidth_gbps * 1e9 * self.f.bandwidth_efficiency
        comm = 0.0
        if self.tp > 1 or self.pp > 1:
            msg = tokens * c.hidden * 2
            if self.tp > 1:
                comm += 2 * c.layers / self.pp * self.allreduce(msg)
            if self.pp > 1:
                link, lat, _ = self._link(2)
                comm += msg / link + lat
        fixed = c.moe_layers / self.pp * self.f.moe_layer_overhead_us * 1e-6
        return _Step(weights=weight_bytes / bw, kv=kv_bytes / bw,
                     compute=flops / (self.peak_tflops * 1e12 * self.f.compute_efficiency),
                     comm=comm, fixed=fixed)

    def _link(self, gpus: int) -> tuple[float, float, bool]:
        """(achieved bytes/s one way, fixed latency in s, over NVLink) of a collective over
        `gpus` GPUs. NVLink bridges join pairs only: more cards talk over PCIe."""
        g = self.gpu
        nvlink = bool(g.nvlink_gbps) and (g.interconnect == "nvlink"
                                          or (g.interconnect == "nvlink-bridge" and gpus == 2))
        base = self.f.allreduce_latency_us if nvlink else self.f.pcie_allreduce_latency_us
        grow = 1 + ALLREDUCE_GROWTH * math.log2(max(2, gpus) / 2)
        return g.link_gbps_for(gpus) * 1e9 * self.f.link_efficiency, base * grow * 1e-6, nvlink

    def allreduce(self, msg: float) -> float:
        """Seconds one all-reduce of `msg` bytes takes over the tp GPUs."""
        tp = self.tp
        link, lat, nvlink = self._link(tp)
        ring = 2 * (tp - 1) / tp * msg / link
        if nvlink:
            return min(lat + (tp - 1) * msg / link, 2 * lat + ring)  # one-shot, two-shot
        return lat + ring  # NCCL ring over PCIe

    def host(self, running: float, steps: float = 1.0) -> float:
        return steps * self.f.step_overhead_ms * 1e-3 + \
            running * self.f.per_sequence_overhead_us * 1e-6


@dataclass(frozen=True)
class _Point:
    """The steady state with `batch` sequences running on one replica."""

    batch: float
    itl: float  # s
    throughput: float  # output tokens/s
    prefill: float  # s, one prompt's own prefill steps
    step: _Step  # the stage-step of the decode micro-batch
    host: float


def _steady(sh: _Shape, batch: float, inp: int, out: int) -> _Point:
    """Over one answer's lifetime (`out` steps) each of the `batch` running sequences is
    replaced once. Fewer new prompts than steps: each prompt's prefill lands in a step of its
    own and costs what it adds to that step. More: every step carries batch/out prompts."""
    m = max(1.0, min(float(sh.pp), batch))
    b = batch / m
    ctx = inp + out / 2
    dec = sh.step(b, 0.0, ctx, inp)
    room = max(1.0, sh.max_num_batched_tokens - b)
    chunks = math.ceil(inp / room)
    with_prompt = sh.step(b, inp / chunks, ctx, inp)
    host = sh.host(batch, m)
    per_step = batch / out  # prompts that start per step
    if per_step >= 1:
        mixed = sh.step(b, per_step * inp / m, ctx, inp)
        window = out * (sh.pp * mixed.time + host)
    else:
        extra = chunks * max(0.0, with_prompt.time - dec.time)  # per prompt, per stage
        window = out * (sh.pp * dec.time + host) + batch * extra * (sh.pp if m < sh.pp else 1)
    itl = window / out
    prefill = chunks * (sh.pp * with_prompt.time + host)
    return _Point(batch=batch, itl=itl, throughput=batch / itl, prefill=prefill, step=dec,
                  host=host)


def _wave(sh: _Shape, n: int, inp: int, out: int) -> tuple[float, float, float, _Point]:
    """All `n` prompts start together and all fit: prefill them, then decode in lock-step.
    Returns (duration, mean TTFT, mean ITL, the decode point)."""
    total = n * inp
    steps = math.ceil(total / sh.max_num_batched_tokens)
    pre = sh.step(0.0, total / steps, 0.0, inp)
    prefill = steps * (sh.pp * pre.time + sh.host(0.0))
    m = max(1.0, min(float(sh.pp), n))
    dec = sh.step(n / m, 0.0, inp + out / 2, inp)
    host = sh.host(n, m)
    cycle = sh.pp * dec.time + host
    duration = prefill + (out - 1) * cycle
    ttft = prefill * (steps + 1) / (2 * steps)
    itl = (duration - ttft) / (out - 1) if out > 1 else cycle
    point = _Point(batch=float(n), itl=itl, throughput=n * out / duration, prefill=prefill,
                   step=dec, host=host)
    return duration, ttft, itl, point


def _compute_dtype(weight_bits: float, gpu: GpuSpeed, spec: ModelSpec) -> tuple[str, float]:
    """The tensor path a step's matmuls run on: 8-bit weights on FP8 tensor cores where the GPU
    has them (W8A8), anything else in 16 bits (weight-only kernels dequantize)."""
    if 6 < weight_bits <= 8 and gpu.tflops("fp8"):
        return "fp8", float(gpu.tflops("fp8") or 0)
    order = ("fp16", "bf16") if spec.dtype == "float16" else ("bf16", "fp16")
    for d in order:
        peak = gpu.tflops(d)
        if peak:
            return d, peak
    raise InputError(f"GPU {gpu.name} has no 16-bit tensor peak in the catalog",
                     fix="Add tensor_tflops.bf16 or fp16 for it to profiles/gpus.yaml.")


def _check(**values: float) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise InputError(f"speed model: {name} {v!r} is not above 0",
                             fix=f"Give a positive {name}.")


def predict(spec: ModelSpec, gpu: GpuSpeed, *, tp: int, pp: int, dp: int, weight_bits: float,
            kv_bytes_per_token: int, max_num_seqs: int, max_num_batched_tokens: int,
            kv_capacity_tokens: int, workload: Workload, cal: SpeedCalibration,
            engine: str = "vllm", costs: ModelCosts | None = None,
            state_bytes_per_sequence: int = 0) -> SpeedPrediction:
    """Speed of `dp` replicas of `tp` × `pp` GPUs serving `workload`.

    `kv_bytes_per_token`: the KV cache one token takes on one GPU, over that GPU's layers
    (KvGeometry.bytes_per_token_layer × the stage's attention layers:
    `shape.kv_read_bytes_per_token`; 0 for a model without attention). `kv_capacity_tokens`:
    tokens the KV cache of one replica holds. `costs`: `ModelCosts.of(spec)`, when the caller
    has it. `state_bytes_per_sequence`: a hybrid's recurrent state of one sequence on one GPU
    (`shape.state_read_bytes_per_sequence`).
    """
    _check(tp=tp, pp=pp, dp=dp, weight_bits=weight_bits, max_num_seqs=max_num_seqs,
           max_num_batched_tokens=max_num_batched_tokens, kv_capacity_tokens=kv_capacity_tokens)
    for name, b in (("kv_bytes_per_token", kv_bytes_per_token),
                    ("state_bytes_per_sequence", state_bytes_per_sequence)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise InputError(f"speed model: {name} {b!r} is not a whole number ≥ 0",
                             fix=f"Give {name} in bytes.")
    costs = costs or ModelCosts.of(spec)
    f = cal.factors(engine, gpu.gpu_class)
    dtype, peak = _compute_dtype(weight_bits, gpu, spec)
    sh = _Shape(costs, gpu, f, tp, pp, weight_bits, kv_bytes_per_token, peak,
                max_num_batched_tokens, state_bytes_per_sequence)
    inp, out, w = workload.input_len, workload.output_len, workload
    notes = [f"matmuls on {dtype} tensor cores ({peak:g} TFLOP/s dense); "
             f"{engine} factors for {gpu.gpu_class} GPUs"]

    # What may run at once on one replica, and what stops more.
    kv_seqs = kv_capacity_tokens / (inp + out / 2)
    feed = max_num_batched_tokens * max(1.0, min(float(pp), max_num_seqs)) / (1 + inp / out)
    limits = {Bound.KV_CAPACITY: kv_seqs, Bound.SCHEDULER: min(float(max_num_seqs), feed)}
    cap = max(1e-9, min(limits.values()))
    cap_bound = min(limits, key=lambda k: limits[k])
    if kv_capacity_tokens < inp + out:
        notes.append(f"one request ({inp + out} tokens) does not fit the KV cache "
                     f"({kv_capacity_tokens} tokens): vLLM would preempt it over and over")

    n = math.ceil(w.prompts / dp)
    conc = None if w.concurrency is None else w.concurrency / dp
    queued = 0.0
    if w.open_loop:
        rate = float(w.request_rate or 0) / dp
        sat = _steady(sh, cap, inp, out)
        x_max = sat.throughput / out
        if conc is not None and conc < cap:
            sat = _steady(sh, conc, inp, out)
            x_max = sat.throughput / out
        if rate >= x_max:
            point, x = sat, x_max
            wait = max(0.0, n * (1 / x_max - 1 / rate) / 2)
            queued = wait * x_max
            ttft = wait + point.prefill
            notes.append(f"{rate * dp:g} req/s is above what the replicas serve "
                         f"({x_max * dp:.3g} req/s): the queue grows for the whole run")
        else:
            batch = min(cap, max(rate * out * 1e-3, 1e-6))
            for _ in range(60):
                p = _steady(sh, batch, inp, out)
                nxt = min(cap if conc is None else min(cap, conc),
                          rate * (p.prefill + out * p.itl))
                if abs(nxt - batch) < 1e-6 * max(1.0, batch):
                    break
                batch = 0.5 * batch + 0.5 * nxt
            point, x = _steady(sh, batch, inp, out), rate
            rho = rate / x_max
            ttft = point.prefill * (1 + rho / (2 * (1 - rho)))
        itl, thr = point.itl, x * out
    else:
        c = float(n) if conc is None else min(conc, float(n))
        if c <= cap and (conc is None or conc >= n):
            _, ttft, itl, point = _wave(sh, n, inp, out)
            thr, x = point.throughput, point.throughput / out
        else:
            batch = min(c, cap)
            point = _steady(sh, batch, inp, out)
            itl, thr = point.itl, point.throughput
            x = thr / out
            queued = c - batch
            if conc is not None:  # closed loop: Little's law on the waiting line
                ttft = queued / x + point.prefill
            else:  # all at once, more than fit: the rest start as slots free
                ttft = (n - batch) ** 2 / (2 * n * x) + point.prefill
    step = point.step
    terms = {Bound.MEMORY_BANDWIDTH: pp * (step.weights + step.kv),
             Bound.COMPUTE: pp * step.compute, Bound.INTERCONNECT: pp * step.comm,
             Bound.SCHEDULER: point.host}
    bound = cap_bound if queued > 0.5 and point.batch >= cap * 0.999 else \
        max(terms, key=lambda k: terms[k])
    breakdown = (
        SpeedTerm("weights_read_ms", 1e3 * pp * step.weights, "ms/step",
                  "active weights one GPU reads per decode step"),
        SpeedTerm("kv_read_ms", 1e3 * pp * step.kv, "ms/step",
                  "KV cache (and recurrent state) of the running sequences read per "
                  "decode step"),
        SpeedTerm("compute_ms", 1e3 * pp * step.compute, "ms/step",
                  f"decode matmuls and attention at {f.compute_efficiency:.0%} of peak"),
        SpeedTerm("interconnect_ms", 1e3 * pp * step.comm, "ms/step",
                  f"tensor-parallel all-reduces over {gpu.interconnect}" if tp > 1
                  else "none (tp 1)" if pp == 1 else "pipeline hand-offs"),
        SpeedTerm("moe_kernels_ms", 1e3 * pp * step.fixed, "ms/step",
                  "fixed cost of the MoE layers' routing and expert launches per step"),
        SpeedTerm("host_ms", 1e3 * point.host, "ms/step", "engine scheduling per step"),
        SpeedTerm("prefill_ms", 1e3 * point.prefill, "ms",
                  "one prompt's prefill steps, without waiting"),
        SpeedTerm("running_batch", point.batch, "sequences", "decoding at once per replica"),
        SpeedTerm("batch_limit", cap, "sequences",
                  f"most that can run per replica ({cap_bound}: KV holds {kv_seqs:.0f}, "
                  f"max_num_seqs {max_num_seqs}, chunked prefill feeds {feed:.0f})"),
        SpeedTerm("queued", queued, "requests", "waiting for a slot per replica"),
    )
    return SpeedPrediction(ttft_ms=1e3 * ttft, itl_ms=1e3 * itl,
                           output_tokens_per_s=thr * dp,
                           output_tokens_per_s_per_user=1.0 / itl,
                           requests_per_s=x * dp, bound=bound, running_batch=point.batch,
                           queued=queued, breakdown=breakdown, notes=tuple(notes))


def roofline(spec: ModelSpec, gpu: GpuSpeed, *, tp: int, pp: int, dp: int, weight_bits: float,
             kv_bytes_per_token: int, max_num_seqs: int, workload: Workload,
             costs: ModelCosts | None = None) -> tuple[float, float]:
    """The plain bandwidth roofline, as a baseline: (output tok/s, ITL ms) when every decode
    step reads the active weights and the batch's KV at the datasheet bandwidth, nothing else.
    The batch is the concurrency (or all prompts) capped by max_num_seqs."""
    costs = costs or ModelCosts.of(spec)
    n = workload.concurrency or workload.prompts
    batch = min(n / dp, max_num_seqs)
    tokens = batch
    dense_bits = 16.0 if costs.experts_only_quantized else weight_bits
    weights = (costs.dense_params * dense_bits / 8 + costs.lm_head_params * 2
               + costs.expert_params * costs.touched_experts(tokens) * weight_bits / 8) / (tp * pp)
    kv = batch * (workload.input_len + workload.output_len / 2) * kv_bytes_per_token
    itl = pp * (weights + kv) / (gpu.memory_bandwidth_gbps * 1e9)
    return dp * batch / itl, 1e3 * itl
