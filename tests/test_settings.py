"""Configuration precedence (CLI > env > profile > default), passthrough flags, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from launcher.redact import redact, redact_obj, secret_flag_values
from launcher.settings import settle


def _plan(tmp: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    p = run_cli("plan", "demo", "--device", "cpu", "--json", *args,
                env={"LAUNCHER_CACHE_DIR": str(tmp), **(env or {})})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_profile_beats_default(tmp_path: Path) -> None:
    j = _plan(tmp_path)
    assert j["settings"]["min_context"] == {"value": 512, "source": "profile:demo"}
    assert j["request"]["min_context"] == 512
    assert j["settings"]["headroom"] == {"value": 0.2, "source": "default"}


def test_auto_is_a_value_and_unset_is_none(tmp_path: Path) -> None:
    j = _plan(tmp_path)
    assert j["settings"]["tp"] == {"value": "auto", "source": "default"}
    assert j["settings"]["max_model_len"] == {"value": None, "source": "default"}


def test_boolean_from_the_environment(tmp_path: Path) -> None:
    j = _plan(tmp_path, env={"LAUNCHER_ENFORCE_EAGER": "true"})
    assert j["settings"]["enforce_eager"] == {"value": True, "source": "env:LAUNCHER_ENFORCE_EAGER"}
    assert j["request"]["enforce_eager"] is True


def test_vllm_spelling_of_tp(tmp_path: Path) -> None:
    j = _plan(tmp_path, "--tensor-parallel-size", "1")
    assert j["settings"]["tp"] == {"value": 1, "source": "cli"}


def test_env_beats_profile(tmp_path: Path) -> None:
    j = _plan(tmp_path, env={"LAUNCHER_MIN_CONTEXT": "1024"})
    assert j["settings"]["min_context"] == {"value": 1024, "source": "env:LAUNCHER_MIN_CONTEXT"}
    assert j["request"]["min_context"] == 1024


def test_cli_beats_env(tmp_path: Path) -> None:
    j = _plan(tmp_path, "--min-context", "2048", env={"LAUNCHER_MIN_CONTEXT": "1024"})
    assert j["settings"]["min_context"] == {"value": 2048, "source": "cli"}
    assert j["request"]["min_context"] == 2048


def test_env_beats_default(tmp_path: Path) -> None:
    j = _plan(tmp_path, env={"LAUNCHER_HEADROOM": "0.3"})
    assert j["settings"]["headroom"] == {"value": 0.3, "source": "env:LAUNCHER_HEADROOM"}
    assert j["headroom"] == 0.3


def test_explain_prints_the_sources(tmp_path: Path) -> None:
    p = run_cli("plan", "demo", "--device", "cpu", "--explain",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path), "LAUNCHER_HEADROOM": "0.25"})
    assert p.returncode == 0, p.stderr
    assert "env:LAUNCHER_HEADROOM" in p.stdout and "profile:demo" in p.stdout


def test_model_from_the_environment(tmp_path: Path) -> None:
    p = run_cli("plan", "--device", "cpu", "--json",
                env={"LAUNCHER_CACHE_DIR": str(tmp_path), "LAUNCHER_MODEL": "demo"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"]["name"] == "demo"


def test_passthrough_flags_are_appended(tmp_path: Path) -> None:
    j = _plan(tmp_path, env={"LAUNCHER_ENGINE_ARGS": "--seed 3 --disable-log-stats"})
    argv = j["engine"]["argv"]
    assert argv[-3:] == ["--seed", "3", "--disable-log-stats"]


@pytest.mark.parametrize(("extra", "needle"), [
    ("--max-model-len 8192", "contradicts the plan (--max-model-len 4096)"),
    ("--kv-cache-memory-bytes=1", "contradicts the plan"),
    ("--block-size 16", "memory the plan does not model"),
    ("--enforce-eager", "contradicts the plan (enforce_eager False)"),
    ("'--seed", "cannot be parsed"),
])
def test_passthrough_that_contradicts_the_plan_is_an_error(tmp_path: Path, extra: str,
                                                           needle: str) -> None:
    p = run_cli("plan", "demo", "--device", "cpu", "--engine-args", extra,
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 2, p.stdout
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_passthrough_repeating_a_planned_value_is_fine(tmp_path: Path) -> None:
    j = _plan(tmp_path, "--engine-args", "--max-model-len 4096")
    assert j["engine"]["argv"].count("--max-model-len") == 1


def test_settle_layers_in_order() -> None:
    params = {"a": 1, "b": 2, "c": 3, "d": 4}
    sources = {"a": "cli", "b": "env", "c": "default", "d": "default"}
    s = settle(params, sources, {"a": 9, "b": 9, "c": 9}, "p")
    assert [(x.value, x.source) for x in s.values()] == [
        (1, "cli"), (2, "env:LAUNCHER_B"), (9, "profile:p"), (4, "default")]


def test_redaction() -> None:
    assert redact("token=abcd1234 and abcd1234", ["abcd1234"]) == "token=*** and ***"
    assert redact_obj({"k": ["x abcd1234"], "abcd1234": 1}, ["abcd1234"]) == \
        {"k": ["x ***"], "***": 1}
    assert secret_flag_values(["--api-key", "s3cr3t!", "--hf-token=tok12345"]) == \
        ["s3cr3t!", "tok12345"]
