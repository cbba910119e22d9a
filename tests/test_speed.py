"""The speed model (launcher/speed): physics properties, the workload and calibration parsers,
and the `launcher speed` contract. Figures compared are the model's own at two settings
(a property that must hold), never a hard-coded prediction."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from conftest import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.cli import main
from launcher.errors import InputError
from launcher.hardware.catalog import lookup_gpu
from launcher.models.resolve import resolve_model
from launcher.speed import Bound, GpuSpeed, ModelCosts, SpeedCalibration, Workload, gpu_speed, predict
from launcher.speed.calibration import calibration_from_dict
from launcher.speed.model import ALLREDUCE_GROWTH
from launcher.speed.workload import parse_rate, workload_from
from launcher.speed_io import load_speed_calibration, speed_calibration_path

CAL = load_speed_calibration()
LLAMA8 = resolve_model("llama-3.1-8b")
LLAMA70 = resolve_model("llama-3.1-70b")
MOE = resolve_model("qwen3-30b-a3b")
H100 = gpu_speed(lookup_gpu("H100-80GB"), CAL)
L40S = gpu_speed(lookup_gpu("L40S"), CAL)
# One token's KV on one GPU, all layers: 2 (K, V) × kv heads × head dim × 2 bytes × layers.
KV8 = 2 * 8 * 128 * 2 * 32
KV70_TP = {tp: 2 * (8 // tp) * 128 * 2 * 80 for tp in (1, 2, 4, 8)}


def run(spec=LLAMA8, gpu: GpuSpeed = H100, *, tp: int = 1, pp: int = 1, dp: int = 1,
        weight_bits: float = 16, kv: int = KV8, seqs: int = 256, tokens: int = 8192,
        capacity: int = 400_000, w: Workload | None = None, cal: SpeedCalibration = CAL):
    return predict(spec, gpu, tp=tp, pp=pp, dp=dp, weight_bits=weight_bits,
                   kv_bytes_per_token=kv, max_num_seqs=seqs, max_num_batched_tokens=tokens,
                   kv_capacity_tokens=capacity, workload=w or Workload(1000, 200, 1), cal=cal)


# ---- physics ---------------------------------------------------------------------------------

def test_more_bandwidth_decodes_faster() -> None:
    slow = run(w=Workload(1000, 200, 1))
    fast = run(gpu=replace(H100, memory_bandwidth_gbps=2 * H100.memory_bandwidth_gbps),
               w=Workload(1000, 200, 1))
    assert fast.itl_ms < slow.itl_ms * 0.8
    assert fast.output_tokens_per_s > slow.output_tokens_per_s * 1.2
    assert slow.bound == Bound.MEMORY_BANDWIDTH


def test_single_stream_decode_reads_the_weights_at_about_bandwidth() -> None:
    """One sequence: ITL ≈ 15 GB of bf16 weights read (8.03 B parameters less the 0.53 B of
    the embedding, which a decode step only indexes) / bandwidth, plus the fitted host time."""
    p = run(w=Workload(100, 100, 1))
    weights = next(t for t in p.breakdown if t.name == "weights_read_ms").value
    ideal = (8.03e9 - 0.525e9) * 2 / 3.35e12 * 1e3
    assert ideal * 0.99 <= weights <= ideal / 0.5
    assert p.itl_ms >= weights


def test_fp8_weights_read_half_the_bytes() -> None:
    bf16 = run(w=Workload(200, 200, 1))
    fp8 = run(weight_bits=8, w=Workload(200, 200, 1))
    term = {p: {t.name: t.value for t in p.breakdown} for p in (bf16, fp8)}
    assert term[fp8]["weights_read_ms"] == pytest.approx(term[bf16]["weights_read_ms"] / 2,
                                                         rel=0.1)


def test_moe_reads_and_multiplies_only_the_routed_experts() -> None:
    c = ModelCosts.of(MOE)
    total = c.dense_params + c.expert_params + c.lm_head_params
    assert 2.5e9 < c.active_params < 4.5e9 < 25e9 < total  # "30B-A3B"
    assert c.touched_experts(1) == pytest.approx(c.experts_per_token / c.num_experts)
    assert c.touched_experts(4096) > 0.99
    dense = ModelCosts.of(LLAMA8)
    assert dense.touched_experts(64) == 0 and dense.expert_params == 0
    kv = 2 * 4 * 128 * 2 * 48
    one = {t.name: t.value for t in run(MOE, kv=kv, w=Workload(200, 200, 1)).breakdown}
    many = {t.name: t.value for t in run(MOE, kv=kv, w=Workload(200, 200, 64)).breakdown}
    assert many["weights_read_ms"] > 3 * one["weights_read_ms"]  # more experts touched
    flat = {t.name: t.value for t in run(w=Workload(200, 200, 64)).breakdown}
    base = {t.name: t.value for t in run(w=Workload(200, 200, 1)).breakdown}
    assert flat["weights_read_ms"] == pytest.approx(base["weights_read_ms"])


def test_tensor_parallel_all_reduce_term() -> None:
    one = {t.name: t.value for t in run(LLAMA70, tp=1, kv=KV70_TP[1], weight_bits=8,
                                        w=Workload(500, 100, 32)).breakdown}
    assert one["interconnect_ms"] == 0
    nv = {t.name: t.value for t in run(LLAMA70, tp=4, kv=KV70_TP[4],
                                       w=Workload(500, 100, 32)).breakdown}
    pcie = {t.name: t.value for t in run(LLAMA70, L40S, tp=4, kv=KV70_TP[4],
                                         w=Workload(500, 100, 32)).breakdown}
    assert 0 < nv["interconnect_ms"] < pcie["interconnect_ms"]
    big = {t.name: t.value for t in run(LLAMA70, tp=4, kv=KV70_TP[4],
                                        w=Workload(500, 100, 256)).breakdown}
    assert big["interconnect_ms"] > nv["interconnect_ms"]  # message grows with the batch
    fast = replace(CAL, engines={**CAL.engines, "vllm": replace(CAL.engines["vllm"],
                                                                allreduce_latency_us=0)})
    cheap = {t.name: t.value for t in run(LLAMA70, tp=4, kv=KV70_TP[4], cal=fast,
                                          w=Workload(500, 100, 32)).breakdown}
    assert cheap["interconnect_ms"] < nv["interconnect_ms"]


def test_tensor_parallel_speeds_up_one_stream_pipeline_does_not() -> None:
    w = Workload(500, 100, 1)
    tp1 = run(LLAMA70, tp=1, kv=KV70_TP[1], weight_bits=8, w=w)
    tp2 = run(LLAMA70, tp=2, kv=KV70_TP[2], weight_bits=8, w=w)
    pp2 = run(LLAMA70, pp=2, kv=KV70_TP[1] // 2, weight_bits=8, w=w)
    assert tp2.itl_ms < 0.75 * tp1.itl_ms
    assert pp2.itl_ms > 0.9 * tp1.itl_ms  # the stages take turns: no gain for one sequence
    busy = Workload(500, 100, 64)  # micro-batches keep both stages busy
    assert run(LLAMA70, pp=2, kv=KV70_TP[1] // 2, weight_bits=8, w=busy).output_tokens_per_s > \
        1.3 * run(LLAMA70, pp=1, kv=KV70_TP[1], weight_bits=8, w=busy).output_tokens_per_s / 2


def test_kv_capacity_bound_queues_requests() -> None:
    w = Workload(2000, 500, 64)
    roomy = run(w=w, capacity=1_000_000)
    tight = run(w=w, capacity=20_000)  # holds 20000 / 2250 ≈ 8 sequences
    assert roomy.queued == 0 and roomy.bound != Bound.KV_CAPACITY
    assert tight.bound == Bound.KV_CAPACITY and tight.queued > 50
    assert tight.running_batch < 10
    assert tight.ttft_ms > 5 * roomy.ttft_ms
    assert tight.output_tokens_per_s < roomy.output_tokens_per_s


def test_max_num_seqs_bound_is_the_scheduler() -> None:
    p = run(w=Workload(200, 200, 64), seqs=16)
    assert p.bound == Bound.SCHEDULER and p.running_batch == 16 and p.queued == 48


def test_concurrency_raises_throughput_and_latency_monotonically() -> None:
    last = None
    for c in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        p = run(w=Workload(1000, 200, c))
        if last is not None:
            assert p.output_tokens_per_s >= last.output_tokens_per_s * 0.999
            assert p.itl_ms >= last.itl_ms * 0.999
        last = p


def test_data_parallel_replicas_split_the_load() -> None:
    one = run(w=Workload(1000, 200, 32))
    two = run(dp=2, w=Workload(1000, 200, 64))
    assert two.output_tokens_per_s == pytest.approx(2 * one.output_tokens_per_s, rel=1e-6)
    assert two.itl_ms == pytest.approx(one.itl_ms, rel=1e-6)


def test_request_rate_below_capacity_is_served_and_above_saturates() -> None:
    low = run(w=Workload(1000, 200, request_rate=0.5, num_prompts=500))
    assert low.output_tokens_per_s == pytest.approx(0.5 * 200, rel=1e-6)
    assert low.queued == 0
    flood = run(w=Workload(1000, 200, request_rate=1e4, num_prompts=500))
    at_once = run(w=Workload(1000, 200, request_rate=math.inf, num_prompts=500))
    assert flood.output_tokens_per_s == pytest.approx(at_once.output_tokens_per_s, rel=0.25)
    assert flood.ttft_ms > 100 * low.ttft_ms
    assert any("queue grows" in n for n in flood.notes)


def test_longer_prompts_take_longer_to_first_token() -> None:
    short = run(w=Workload(500, 100, 1))
    long = run(w=Workload(8000, 100, 1))
    assert long.ttft_ms > 8 * short.ttft_ms


def test_a_gpu_without_a_tensor_peak_is_an_error() -> None:
    bare = replace(H100, tensor_tflops=tuple((d, None) for d, _ in H100.tensor_tflops))
    with pytest.raises(InputError, match="tensor peak"):
        run(gpu=bare)


# ---- the workload and the calibration file ---------------------------------------------------

@given(field=st.sampled_from(["input_len", "output_len", "concurrency", "num_prompts"]),
       value=st.integers(max_value=0))
def test_workload_rejects_zero_and_negative(field: str, value: int) -> None:
    args = {"input_len": 10, "output_len": 10, field: value}
    with pytest.raises(InputError, match=field):
        Workload(**args)


@given(rate=st.one_of(st.floats(max_value=0), st.just(math.nan)))
def test_workload_rejects_a_bad_rate(rate: float) -> None:
    with pytest.raises(InputError, match="request_rate"):
        Workload(10, 10, request_rate=rate)


@given(i=st.integers(1, 100_000), o=st.integers(1, 10_000), c=st.integers(1, 4096))
@settings(max_examples=40, deadline=None)
def test_any_valid_workload_predicts_finite_positive_figures(i: int, o: int, c: int) -> None:
    p = run(w=Workload(i, o, c), capacity=max(1, 400_000))
    for x in (p.ttft_ms, p.itl_ms, p.output_tokens_per_s, p.requests_per_s):
        assert math.isfinite(x) and x > 0
    assert p.output_tokens_per_s_per_user == pytest.approx(1000 / p.itl_ms)


@given(raw=st.text(max_size=12))
def test_parse_rate_accepts_positive_numbers_and_inf_only(raw: str) -> None:
    try:
        rate = parse_rate(raw)
    except InputError as e:
        assert "--request-rate" in e.message
    else:
        assert rate > 0 and (math.isinf(rate) or math.isfinite(rate))


def test_workload_from_refuses_concurrency_with_rate() -> None:
    with pytest.raises(InputError, match="both"):
        workload_from({"input_len": 10, "output_len": 10, "concurrency": 4,
                       "request_rate": "2"})


def test_shipped_calibration_parses_and_names_its_engines() -> None:
    import yaml

    raw = yaml.safe_load(speed_calibration_path().read_text())
    cal = calibration_from_dict(raw)
    assert {"vllm", "trtllm"} <= set(cal.engines)
    assert all(0 < f.bandwidth_efficiency <= 1 for f in cal.engines.values())


@given(field=st.sampled_from(["bandwidth_efficiency", "compute_efficiency", "step_overhead_ms",
                              "per_sequence_overhead_us", "allreduce_latency_us",
                              "moe_layer_overhead_us", "pcie_allreduce_latency_us"]),
       value=st.one_of(st.text(max_size=5), st.floats(max_value=-1e-9), st.just(math.inf),
                       st.floats(min_value=1.0001, max_value=1e6), st.booleans()))
@settings(suppress_health_check=[HealthCheck.filter_too_much])
def test_calibration_rejects_bad_factors_naming_them(field: str, value: object) -> None:
    good = {"bandwidth_efficiency": 0.8, "compute_efficiency": 0.5, "step_overhead_ms": 2,
            "per_sequence_overhead_us": 10, "allreduce_latency_us": 10}
    if isinstance(value, float) and value > 1 and not field.endswith("efficiency"):
        return  # a large overhead is allowed
    raw = {"schema_version": 1, "engines": {"vllm": {**good, field: value}}}
    with pytest.raises(InputError, match=f"engines.vllm.{field}"):
        calibration_from_dict(raw)


def test_calibration_moe_layer_cost_is_optional_and_slows_only_moe() -> None:
    """Files without it (older ones, other engines) read as 0; a cost per MoE layer slows a
    MoE model's step by layers × cost and leaves a dense model as it was."""
    good = {"bandwidth_efficiency": 0.8, "compute_efficiency": 0.5, "step_overhead_ms": 2,
            "per_sequence_overhead_us": 10, "allreduce_latency_us": 10}
    cal = calibration_from_dict({"schema_version": 1, "engines": {"vllm": good}})
    assert cal.factors("vllm").moe_layer_overhead_us == 0.0
    slow = calibration_from_dict({"schema_version": 1,
                                  "engines": {"vllm": {**good, "moe_layer_overhead_us": 50}}})
    kv_moe = 2 * 4 * 128 * 2 * 48
    w = Workload(500, 100, 1)
    fast_moe, slow_moe = (run(MOE, kv=kv_moe, w=w, cal=c) for c in (cal, slow))
    assert ModelCosts.of(MOE).moe_layers == MOE.num_layers and ModelCosts.of(LLAMA8).moe_layers == 0
    assert slow_moe.itl_ms - fast_moe.itl_ms == pytest.approx(MOE.num_layers * 0.05, rel=0.05)
    assert run(w=w, cal=slow).itl_ms == pytest.approx(run(w=w, cal=cal).itl_ms)


