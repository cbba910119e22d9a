"""A sized candidate → the speed model's prediction for the workload (`launcher.speed`).

The memory model has already decided what the candidate holds (weights precision, KV bytes
per token, KV tokens per replica, batch limits); this module hands exactly those figures to
`launcher.speed.predict` and adds the two the objectives rank by: the time one request takes
(TTFT + the rest of its output at the ITL) and the GPU-hours a million output tokens cost on
the GPUs the candidate occupies. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from launcher.models.spec import ModelSpec
from launcher.planner.nodes import INTERNODE_BYTES_PER_S, INTERNODE_LATENCY_S, crossing_hops
from launcher.speed.calibration import SpeedCalibration
from launcher.speed.hardware import GpuSpeed
from launcher.speed.model import ModelCosts, SpeedPrediction, predict
from launcher.speed.shape import kv_read_bytes_per_token, state_read_bytes_per_sequence
from launcher.speed.workload import Workload

if TYPE_CHECKING:
    from launcher.planner.candidate import Candidate


@dataclass(frozen=True)
class SpeedInputs:
    """What predicting needs besides the candidate: the fitted factors and the GPU's speed."""

    cal: SpeedCalibration
    gpu: GpuSpeed


@dataclass(frozen=True)
class Prediction:
    """The speed model's figures for one candidate and workload, over all its replicas."""

    ttft_ms: float
    itl_ms: float
    output_tokens_per_s: float  # all replicas together
    output_tokens_per_s_per_user: float
    requests_per_s: float
    bound: str  # what limits it (the speed model's word)
    request_latency_ms: float  # TTFT + (output_len − 1) × ITL, on `latency_basis`
    gpus: int  # GPUs the candidate occupies (TP × PP × DP)
    latency_basis: str = "the workload"  # or LATENCY_ALONE (see `latency_workload`)
    # TTFT and ITL on `latency_basis`: what the latency objective and the service levels
    # (--max-ttft-ms, --max-itl-ms) are judged by
    basis_ttft_ms: float = 0.0
    basis_itl_ms: float = 0.0

    @property
    def gpu_hours_per_million_tokens(self) -> float:
        if self.output_tokens_per_s <= 0:
            return float("inf")
        return self.gpus / (self.output_tokens_per_s * 3600) * 1e6

    def usd_per_million_tokens(self, usd_per_gpu_hour: float) -> float:
        return self.gpu_hours_per_million_tokens * usd_per_gpu_hour

    def to_json(self) -> dict[str, object]:
        return {"ttft_ms": round(self.ttft_ms, 2), "itl_ms": round(self.itl_ms, 3),
                "output_tokens_per_s": round(self.output_tokens_per_s, 1),
                "output_tokens_per_s_per_user": round(self.output_tokens_per_s_per_user, 2),
                "requests_per_s": round(self.requests_per_s, 3),
                "request_latency_ms": round(self.request_latency_ms, 1),
                "gpu_hours_per_million_tokens": round(self.gpu_hours_per_million_tokens, 4),
                "latency_basis": self.latency_basis,
                "basis_ttft_ms": round(self.basis_ttft_ms, 2),
                "basis_itl_ms": round(self.basis_itl_ms, 3),
                "gpus": self.gpus, "bound": self.bound}


def weight_bits(c: Candidate) -> float:
    """Bits per weight the GPU reads while decoding, from the candidate's precision."""
    opt = c.option
    if opt.key == "fp8":
        return 8.0
    if opt.key == "bitsandbytes":
        return 4.0
    q = opt.spec.quantization
    if q is not None:
        return float(q.weight_bits)
    return {"float32": 32.0}.get(c.serve_dtype or opt.spec.dtype, 16.0)


def kv_bytes_per_token(c: Candidate) -> int:
    """KV bytes one token of context costs a decode step on one GPU: the attention layers that
    GPU's stage holds, at the memory model's bytes per layer (linear-attention and MLP-only
    layers of hybrids hold no KV)."""
    geo = c.geometry
    if geo is None:
        return 0
    return kv_read_bytes_per_token(c.option.spec, c.pp, geo.bytes_per_token_layer)


