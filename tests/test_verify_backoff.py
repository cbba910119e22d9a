"""Verification and step-down logic on recorded data: real NVML readings, real vLLM logs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import CALIBRATION
from test_vllm_log import CPU_KV_TOO_SMALL

from launcher.engines.calibration import calibration_for
from launcher.engines.vllm_log import classify_failure, parse_log
from launcher.hardware.inventory import HostInfo
from launcher.hardware.nvml import RawProcess, RawSystem, build_inventory
from launcher.models.resolve import resolve_model
from launcher.planner import PlanRequest, plan
from launcher.runtime.backoff import next_step
from launcher.runtime.measure import DeviceReading, readings_from_raw
from launcher.runtime.verify import verify
from launcher.units import GiB

NVML = Path(__file__).parent / "data" / "nvml"
LOGS = CALIBRATION / "vllm-0.19-h100" / "logs"
CAL = calibration_for("0.19")


@pytest.fixture
def recorded():
    raw = RawSystem.from_dict(json.loads((NVML / "h100x2-raw.json").read_text()))
    inv = build_inventory(raw, {"CUDA_VISIBLE_DEVICES": "1"},
                          host=HostInfo(2 * 1024**4, 1900 * 1024**3, 192), captured_at=None)
    return raw, inv


def _plan(inv, model="llama-3.1-8b", **kw):
    return plan(resolve_model(model), list(inv.gpus), CAL,
                PlanRequest(max_model_len=8192, **kw))


def test_readings_follow_the_plans_gpus_by_uuid(recorded) -> None:
    raw, inv = recorded
    p = _plan(inv)
    g = p.chosen.gpus[0]
    # CUDA index 0 is NVML device 1 under CUDA_VISIBLE_DEVICES=1; the UUID says so
    assert g.uuid == raw.devices[1].uuid
    busy = replace(raw, devices=(raw.devices[0], replace(
        raw.devices[1], memory_used=30 * GiB,
        processes=(RawProcess(4242, "python", 29 * GiB), RawProcess(77, "other", GiB)))))
    [r] = readings_from_raw(busy, p.chosen.gpus, {4242})
    assert r.index == g.index and r.used_bytes == 30 * GiB and r.engine_bytes == 29 * GiB
    assert r.total_bytes == raw.devices[1].memory_total - raw.devices[1].memory_reserved
    # a driver that hides per-process figures gives no engine figure, not a wrong one
    hidden = replace(busy, devices=(raw.devices[0], replace(
        busy.devices[1], processes=(RawProcess(4242, "python", None),))))
    assert readings_from_raw(hidden, p.chosen.gpus, {4242})[0].engine_bytes is None


def test_vllm_defaults_on_a_real_h100_break_the_headroom_and_verification_says_so(
        recorded) -> None:
    """vLLM 0.19 at its default U = 0.9 on a real H100 run: what the GPU held (from the
    engine's own log) is above the 80 % limit, so verification fails and the step-down
    reserves the overshoot; the plan's own numbers would have kept it under."""
    _, inv = recorded
    p = _plan(inv)
    text = (LOGS / "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log").read_text()
    parser, failure = parse_log(text)
    f = parser.figures
    assert failure is None and f.requested_gib and f.graph_capture_gib
    used = int((f.init_device_used_gib + f.requested_gib + f.graph_capture_gib) * GiB)
    g = p.chosen.gpus[0]
    reading = DeviceReading(g.index, g.total_bytes, used, None, "vLLM 0.19 log, H100")
    v = verify(p, [reading], f, 8192, {})
    hard = {c.name: c for c in v.checks if c.hard}
    assert not hard[f"device {g.index} used ≤ limit"].ok
    assert v.overshoot_bytes == used - p.budgets[0].limit_bytes > 5 * GiB
    # the log's KV cache (vLLM sized it to U·T) is not the planned one: reported, not hidden
    assert not hard["kv_cache_tokens"].ok
    kv = next(c for c in v.checks if c.name == "kv_cache")
    assert not kv.ok and kv.measured == int(f.available_kv_cache_gib * GiB)
    # weights from the same log agree with the plan's weights within the tolerance
    assert next(c for c in v.checks if c.name == "weights").ok
    assert not v.ok
    # capacity disagreement is not a memory problem a smaller plan would fix
    assert next_step(PlanRequest(max_model_len=8192), p, None, v) is None


def test_over_the_limit_alone_reserves_the_overshoot(recorded) -> None:
    _, inv = recorded
    p = _plan(inv)
    b = p.budgets[0]
    over = 3 * GiB
    reading = DeviceReading(b.index, b.total_bytes, b.limit_bytes + over, None, "recorded")
    v = verify(p, [reading], parse_log("")[0].figures, 8192, {})
    assert [c.name for c in v.failures] == [f"device {b.index} used ≤ limit"]
    req = PlanRequest(max_model_len=8192)
    step = next_step(req, p, None, v)
    assert step is not None and step.request.reserve_bytes >= over
    again = plan(resolve_model("llama-3.1-8b"), list(inv.gpus), CAL, step.request)
    assert again.feasible
    assert again.decision is not None and p.decision is not None
    assert again.decision.kv_cache_memory_bytes <= p.decision.kv_cache_memory_bytes - over
    assert again.budgets[0].planned_total <= again.budgets[0].limit_bytes


def test_within_the_limit_passes(recorded) -> None:
    _, inv = recorded
    p = _plan(inv)
    b = p.budgets[0]
    reading = DeviceReading(b.index, b.total_bytes, b.planned_total, None, "recorded")
    v = verify(p, [reading], parse_log("")[0].figures, 8192, {"num_gpu_blocks":
                                                               str(p.chosen.num_blocks)})
    assert v.ok, v.to_json()
    served_other = verify(p, [reading], parse_log("")[0].figures, 4096, {})
    assert not served_other.ok and served_other.failures[0].name == "max_model_len"


def test_graph_capture_oom_steps_to_eager_on_the_real_gpt_oss_log(recorded) -> None:
    _, inv = recorded
    p = plan(resolve_model("gpt-oss-20b"), list(inv.gpus), CAL, PlanRequest())
    _, failure = parse_log((LOGS / "openai-gpt-oss-20b--h100-80gb--tp1pp1dp1--8192.FAILED.log")
                           .read_text())
    assert failure is not None and failure.kind == "oom_graph_capture"
    step = next_step(PlanRequest(), p, failure, None)
    assert step is not None and step.request.enforce_eager and "enforce-eager" in step.reason
    # already eager: the next rung is a memory reserve instead
    step2 = next_step(step.request, p, failure, None)
    assert step2 is not None and step2.request.reserve_bytes > 0


def test_startup_free_memory_failure_reserves_memory(recorded) -> None:
    _, inv = recorded
    p = _plan(inv)
    _, failure = parse_log((LOGS / "codellama-codellama-34b---h100-80gb--tp2pp1dp1--8192.FAILED"
                            ".log").read_text())
    assert failure is not None and failure.kind == "startup_free_memory"
    step = next_step(PlanRequest(max_model_len=8192), p, failure, None)
    assert step is not None and step.request.reserve_bytes >= int(0.5 * GiB)


def test_kv_too_small_caps_the_context_at_what_the_engine_said(recorded) -> None:
    _, inv = recorded
    p = _plan(inv)
    failure = classify_failure(CPU_KV_TOO_SMALL)
    assert failure.kind == "kv_too_small_for_context"
    step = next_step(PlanRequest(max_model_len=8192, min_context=64), p, failure, None)
    assert step is not None and step.request.max_model_len == 128
    # never below the shortest context the user accepts (default 4096): no step then
    assert next_step(PlanRequest(max_model_len=8192), p, failure, None) is None


def test_config_errors_are_not_retried(recorded) -> None:
    _, inv = recorded
    p = _plan(inv)
    _, failure = parse_log((LOGS / "microsoft-phi-2--h100-80gb--tp1pp1dp1--8192.FAILED.log")
                           .read_text())
    assert failure is not None and failure.kind == "config_error"
    assert next_step(PlanRequest(), p, failure, None) is None
