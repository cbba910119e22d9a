"""CPU planning (host memory as vLLM's CPU worker reads it) and the demo model builder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from launcher.errors import InputError
from launcher.hardware.cpu import clamp_to_cgroup, parse_node_meminfo, read_node_memory
from launcher.models.demo import build_demo_model, is_built
from launcher.models.resolve import spec_from_dir

NODE0 = Path("/sys/devices/system/node/node0/meminfo")


def test_node_memory_matches_vllms_own_reading(engine_env) -> None:
    """Same numbers as vLLM's CPU worker computes (its function, run in the engine's
    interpreter), within what moves between the two reads."""
    code = ("import json; from vllm.utils.cpu_resource_utils import get_memory_node_info as g; "
            "m = g(0); print(json.dumps([m.total_memory, m.available_memory]))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    total, available = json.loads(out.stdout.strip().splitlines()[-1])
    ours = read_node_memory(0)
    assert ours.total_bytes == total
    assert abs(ours.available_bytes - available) < 0.05 * total


def test_meminfo_parsing_and_cgroup_clamp() -> None:
    if NODE0.exists():
        total, available = parse_node_meminfo(NODE0.read_text())
        assert 0 < available <= total
    assert clamp_to_cgroup(100, 80, None, None) == (100, 80, False)
    assert clamp_to_cgroup(100, 80, 50, 20) == (50, 30, True)
    assert clamp_to_cgroup(100, 80, 200, 20) == (100, 80, False)


def test_cpu_dry_run_plans_the_demo_on_host_memory(tmp_path: Path) -> None:
    p = run_cli("plan", "demo", "--device", "cpu", "--json",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["device"] == "cpu" and j["feasible"]
    d = j["decision"]
    assert d["gpu_memory_utilization"] is None and d["tensor_parallel_size"] == 1
    assert "--gpu-memory-utilization" not in j["engine"]["argv"]
    assert "CUDA_VISIBLE_DEVICES" not in j["engine"]["env"]
    assert "VLLM_CPU_KVCACHE_SPACE" in j["engine"]["unset"]
    [g] = j["gpus"]
    assert sum(g["planned"].values()) <= g["limit_bytes"]
    # KV holds the batch: max_num_seqs full-length sequences of 1 KiB per token
    assert d["kv_cache_memory_bytes"] >= d["max_num_seqs"] * d["max_model_len"] * 1024
    assert is_built(tmp_path / "demo-model")  # built on first use


def test_cpu_rejects_gpu_only_options(tmp_path: Path) -> None:
    p = run_cli("plan", "demo", "--device", "cpu", "--tp", "2",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 2 and "CPU backend" in p.stderr
    p = run_cli("plan", "demo", "--device", "cpu", "--gpus", "1xH100-80GB",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 2 and "simulated GPUs" in p.stderr


def test_demo_model_builds_a_loadable_llama(tmp_path: Path) -> None:
    d = build_demo_model(tmp_path / "demo")
    spec = spec_from_dir(d)
    assert spec.architecture == "LlamaForCausalLM" and spec.head_dim == 64
    assert spec.num_kv_heads == 2 and spec.tensors
    assert spec.vocab_size == json.loads((d / "tokenizer.json").read_text())["model"][
        "vocab"].__len__()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = tok.encode("Return a JSON object from the file.").ids
    assert 1 < len(ids) < 20  # trained merges, not bytes
    assert tok.decode(ids) == "Return a JSON object from the file."
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert "add_generation_prompt" in cfg["chat_template"]


def test_demo_model_cli_keeps_what_the_user_had(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    p = run_cli("demo-model", str(target))
    assert p.returncode == 2 and "not a demo model" in p.stderr
    assert (target / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError):
        build_demo_model(target)
    fresh = tmp_path / "fresh"
    p = run_cli("demo-model", str(fresh))
    assert p.returncode == 0 and is_built(fresh)
    p = run_cli("demo-model", str(fresh))
    assert p.returncode == 0 and "already built" in p.stdout
    assert not list(tmp_path.glob(".demo-model-*"))  # no temporary left behind


def test_cpu_plan_that_does_not_fit_says_how_much_memory_would(tmp_path: Path) -> None:
    p = run_cli("plan", "llama-3.1-70b", "--device", "cpu", "--json",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 3, p.stderr
    j = json.loads(p.stdout)
    [s] = j["suggestions"]
    # 70.6 B bf16 parameters alone are 131 GiB: the need at the shortest context is above that
    need = float(s.split("or ")[1].split(" GiB")[0])
    assert 131 / 0.8 < need < 400 and "would need" in s


def test_cpu_context_search_uses_the_room_not_the_capped_cache() -> None:
    """On a 64 GiB node the longest context with 8 sequences is found from what the limit
    leaves, not from a cache already sized for the floor's length."""
    from dataclasses import replace

    from launcher.engines.calibration import calibration_for
    from launcher.hardware.cpu import NodeMemory, cpu_device
    from launcher.models.resolve import resolve_model
    from launcher.planner import PlanRequest, plan

    node = cpu_device(NodeMemory(0, 64 << 30, 62 << 30, "test"))
    spec = resolve_model("llama-3.1-8b")
    cal = calibration_for("0.32", "cpu")
    low = plan(spec, [node], cal, PlanRequest(device="cpu"))
    high = plan(spec, [node], cal, PlanRequest(device="cpu", min_context=16384))
    assert low.feasible and high.feasible
    assert low.chosen.max_model_len >= high.chosen.max_model_len >= 16384
    b = low.budgets[0]
    assert b.planned_total <= b.limit_bytes
    # and the result is the longest: 1024 tokens more no longer hold 8 sequences
    longer = plan(spec, [node], cal, replace(PlanRequest(device="cpu"),
                                             min_context=low.chosen.max_model_len + 1024))
    assert not longer.feasible or longer.chosen.max_model_len >= low.chosen.max_model_len