def _comm(spec=LLAMA70, gpu: GpuSpeed = H100, *, tp: int, c: int = 1,
          cal: SpeedCalibration = CAL) -> float:
    """The decode step's all-reduce time, ms."""
    p = run(spec, gpu, tp=tp, kv=KV70_TP[tp], cal=cal, w=Workload(100, 100, c))
    return next(t.value for t in p.breakdown if t.name == "interconnect_ms")


def test_allreduce_latency_grows_mildly_with_tp() -> None:
    """A small all-reduce costs its fixed latency, which grows by ALLREDUCE_GROWTH per
    doubling of tp (one-shot kernels: 3.7 -> 5.9 us from tp 2 to 8 on H100), not per peer."""
    only_latency = replace(CAL, engines={**CAL.engines, "vllm": replace(
        CAL.engines["vllm"], link_efficiency=1.0, allreduce_latency_us=100.0)})
    comm = {tp: _comm(tp=tp, cal=only_latency) for tp in (2, 4, 8)}
    layers = LLAMA70.num_layers
    assert comm[2] == pytest.approx(2 * layers * 0.1, rel=0.05)  # ms: 2 per layer × 100 us
    assert comm[4] == pytest.approx((1 + ALLREDUCE_GROWTH) * comm[2], rel=0.05)
    assert comm[8] == pytest.approx((1 + 2 * ALLREDUCE_GROWTH) * comm[2], rel=0.05)


