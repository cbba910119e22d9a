"""Property: every feasible plan is one `launcher estimate` accepts, and keeps the headroom.

Random Llama-shaped models on random GPU sets (some GPUs partly used by others). Whatever the
planner picks must (1) pass vLLM's validity rules as the estimator applies them, (2) start
under the estimator with exactly the planned flags, with the same KV cache, and (3) keep
other + peak ≤ (1 − headroom) · total on every GPU it uses.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from launcher.engines.calibration import calibration_for
from launcher.hardware.catalog import simulated_inventory
from launcher.memory.estimate import EngineFlags, estimate
from launcher.models.config import spec_from_config
from launcher.planner import PlanRequest, plan

CAL = calibration_for("0.19")
GPU_TYPES = ["H100-80GB", "A100-40GB", "L4", "RTX4090", "T4", "H200"]


@st.composite
def models(draw):
    heads = draw(st.sampled_from([8, 12, 16, 32, 40, 48, 64, 96, 128]))
    kv = draw(st.sampled_from([k for k in (1, 2, 4, 8, heads) if heads % k == 0]))
    head_dim = draw(st.sampled_from([64, 128]))
    hidden = heads * head_dim
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": kv,
        "num_hidden_layers": draw(st.integers(2, 160)),
        "intermediate_size": draw(st.integers(hidden // 256, 4 * hidden // 256)) * 256,
        "vocab_size": draw(st.integers(1000, 260000)),
        "max_position_embeddings": draw(st.sampled_from([2048, 4096, 32768, 131072])),
        "torch_dtype": draw(st.sampled_from(["bfloat16", "float16"])),
        "tie_word_embeddings": draw(st.booleans()),
    }
    return spec_from_config(config, name="random", source="test", origin="hypothesis")


@st.composite
def gpu_sets(draw):
    name = draw(st.sampled_from(GPU_TYPES))
    n = draw(st.sampled_from([1, 2, 4, 8]))
    gpus = list(simulated_inventory(f"{n}x{name}").gpus)
    out = []
    for g in gpus:
        busy = int(g.total_bytes * draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])))
        out.append(replace(g, used_bytes=busy, free_bytes=g.total_bytes - busy))
    return out


requests = st.builds(
    PlanRequest,
    headroom=st.sampled_from([0.0, 0.1, 0.2, 0.35]),
    min_concurrency=st.sampled_from([1, 4, 8]),
    objective=st.sampled_from(["throughput", "latency"]),
    enforce_eager=st.booleans(),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=models(), gpus=gpu_sets(), req=requests)
def test_feasible_plans_start_under_the_estimator_and_keep_headroom(spec, gpus, req) -> None:
    p = plan(spec, gpus, CAL, req)
    event("feasible" if p.feasible else "does not fit")
    if not p.feasible:
        assert p.reason and p.chosen is None and p.suggestions
        return
    c = p.chosen
    d = p.decision
    assert c is not None and d is not None
    flags = EngineFlags(
        tensor_parallel_size=c.tp, pipeline_parallel_size=c.pp, data_parallel_size=c.dp,
        quantization=c.option.quantization_flag, kv_cache_dtype=d.kv_cache_dtype,
        max_model_len=d.max_model_len, max_num_seqs=d.max_num_seqs,
        max_num_batched_tokens=d.max_num_batched_tokens,
        gpu_memory_utilization=d.gpu_memory_utilization,
        kv_cache_memory_bytes=d.kv_cache_memory_bytes, enforce_eager=d.enforce_eager)
    est = estimate(c.option.spec, list(c.gpus), flags, CAL)
    assert est.starts, est.error
    assert est.max_concurrency is not None and est.max_concurrency >= req.min_concurrency
    for b in p.budgets:
        assert b.planned_total <= b.limit_bytes
        # the estimator's own peak for this GPU's pipeline stage agrees
        assert b.planned["other"] + est.stages[b.stage].peak_used_bytes <= b.limit_bytes
        assert b.planned["kv_cache"] == d.kv_cache_memory_bytes > 0
    assert c.max_model_len <= spec.max_position_embeddings
    assert c.tp * c.pp * c.dp <= len(gpus)
    # vLLM's start-up gate: free ≥ U·T on every GPU used
    ctx = CAL.context_bytes(c.tp, c.pp)
    for g in c.gpus:
        assert g.total_bytes - g.used_bytes - ctx >= d.gpu_memory_utilization * g.total_bytes
    assert d.gpu_memory_utilization is not None
    assert d.gpu_memory_utilization <= 1 - req.headroom + 1e-9
    cap = p.to_json()["capacity"]
    assert cap["full_length_sequences_per_replica"] >= req.min_concurrency
    assert cap["kv_tokens_per_replica"] >= req.min_concurrency * c.max_model_len
