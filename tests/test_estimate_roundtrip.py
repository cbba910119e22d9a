"""`estimate` accepts every command `plan` emits, with vLLM's meaning: each planned engine
command, fed back through `launcher estimate`, starts with exactly the planned KV cache and
holds at least the planned concurrency."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from launcher.planner import PlanRequest
from launcher.prepare import Target, build_plan

# Flags of the engine command that say where to serve, not how much memory: estimate has none.
NOT_MEMORY = {"--host", "--port", "--served-model-name"}
SCENARIOS = [
    ("deepseek-67b", "2xH100-80GB"),  # online fp8, TP2
    ("deepseek-67b", "8xH100-80GB"),  # bf16 TP4 × 2 replicas
    ("llama-3.1-8b", "1xH100-80GB"),  # fp8 KV, context shortened
    ("qwen3-30b-a3b", "2xA100-80GB"),  # MoE
    ("gemma-3-27b", "1xH100-80GB"),  # sliding-window layers
    ("deepseek-v3", "8xH200"),  # MLA, pipeline stages
]


def _estimate_args(argv: tuple[str, ...]) -> list[str]:
    args = list(argv[argv.index("--model"):])
    out: list[str] = []
    i = 0
    while i < len(args):
        flag = args[i]
        takes_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if flag not in NOT_MEMORY and flag != "--model":
            out += [flag, args[i + 1]] if takes_value else [flag]
        i += 2 if takes_value else 1
    return out


@pytest.mark.parametrize(("model", "gpus"), SCENARIOS)
def test_planned_command_starts_under_estimate_with_the_planned_kv(model: str, gpus: str) -> None:
    p = build_plan(model, PlanRequest(), Target(gpus=gpus))
    assert p.feasible and p.engine is not None and p.decision is not None
    args = _estimate_args(p.engine.argv)
    assert "--gpu-memory-utilization" in args and "--kv-cache-memory-bytes" in args
    r = run_cli("estimate", model, "--gpus", gpus, *args, "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["starts"], e["error"]
    assert {s["kv_cache_bytes"] for s in e["stages"]} == {p.decision.kv_cache_memory_bytes}
    assert e["max_concurrency"] >= p.request.min_concurrency