def test_shipped_allreduce_stays_within_the_measured_range() -> None:
    """vLLM's custom all-reduce of a decode-size message on NVSwitch takes 5-20 us at tp 2-8
    (profiles/engines/speed.yaml cites the microbenchmarks): so one request's all-reduces stay
    a minority of its decode step, and tp 8 decodes faster than tp 4 than tp 2."""
    layers = LLAMA70.num_layers
    for tp in (2, 4, 8):
        per_allreduce_us = 1e3 * _comm(tp=tp) / (2 * layers)
        assert 4 <= per_allreduce_us <= 20, tp
    itl = {tp: run(LLAMA70, tp=tp, kv=KV70_TP[tp], w=Workload(1000, 200, 1)).itl_ms
           for tp in (2, 4, 8)}
    assert itl[2] > itl[4] > itl[8]
    tp8 = run(LLAMA70, tp=8, kv=KV70_TP[8], w=Workload(1000, 200, 1))
    comm = next(t.value for t in tp8.breakdown if t.name == "interconnect_ms")
    assert comm < 0.5 * tp8.itl_ms


def test_large_all_reduces_switch_to_two_shot() -> None:
    """One-shot reads all tp − 1 partial sums (cheap latency, costly bytes); past a few hundred
    KB the two-shot form (twice the latency, a ring's 2(tp − 1)/tp of the bytes) wins, so a
    256-sequence step's all-reduce costs well under what one-shot would."""
    msg = 256 * LLAMA70.hidden_size * 2
    link = H100.link_gbps_for(8) * 1e9 * CAL.engines["vllm"].link_efficiency
    one_shot_ms = 1e3 * 7 * msg / link
    per_allreduce_ms = _comm(tp=8, c=256) / (2 * LLAMA70.num_layers)
    assert per_allreduce_ms < 0.6 * one_shot_ms
    assert per_allreduce_ms > 1e3 * 2 * 7 / 8 * msg / link  # never below the ring's bytes