def state_bytes_per_sequence(c: Candidate) -> int:
    """Recurrent state (Gated DeltaNet / Mamba) one running sequence holds on one GPU."""
    geo = c.geometry
    if geo is None:
        return 0
    return state_read_bytes_per_sequence(c.option.spec, c.pp, geo.state_page_bytes)


def model_costs(spec: ModelSpec) -> ModelCosts:
    """The speed model's per-model figures (computed once per weight option, then reused)."""
    return ModelCosts.of(spec)


LATENCY_ALONE = "one request at a time"
PP_TENSORS = 2  # a stage hands on hidden_states and residual (vLLM IntermediateTensors)


def hop_seconds(c: Candidate, tokens: float) -> float:
    """One pipeline hand-off of `tokens` tokens over the link between nodes."""
    spec = c.option.spec
    return tokens * spec.hidden_size * PP_TENSORS * 2 / INTERNODE_BYTES_PER_S \
        + INTERNODE_LATENCY_S


def internode_step_ms(c: Candidate, batch: float) -> float:
    """What the stage boundaries that cross nodes add to one decode step of `batch`
    sequences (0 when the replica sits on one node)."""
    hops = crossing_hops(c.gpus, c.tp, c.pp)
    return 1e3 * hops * hop_seconds(c, max(1.0, batch)) if hops else 0.0


def _over_nodes(c: Candidate, p: SpeedPrediction, w: Workload) -> SpeedPrediction:
    """Charge the pipeline hops that cross nodes: the speed model prices every hand-off at
    the node's own link, but between nodes it runs over the (assumed) fabric. Each decode step
    waits for one hand-off of the running batch per crossing, each prefill for the prompt's."""
    hops = crossing_hops(c.gpus, c.tp, c.pp)
    if not hops:
        return p
    step = internode_step_ms(c, p.running_batch)
    itl = p.itl_ms + step
    scale = p.itl_ms / itl if itl > 0 else 1.0
    ttft = p.ttft_ms + 1e3 * hops * hop_seconds(c, w.input_len)
    return replace(p, itl_ms=itl, ttft_ms=ttft,
                   output_tokens_per_s=p.output_tokens_per_s * scale,
                   output_tokens_per_s_per_user=1e3 / itl,
                   requests_per_s=p.requests_per_s * scale)


def latency_workload(workload: Workload) -> Workload | None:
    """The load request latency is judged at. All prompts at once is a queue whose wait
    measures throughput, not latency (every shape's latency is then its throughput in
    disguise), so latency is then predicted for one request at a time, as `vllm bench
    latency` measures it; a closed loop or a finite rate is judged as given (None)."""
    if workload.concurrency is not None or workload.open_loop:
        return None
    return Workload(input_len=workload.input_len, output_len=workload.output_len,
                    concurrency=1, num_prompts=workload.num_prompts)


def predict_candidate(c: Candidate, speed: SpeedInputs, workload: Workload,
                      costs: ModelCosts | None = None) -> Prediction:
    def run(w: Workload) -> SpeedPrediction:
        return predict(c.option.spec, speed.gpu, tp=c.tp, pp=c.pp, dp=c.dp,
                       weight_bits=weight_bits(c), kv_bytes_per_token=kv_bytes_per_token(c),
                       state_bytes_per_sequence=state_bytes_per_sequence(c),
                       max_num_seqs=c.max_num_seqs,
                       max_num_batched_tokens=c.max_num_batched_tokens,
                       kv_capacity_tokens=max(1, c.kv_tokens), workload=w, cal=speed.cal,
                       costs=costs)

    p = _over_nodes(c, run(workload), workload)
    alone = latency_workload(workload)
    lat = p if alone is None else _over_nodes(c, run(alone), alone)
    return Prediction(
        ttft_ms=p.ttft_ms, itl_ms=p.itl_ms, output_tokens_per_s=p.output_tokens_per_s,
        output_tokens_per_s_per_user=p.output_tokens_per_s_per_user,
        requests_per_s=p.requests_per_s, bound=str(p.bound),
        request_latency_ms=lat.ttft_ms + max(0, workload.output_len - 1) * lat.itl_ms,
        gpus=c.tp * c.pp * c.dp,
        latency_basis="the workload" if alone is None else LATENCY_ALONE,
        basis_ttft_ms=lat.ttft_ms, basis_itl_ms=lat.itl_ms)
