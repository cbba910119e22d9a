"""The CLI in a real subprocess: output contract, exit codes, and bad input without tracebacks."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, run_cli
from safetensors.numpy import save_file

ESTIMATE_KEYS = {"starts", "error", "weights_gib", "activation_gib", "non_torch_gib",
                 "cuda_graph_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency",
                 "peak_used_gib", "total_gib"}


def _ok_json(*args: str) -> dict:
    p = run_cli("estimate", *args, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_estimate_profile_json_contract() -> None:
    out = _ok_json("deepseek-67b", "--gpus", "2xH100-80GB", "--tp", "2")
    assert out.keys() >= ESTIMATE_KEYS and out["starts"] is True and out["error"] is None
    assert out["total_gib"] == pytest.approx(79.19, abs=0.01)
    # 67.4 B params in bf16 over 2 GPUs ≈ 62.8 GiB per GPU, and peak below the GPU
    assert 62 < out["weights_gib"] < 64 and out["peak_used_gib"] < out["total_gib"]
    assert "0.19" in out["engine_version_source"]


def test_estimate_that_would_not_start_exits_3_with_vllms_reason() -> None:
    p = run_cli("estimate", "llama-3.1-70b", "--gpus", "2xA100-80GB", "--tp", "2", "--json")
    assert p.returncode == 3
    out = json.loads(p.stdout)
    assert out["starts"] is False and "To serve at least one request" in out["error"]
    assert out.keys() >= ESTIMATE_KEYS


def test_tp_not_dividing_heads() -> None:
    p = run_cli("estimate", "llama-3.1-8b", "--gpus", "3xH100-80GB", "--tp", "3", "--json")
    assert p.returncode == 3
    assert "must be divisible by tensor parallel size (3)" in json.loads(p.stdout)["error"]


def test_max_model_len_above_model_maximum() -> None:
    p = run_cli("estimate", "qwen2.5-7b", "--gpus", "H100-80GB", "--max-model-len", "65536",
                "--json")
    assert p.returncode == 3 and "derived max_model_len" in json.loads(p.stdout)["error"]


def test_human_output_names_the_components() -> None:
    p = run_cli("estimate", "llama-3.1-8b", "--gpus", "H100-80GB")
    assert p.returncode == 0
    for word in ("weights", "KV cache", "CUDA graphs", "max concurrency"):
        assert word in p.stdout


def test_env_var_sets_an_option() -> None:
    p = run_cli("estimate", "llama-3.1-8b", "--json", env={"LAUNCHER_GPUS": "1xH100-80GB",
                                                           "LAUNCHER_KV_CACHE_DTYPE": "fp8"})
    assert p.returncode == 0 and json.loads(p.stdout)["resolved"]["kv_cache_dtype"] == "fp8"


def test_tp_from_the_environment_is_the_flag() -> None:
    by_env = run_cli("estimate", "deepseek-67b", "--gpus", "2xH100-80GB", "--json",
                     env={"LAUNCHER_TP": "2"})
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout) == _ok_json("deepseek-67b", "--gpus", "2xH100-80GB",
                                                 "--tensor-parallel-size", "2")


def test_estimate_takes_auto_as_vllms_default() -> None:
    auto = run_cli("estimate", "llama-3.1-8b", "--gpus", "H100-80GB", "--json",
                   env={"LAUNCHER_TP": "auto", "LAUNCHER_PP": "auto"})
    assert auto.returncode == 0, auto.stderr
    assert json.loads(auto.stdout) == _ok_json("llama-3.1-8b", "--gpus", "H100-80GB", "--tp", "1")


def test_estimate_reads_the_model_from_the_environment() -> None:
    p = run_cli("estimate", "--gpus", "H100-80GB", "--json", env={"LAUNCHER_MODEL": "llama-3.1-8b"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"]["name"] == "llama-3.1-8b"


def test_gpus_without_driver_exits_6_without_traceback() -> None:
    p = run_cli("gpus")
    assert p.returncode == 6
    assert "driver" in p.stderr.lower() and "Traceback" not in p.stderr


def test_gpus_snapshot_replays(tmp_path: Path) -> None:
    snap = run_cli("gpus", "--gpus", "2xH100-80GB", "--json")
    assert snap.returncode == 0
    f = tmp_path / "inv.json"
    f.write_text(snap.stdout)
    a = _ok_json("llama-3.1-8b", "--inventory-file", str(f))
    b = _ok_json("llama-3.1-8b", "--gpus", "H100-80GB")
    assert a["kv_cache_gib"] == b["kv_cache_gib"]


def test_other_process_memory_is_subtracted(tmp_path: Path) -> None:
    inv = json.loads(run_cli("gpus", "--gpus", "H100-80GB", "--json").stdout)
    g = inv["gpus"][0]
    g["used_bytes"] = 40 << 30
    g["free_bytes"] = g["total_bytes"] - g["used_bytes"]
    f = tmp_path / "busy.json"
    f.write_text(json.dumps(inv))
    p = run_cli("estimate", "llama-3.1-8b", "--inventory-file", str(f), "--json")
    assert p.returncode == 3 and "less than desired GPU memory utilization" in p.stdout


def test_models_lists_profiles() -> None:
    p = run_cli("models", "--json")
    rows = json.loads(p.stdout)
    names = {r["profile"] for r in rows}
    assert {"deepseek-67b", "deepseek-v3", "llama-3.1-405b", "gpt-oss-120b"} <= names
    assert any("deepseek-67b" in r["aliases"] for r in rows)


def _write_model(d: Path, config: dict) -> Path:
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_local_dir_with_safetensors_uses_exact_bytes(tmp_path: Path) -> None:
    cfg = json.loads((CONFIGS / "meta-llama--llama-3-1-8b-instruct.json").read_text())
    cfg.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=1024)
    d = _write_model(tmp_path / "tiny", cfg)
    save_file({"model.embed_tokens.weight": np.zeros((1024, 256), np.float16),
               "lm_head.weight": np.zeros((1024, 256), np.float16)}, d / "model.safetensors")
    out = _ok_json(str(d), "--gpus", "L4")
    # two 1024×256 fp16 tensors = 1 MiB, plus Llama's rope cache (131072 × 64 × 2 B = 16 MiB)
    assert out["weights_gib"] == pytest.approx((1 + 16) / 1024, abs=0.001)


def test_config_only_dir_counts_from_architecture(tmp_path: Path) -> None:
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").write_text((CONFIGS / "qwen--qwen2-5-7b-instruct.json").read_text())
    out = _ok_json(str(d), "--gpus", "H100-80GB")
    assert out["weights_gib"] == pytest.approx(14.19, abs=0.02)
    assert any("counted from the architecture" in a for a in out["model"]["assumptions"])


def test_hub_repo_from_offline_cache(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text((CONFIGS / "qwen--qwen2-5-7b-instruct.json").read_text())
    p = run_cli("estimate", "acme/tiny", "--gpus", "H100-80GB", "--json",
                env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                     "HF_HOME": str(tmp_path / "home"), "LAUNCHER_CACHE_DIR": str(tmp_path / "c")})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"]["source"] == "hub:acme/tiny"


def _bad(*args: str, env: dict | None = None) -> str:
    p = run_cli(*args, env=env)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    return p.stderr


def test_unknown_model_suggests_profiles() -> None:
    assert "llama-3.1-8b" in _bad("estimate", "lama-3.1-8b", "--gpus", "H100-80GB")


def test_unknown_gpu_lists_catalog() -> None:
    err = _bad("estimate", "llama-3.1-8b", "--gpus", "2xH1000")
    assert "H100-80GB" in err and "RTX4090" in err


@pytest.mark.parametrize("args", [
    ("--max-model-len", "-5"), ("--gpu-memory-utilization", "1.5"),
    ("--gpu-memory-utilization", "0"), ("--tp", "0"), ("--dtype", "float12"),
    ("--kv-cache-dtype", "int3"),
])
def test_nonsense_numbers_and_names(args: tuple[str, ...]) -> None:
    _bad("estimate", "llama-3.1-8b", "--gpus", "H100-80GB", *args)


@pytest.mark.parametrize(("command", "var", "value", "flag"), [
    ("plan", "LAUNCHER_TP", "x", "--tp"),
    ("plan", "LAUNCHER_HEADROOM", "0.95", "--headroom"),
    ("plan", "LAUNCHER_ENFORCE_EAGER", "maybe", "--enforce-eager"),
    ("estimate", "LAUNCHER_MAX_NUM_SEQS", "many", "--max-num-seqs"),
    ("estimate", "LAUNCHER_DP", "0", "--dp"),
])
def test_bad_environment_value_names_the_variable_and_the_flag(command: str, var: str, value: str,
                                                               flag: str) -> None:
    err = _bad(command, "deepseek-67b", "--gpus", "2xH100-80GB", env={var: value})
    assert f"{var}={value}" in err and flag in err and "fix:" in err and f"unset {var}" in err


def test_bad_flag_value_names_the_flag_and_the_variable() -> None:
    err = _bad("plan", "deepseek-67b", "--gpus", "2xH100-80GB", "--objective", "cheapest")
    assert "--objective 'cheapest'" in err and "LAUNCHER_OBJECTIVE" in err and "latency" in err


def test_no_model_exits_2_naming_launcher_model() -> None:
    assert "LAUNCHER_MODEL" in _bad("plan", "--gpus", "2xH100-80GB")


def test_malformed_config_names_file_and_field(tmp_path: Path) -> None:
    d = _write_model(tmp_path / "broken", {"model_type": "llama", "hidden_size": 64})
    err = _bad("estimate", str(d), "--gpus", "H100-80GB")
    assert "config.json" in err and "num_hidden_layers" in err


def test_invalid_json_config(tmp_path: Path) -> None:
    d = tmp_path / "garbled"
    d.mkdir()
    (d / "config.json").write_text("{not json")
    assert "not valid JSON" in _bad("estimate", str(d), "--gpus", "H100-80GB")


def test_truncated_safetensors(tmp_path: Path) -> None:
    d = _write_model(tmp_path / "trunc", json.loads(
        (CONFIGS / "qwen--qwen2-5-7b-instruct.json").read_text()))
    save_file({"w": np.zeros((64, 64), np.float16)}, d / "model.safetensors")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-100])
    assert "model.safetensors" in _bad("estimate", str(d), "--gpus", "H100-80GB")


def test_corrupt_safetensors_header(tmp_path: Path) -> None:
    d = _write_model(tmp_path / "corrupt", json.loads(
        (CONFIGS / "qwen--qwen2-5-7b-instruct.json").read_text()))
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not-json!!")
    assert "model.safetensors" in _bad("estimate", str(d), "--gpus", "H100-80GB")


def test_unknown_quantization_in_config(tmp_path: Path) -> None:
    cfg = json.loads((CONFIGS / "qwen--qwen2-5-7b-instruct.json").read_text())
    cfg["quantization_config"] = {"quant_method": "magic4"}
    d = _write_model(tmp_path / "q", cfg)
    assert "magic4" in _bad("estimate", str(d), "--gpus", "H100-80GB")


def test_uncalibrated_engine_version() -> None:
    assert "not calibrated" in _bad("estimate", "llama-3.1-8b", "--gpus", "H100-80GB",
                                    "--engine-version", "0.4.0")