def test_calibration_class_override_falls_back_to_the_engine() -> None:
    good = {"bandwidth_efficiency": 0.8, "compute_efficiency": 0.5, "step_overhead_ms": 2,
            "per_sequence_overhead_us": 10, "allreduce_latency_us": 10,
            "classes": {"ampere": {"bandwidth_efficiency": 0.6}}}
    cal = calibration_from_dict({"schema_version": 1, "engines": {"vllm": good}})
    assert cal.factors("vllm", "ampere").bandwidth_efficiency == 0.6
    assert cal.factors("vllm", "ampere").compute_efficiency == 0.5
    assert cal.factors("vllm", "hopper").bandwidth_efficiency == 0.8
    with pytest.raises(InputError, match="engine"):
        cal.factors("sglang")


# ---- `launcher speed` ----------------------------------------------------------------------

def _speed(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(["speed", *args])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


KEYS = {"ttft_ms", "itl_ms", "output_tokens_per_s", "output_tokens_per_s_per_user",
        "requests_per_s", "bound"}


def test_cli_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _speed(capsys, "llama-3.1-8b", "--gpus", "1xH100-80GB", "--concurrency", "8",
                        "--input-len", "1000", "--output-len", "200", "--json")
    assert rc == 0
    d = json.loads(out)
    assert set(d) >= KEYS
    assert d["bound"] in {b.value for b in Bound}
    assert d["configuration"]["tp"] == 1 and d["workload"]["concurrency"] == 8
    assert d["output_tokens_per_s"] == pytest.approx(d["requests_per_s"] * 200, rel=1e-3)


def test_cli_forced_tp_is_planned(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _speed(capsys, "llama-3.1-70b", "--gpus", "4xH100-80GB", "--tp", "4",
                        "--request-rate", "inf", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["configuration"]["tp"] == 4 and d["workload"]["request_rate"] == "inf"


def test_cli_does_not_fit_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _speed(capsys, "llama-3.1-405b", "--gpus", "1xRTX4090", "--json")
    assert rc == 3 and "error" in err


@pytest.mark.parametrize("args, needle", [
    (["--input-len", "0"], "--input-len"),
    (["--output-len", "-5"], "--output-len"),
    (["--concurrency", "0"], "--concurrency"),
    (["--request-rate", "-1"], "--request-rate"),
    (["--request-rate", "fast"], "--request-rate"),
    (["--concurrency", "4", "--request-rate", "2"], "both"),
    (["--input-len", "200000"], "context"),
    (["--num-prompts", "0"], "--num-prompts"),
])
def test_cli_bad_input_exits_2(capsys: pytest.CaptureFixture[str], args: list[str],
                               needle: str) -> None:
    rc, _, err = _speed(capsys, "llama-3.1-8b", "--gpus", "1xH100-80GB", *args, "--json")
    assert rc == 2 and needle in err


def test_cli_unknown_gpu_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _speed(capsys, "llama-3.1-8b", "--gpus", "1xNOPE-9000", "--json")
    assert rc == 2 and "NOPE" in err


@given(c=st.one_of(st.integers(-5, 0), st.text(alphabet="abc.-", min_size=1, max_size=4)))
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cli_rejects_any_bad_concurrency(capsys: pytest.CaptureFixture[str], c: object) -> None:
    rc, _, err = _speed(capsys, "llama-3.1-8b", "--gpus", "1xH100-80GB",
                        f"--concurrency={c}", "--json")
    assert rc == 2 and "--concurrency" in err


def test_cli_human_output_runs_in_a_real_process() -> None:
    p = run_cli("speed", "llama-3.1-8b", "--gpus", "1xL40S", "--concurrency", "4")
    assert p.returncode == 0, p.stderr
    assert "inter-token latency" in p.stdout and "bound by" in p.stdout
    assert (ROOT / "profiles" / "engines" / "speed.yaml").exists()


# ---- hybrids: linear-attention layers hold a state, not KV -----------------------------------

@pytest.mark.parametrize(("model", "gpus"), [("qwen3-next-80b-a3b", "4xH100-80GB"),
                                             ("nemotron-nano-9b-v2", "1xH100-80GB")])
def test_hybrid_reads_kv_of_its_attention_layers_and_its_state(model: str, gpus: str) -> None:
    """The KV a decode step reads per context token covers the attention layers only (the
    memory model's bytes per layer × the layers that attend), and the recurrent state of
    every state layer is a per-sequence figure from memory/state.py."""
    from launcher.memory.state import state_bytes_per_sequence as state_bytes
    from launcher.planner import PlanRequest
    from launcher.planner.speed import kv_bytes_per_token, state_bytes_per_sequence
    from launcher.prepare import Target, build_plan

    spec = resolve_model(model)
    c = build_plan(model, PlanRequest(), Target(gpus=gpus, device="cuda")).chosen
    assert c is not None and c.geometry is not None and c.pp == 1
    kinds = spec.layer_kinds()
    attending = sum(k not in ("linear", "none") for k in kinds)
    assert 0 < attending < spec.num_layers
    assert kv_bytes_per_token(c) == c.geometry.bytes_per_token_layer * attending
    assert ModelCosts.of(spec).attention_layers == attending
    # vLLM's page before padding, for every state layer (same rules as the plan's geometry)
    per_layer = c.geometry.state_page_bytes
    assert state_bytes_per_sequence(c) == per_layer * len(spec.linear.layers) > 0
    assert state_bytes(spec, c.tp, spec.dtype) // len(spec.linear.layers) <= per_layer
    # `launcher speed` reads the candidate through shape_of: the same figures
    from launcher.speed.shape import shape_of

    shape = shape_of(c)
    assert shape.kv_bytes_per_token == kv_bytes_per_token(c)
    assert shape.state_bytes_per_sequence == state_bytes_per_sequence(c)


def test_recurrent_state_costs_per_sequence_not_per_context_token() -> None:
    """The state adds the same bytes to a decode step at any context length, and more with
    more sequences running."""
    spec = resolve_model("nemotron-nano-9b-v2")
    kv = 4 * 2 * 8 * 128 * 2  # its 4 attention layers, bf16

    def kv_ms(state: int, inp: int, conc: int) -> float:
        p = predict(spec, H100, tp=1, pp=1, dp=1, weight_bits=16, kv_bytes_per_token=kv,
                    max_num_seqs=256, max_num_batched_tokens=8192, kv_capacity_tokens=2_000_000,
                    workload=Workload(inp, 100, conc), cal=CAL, state_bytes_per_sequence=state)
        return next(t for t in p.breakdown if t.name == "kv_read_ms").value

    state = 100_000_000
    short, long = (kv_ms(state, n, 8) - kv_ms(0, n, 8) for n in (100, 8000))
    assert short > 0 and math.isclose(short, long, rel_tol=1e-6)
    assert kv_ms(state, 100, 16) - kv_ms(0, 100, 16) > 1.9 * short


def test_attention_flops_skip_linear_layers() -> None:
    """A long prefill's attention FLOPs scale with the layers that attend: a hybrid whose
    attention layers are few is charged a fraction of the same model priced as all-attention."""
    spec = resolve_model("qwen3-next-80b-a3b")
    costs = ModelCosts.of(spec)
    dense = replace(costs, attention_layers=costs.layers)
    w = Workload(30_000, 10, 1)

    def compute(cs: ModelCosts) -> float:
        p = predict(spec, H100, tp=4, pp=1, dp=1, weight_bits=16, kv_bytes_per_token=6144,
                    max_num_seqs=64, max_num_batched_tokens=8192, kv_capacity_tokens=500_000,
                    workload=w, cal=CAL, costs=cs)
        return p.ttft_ms

    assert compute(costs) < compute(dense)


# ---- the pure core and the edge -----------------------------------------------------------

PURE_ALLOWED = ("launcher.speed", "launcher.memory", "launcher.models.spec", "launcher.errors",
                "launcher.units")


def test_speed_package_imports_only_the_pure_core() -> None:
    """launcher/speed is checked as pure core (scripts/typecheck): no file, YAML, Rich or edge
    import (launcher.prepare, top-level launcher.prices) anywhere in it, at any depth."""
    import ast

    def runtime_nodes(tree: ast.AST):  # imports under `if TYPE_CHECKING:` are types only
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                continue
            yield node
            yield from runtime_nodes(node)

    bad = []
    for path in sorted((ROOT / "launcher" / "speed").glob("*.py")):
        for node in runtime_nodes(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                top = n.split(".")[0]
                if top == "launcher" and not n.startswith(PURE_ALLOWED):
                    bad.append(f"{path.name}: {n}")
                if top in ("yaml", "rich", "json", "pathlib", "os", "typer", "torch", "vllm"):
                    bad.append(f"{path.name}: {n}")
    assert not bad, bad


def test_planner_plan_takes_price_as_data_only() -> None:
    import ast

    src = (ROOT / "launcher" / "planner" / "plan.py").read_text()
    mods = {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert "launcher.prices" not in mods


def test_speed_calibration_is_found_through_the_profiles_resolver() -> None:
    from launcher.paths import profiles_dir

    assert speed_calibration_path() == profiles_dir() / "engines" / "speed.yaml"
    assert speed_calibration_path().is_file()
