"""`serve` on the real vLLM CPU engine: launch, warm up, verify, step down, stop, faults.

Every test starts the real engine (or stops just short of it) in a real subprocess; no
engine process may survive any of them.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import run_cli
from engine_helpers import Launcher, engine_pid, free_port, group_alive, kill_group, read_report

from launcher.hardware.cpu import read_node_memory
from launcher.runtime.measure import process_tree_pss
from launcher.units import GiB

pytestmark = pytest.mark.engine
START = 420  # seconds: a cold CPU engine start with torch.compile is ~70 s here


def _no_orphans(pgid: int) -> None:
    deadline = time.monotonic() + 15
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.3)
    left = group_alive(pgid)
    kill_group(pgid)
    assert not left, f"engine processes survived: {[p.pid for p in left]}"


def test_serve_demo_start_warm_up_verify_complete_and_stop(engine_env, tmp_path: Path) -> None:
    port = free_port()
    report_path = tmp_path / "report.json"
    srv = Launcher("demo", "--port", str(port), "--report", str(report_path),
                   "--log-dir", str(tmp_path / "logs"), env=engine_env)
    pgid = None
    try:
        pgid = engine_pid(srv)
        srv.wait_for(r"serving demo at", START)
        rep = json.loads(report_path.read_text())
        assert rep["verdict"] == "serving" and len(rep["attempts"]) == 1
        a = rep["attempts"][0]
        assert a["outcome"] == "served" and a["engine_pid"] == pgid
        assert a["verification"]["ok"] and a["warmup"]["ok"]
        assert a["warmup"]["long_prompt_tokens"] >= rep["plan"]["decision"]["max_model_len"] - 8
        assert a["warmup"]["burst_requests"] == rep["plan"]["decision"]["max_num_seqs"]
        # speed measured under load at the planned concurrency, before ready
        sp = a["speed"]["measured"]
        assert sp["ok"] and sp["load"]["concurrency"] == rep["plan"]["decision"]["max_num_seqs"]
        assert sp["itl_ms"]["mean"] > 0 and sp["itl_ms"]["p50"] <= sp["itl_ms"]["p90"]
        assert sp["ttft_ms"]["n"] >= 1 and sp["output_tokens_per_s"] > 0
        assert sp["output_tokens_per_s_per_user"] > 0
        # the engine's own counter saw every token the clients counted (and the cut-off rest)
        assert sp["engine_generation_tokens"] >= sp["output_tokens"] > 0
        assert "speed at" in srv.output
        # measured figures are real readings of the running engine
        dev = a["verification"]["devices"][0]
        now, _ = process_tree_pss(a["engine_pids"])
        assert dev["engine_measured_bytes"] > 0.3 * GiB
        assert abs(now - dev["engine_measured_bytes"]) < 0.25 * dev["engine_measured_bytes"]
        checks = {c["name"]: c for c in a["verification"]["checks"]}
        assert checks["kv_cache_tokens"]["ok"] and checks["max_model_len"]["ok"]
        assert checks["kv_cache_tokens"]["measured"] == a["figures"]["kv_cache_tokens"]
        assert checks["num_blocks"]["ok"]
        kv = checks["kv_cache"]
        assert abs(kv["measured"] - rep["plan"]["decision"]["kv_cache_memory_bytes"]) < 0.01 * GiB
        assert Path(a["log_file"]).read_text().count("Starting vLLM") + \
            Path(a["log_file"]).read_text().count("api_server") >= 1
        # a completion through the OpenAI API, with the plan's context
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert models[0]["id"] == "demo"
        assert models[0]["max_model_len"] == rep["plan"]["decision"]["max_model_len"]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "demo", "max_tokens": 5,
            "messages": [{"role": "user", "content": "Hello"}]})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        # the verified start is in the boot store, and the next plan here learns from it
        assert a["boot"]["recorded"], a["boot"]
        assert a["boot"]["overshoot_bytes"] == dev["engine_measured_bytes"] - (
            dev["engine_planned_bytes"] - rep["plan"]["request"]["reserve_bytes"])
        shown = json.loads(run_cli("calibration", "show", "--json", env=engine_env).stdout)
        assert shown["boots"][-1]["engine_measured_bytes"] == dev["engine_measured_bytes"]
        again = json.loads(run_cli("plan", "demo", "--device", "cpu", "--json",
                                   env=engine_env).stdout)
        assert any(n.startswith("calibrated from ") for n in again["notes"]), again["notes"]
        assert again["request"]["learned_bytes"] >= max(0, a["boot"]["overshoot_bytes"]) \
            - 64 * 2**20
        srv.signal(signal.SIGTERM)
        assert srv.wait(90) == 128 + signal.SIGTERM
        _no_orphans(pgid)
        assert json.loads(report_path.read_text())["exit_code"] == 128 + signal.SIGTERM
    finally:
        srv.kill()
        if pgid:
            kill_group(pgid)


def test_real_engine_failure_steps_down_and_serves(engine_env, tmp_path: Path) -> None:
    """A host snapshot promising more memory than this machine has: the engine refuses the
    planned KV cache for real, the launcher re-plans on what the engine measured, and the
    next rung (a shorter context) serves."""
    mem = read_node_memory()
    per_token = 1024  # demo model: 2 layers × K,V × 2 KV heads × 64 × bf16
    # full context for this many sequences needs 1.3× the node's memory
    seqs = math.ceil(1.3 * mem.total_bytes / (4096 * per_token))
    big = 4 * mem.total_bytes
    snap = tmp_path / "bigger-host.json"
    snap.write_text(json.dumps({
        "format": "launcher-inventory/1", "source": "recorded on a larger host",
        "driver_version": None, "cuda_driver_version": None, "captured_at": None,
        "assumptions": [], "gpus": [],
        "host": {"total_ram_bytes": big, "available_ram_bytes": big, "cpu_count": 2}}))
    port = free_port()
    report_path = tmp_path / "report.json"
    srv = Launcher("demo", "--device", "cpu", "--inventory-file", str(snap), "--port",
                   str(port), "--min-concurrency", str(seqs), "--min-context", "256",
                   "--headroom", "0.5", "--enforce-eager", "--report", str(report_path),
                   "--log-dir", str(tmp_path / "logs"), env=engine_env)
    pgids: list[int] = []
    try:
        srv.wait_for(r"serving demo at", 2 * START)
        rep = read_report(report_path)
        pgids = [a["engine_pid"] for a in rep["attempts"]]
        first, second = rep["attempts"][0], rep["attempts"][-1]
        assert len(rep["attempts"]) == 2
        assert first["outcome"] == "start_failed"
        assert first["failure"]["kind"] == "host_memory_short", first["failure"]
        assert first["failure"]["details"]["requested_gib"] > first["failure"]["details"][
            "available_gib"]
        assert "re-plan" in first["next_step"]
        p1, p2 = first["plan"]["decision"], second["plan"]["decision"]
        assert p1["max_model_len"] == 4096
        assert 256 <= p2["max_model_len"] < p1["max_model_len"]  # the shorter-context rung
        assert p2["kv_cache_memory_bytes"] < p1["kv_cache_memory_bytes"]
        assert second["outcome"] == "served" and second["verification"]["ok"]
        reason = next(d["reason"] for d in second["plan"]["decisions"]
                      if d["name"] == "max_model_len")
        assert "shortened from 4,096" in reason
        assert "stepping down" in srv.output
        srv.signal(signal.SIGINT)
        assert srv.wait(90) == 128 + signal.SIGINT
        for pgid in pgids:
            _no_orphans(pgid)
    finally:
        srv.kill()
        for pgid in pgids:
            kill_group(pgid)


def test_engine_killed_mid_warm_up_exits_4_with_its_last_lines(engine_env, tmp_path) -> None:
    port = free_port()
    srv = Launcher("demo", "--port", str(port), "--max-attempts", "1", "--enforce-eager",
                   "--log-dir", str(tmp_path / "logs"), "--report", str(tmp_path / "r.json"),
                   env=env_with(engine_env))
    pgid = None
    try:
        pgid = engine_pid(srv)
        srv.wait_for(r"warming up", START)
        kill_group(pgid)  # the whole engine dies at once, as under the OOM killer
        assert srv.wait(120) == 4, srv.output
        out = srv.output
        assert "error:" in out and "Traceback" not in out.split("error:")[-1]
        rep = read_report(tmp_path / "r.json")
        assert rep["exit_code"] == 4 and rep["verdict"] in ("failed_to_start", "engine_exited")
        _no_orphans(pgid)
    finally:
        srv.kill()
        if pgid:
            kill_group(pgid)


def env_with(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**env, **extra}


def test_port_taken_fails_before_loading_anything(engine_env, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t = time.monotonic()
        srv = Launcher("demo", "--port", str(port), "--log-dir", str(tmp_path / "logs"),
                       env=engine_env)
        assert srv.wait(60) == 2
        assert time.monotonic() - t < 30
    assert f"port {port} on 127.0.0.1 is already in use" in srv.output
    assert "engine starting" not in srv.output and not (tmp_path / "logs").exists()


def test_sigterm_while_the_engine_loads_leaves_no_orphans(engine_env, tmp_path: Path) -> None:
    srv = Launcher("demo", "--port", str(free_port()), "--log-dir", str(tmp_path / "logs"),
                   "--report", str(tmp_path / "r.json"), env=engine_env)
    pgid = None
    try:
        pgid = engine_pid(srv)
        time.sleep(4)  # the engine is importing / loading now
        assert group_alive(pgid), "the engine should be running"
        srv.signal(signal.SIGTERM)
        assert srv.wait(90) == 128 + signal.SIGTERM
        _no_orphans(pgid)
        assert read_report(tmp_path / "r.json")["attempts"][0]["outcome"] == "stopped"
    finally:
        srv.kill()
        if pgid:
            kill_group(pgid)
