"""The option registry: one declaration per option, and everything built from it (Typer
parameters, parsing, precedence, the core's request objects, the docs tables)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

import pytest
import typer
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from launcher import options, policy
from launcher.cli import app, serve_app
from launcher.errors import InputError
from launcher.options import BY_NAME, OPTIONS, options_for, parse, settle_command

# Every spelling the CLI accepted before the registry: Docker files, scripts and users rely on them.
FLAGS_BEFORE = {
    "gpus": {"--gpus", "--inventory-file", "--json"},
    "estimate": {"--gpus", "--inventory-file", "--tp", "--tensor-parallel-size", "--pp",
                 "--pipeline-parallel-size", "--dp", "--data-parallel-size", "--dtype",
                 "--quantization", "--kv-cache-dtype", "--max-model-len", "--max-num-seqs",
                 "--max-num-batched-tokens", "--gpu-memory-utilization", "--kv-cache-memory-bytes",
                 "--enforce-eager", "--no-enforce-eager", "--engine-version", "--json"},
    "plan": {"--gpus", "--inventory-file", "--headroom", "--max-model-len", "--min-context",
             "--min-concurrency", "--quantization", "--kv-cache-dtype", "--tp", "--pp",
             "--objective", "--engine-version", "--enforce-eager", "--no-enforce-eager",
             "--engine-python", "--host", "--port", "--device", "--engine-args", "--explain",
             "--json"},
}
FLAGS_BEFORE["serve"] = FLAGS_BEFORE["plan"] | {
    "--dry-run", "--report", "--fit-report", "--max-attempts", "--log-dir", "--ready-timeout",
    "--control-host", "--control-port", "--monitor-interval"}


def _click_params(command: str) -> dict[str, object]:
    if command == "serve":
        cmd = typer.main.get_command(serve_app)
    else:
        cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params}


# ---- the table itself -------------------------------------------------------------------------

def test_names_and_variables_are_unique_and_follow_the_rule() -> None:
    assert len(BY_NAME) == len(OPTIONS)
    for o in OPTIONS:
        assert o.env_var in (None, f"LAUNCHER_{o.name.upper()}")
        assert o.help.strip() and o.commands and set(o.commands) <= set(options.COMMANDS)
    assert BY_NAME["model"].env_var == "LAUNCHER_MODEL"
    for command in options.COMMANDS:
        flags = [f for o in options_for(command) for f in o.cli_flags]
        assert len(flags) == len(set(flags)), command


def test_defaults_come_from_policy_and_parse_as_themselves() -> None:
    assert BY_NAME["headroom"].default == policy.DEFAULT_HEADROOM
    assert BY_NAME["headroom"].maximum == policy.MAX_HEADROOM
    assert BY_NAME["min_concurrency"].default == policy.DEFAULT_MIN_CONCURRENCY
    assert str(policy.DEFAULT_MIN_CONTEXT) in str(BY_NAME["min_context"].default_doc)
    assert BY_NAME["quantization"].choices == policy.QUANTIZATION_CHOICES
    assert BY_NAME["objective"].choices == policy.OBJECTIVES
    assert BY_NAME["device"].choices == policy.DEVICE_CHOICES
    for o in OPTIONS:
        if o.default is not None and o.kind != "switch":
            assert parse(o, o.default_text, o.commands[0]) == o.default, o.name
        if o.example is not None:
            parse(o, o.example, o.commands[-1])
        if o.choices:
            assert o.default in o.choices, o.name


def test_only_options_without_a_value_of_their_own_say_what_unset_means() -> None:
    for o in OPTIONS:
        assert o.default is None or o.default_doc is None, o.name


# ---- Typer parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["gpus", "estimate", "plan", "serve"])
def test_typer_parameters_are_the_registry(command: str) -> None:
    params = _click_params(command)
    assert list(params) == [o.name for o in options_for(command)]
    flags = {f for p in params.values() if p.param_type_name == "option"  # type: ignore[attr-defined]
             for f in (*p.opts, *p.secondary_opts)}  # type: ignore[attr-defined]
    assert FLAGS_BEFORE[command] <= flags, FLAGS_BEFORE[command] - flags
    assert flags == {f for o in options_for(command) for f in o.cli_flags} | \
        {f"--no-{o.cli_flags[0][2:]}" for o in options_for(command) if o.kind == "bool"}
    for p in params.values():
        # click reads the command line only; the registry reads LAUNCHER_* itself
        assert not getattr(p, "envvar", None)
        if p.name != "model" and BY_NAME[p.name].kind != "switch":  # type: ignore[index]
            assert p.default is None, p.name  # type: ignore[attr-defined]


def test_help_names_variable_default_and_range() -> None:
    from launcher.cli import _help

    text = _help(BY_NAME["headroom"])
    assert "LAUNCHER_HEADROOM" in text and "default: 0.2" in text and "0<=x<=0.9" in text
    assert "default: the model's maximum" in _help(BY_NAME["max_model_len"])


def _run_module(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


HEAVY = ("torch", "vllm", "fastapi", "pynvml")


@pytest.mark.parametrize(("entry", "args"), [
    ("serve_main", ["--help"]),
    ("main", ["plan", "--help"]),
    ("main", ["estimate", "--help"]),
    ("serve_main", ["demo", "--dry-run", "--gpus", "2xH100-80GB", "--json"]),
])
def test_help_and_dry_run_stay_light(entry: str, args: list[str]) -> None:
    out = _run_module(
        "import sys, io, contextlib\n"
        f"from launcher.cli import {entry} as m\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        m({args!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        f"print(rc, [m for m in {HEAVY!r} if m in sys.modules])\n")
    assert out.split(" ", 1)[1].strip() == "[]", out


# ---- one parser --------------------------------------------------------------------------------

@given(st.integers(min_value=1, max_value=1 << 20))
def test_size_takes_auto_or_a_positive_number(n: int) -> None:
    for name in ("tp", "pp", "dp"):
        assert parse(BY_NAME[name], str(n), "estimate") == n
        assert parse(BY_NAME[name], f" {n} ", "plan", "env") == n
        assert parse(BY_NAME[name], "AUTO", "plan") == "auto"


@given(st.text(max_size=12))
def test_any_text_parses_or_fails_with_the_flag_and_the_variable(raw: str) -> None:
    for name in ("tp", "headroom", "max_model_len", "port", "enforce_eager", "kv_cache_dtype",
                 "engine_args", "gpu_memory_utilization"):
        o = BY_NAME[name]
        for origin in ("cli", "env"):
            try:
                parse(o, raw, "estimate" if "estimate" in o.commands else "serve", origin)
            except InputError as e:
                assert o.flag in e.message and str(o.env_var) in e.message
                assert e.fix and e.hint


@pytest.mark.parametrize(("name", "raw", "command", "needle"), [
    ("tp", "0", "plan", "is below 1"),
    ("tp", "x", "estimate", "is not auto or a whole number"),
    ("tp", "1.5", "plan", "is not auto or a whole number"),
    ("headroom", "0.95", "plan", "is outside [0, 0.9]"),
    ("headroom", "lots", "plan", "is not a number"),
    ("headroom", "nan", "plan", "is not a number"),
    ("ready_timeout", "inf", "serve", "is not a number"),
    ("gpu_memory_utilization", "0", "estimate", "is outside (0, 1]"),
    ("max_model_len", "-5", "plan", "is below 1"),
    ("port", "70000", "serve", "is outside [1, 65535]"),
    ("control_port", "-1", "serve", "is outside [0, 65535]"),
    ("ready_timeout", "0", "serve", "is not above 0"),
    ("quantization", "int3", "plan", "is not one of auto, none, fp8"),
    ("kv_cache_dtype", "fp8_e5m2", "plan", "is not auto or fp8"),
    ("dtype", "float12", "estimate", "is not one of auto, bfloat16"),
    ("enforce_eager", "maybe", "plan", "is not true or false"),
    ("engine_args", "'--seed", "plan", "cannot be parsed"),
])
def test_bad_values(name: str, raw: str, command: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        parse(BY_NAME[name], raw, command, "env")
    assert needle in err.value.message
    assert f"{BY_NAME[name].env_var}={raw}" in err.value.message
    assert BY_NAME[name].flag in err.value.message
    assert err.value.hint == f"unset {BY_NAME[name].env_var}"


@pytest.mark.parametrize(("name", "raw", "command", "value"), [
    ("kv_cache_dtype", "fp8_e5m2", "estimate", "fp8_e5m2"),
    ("quantization", "awq_marlin", "estimate", "awq_marlin"),
    ("quantization", "FP8", "plan", "fp8"),
    ("dtype", "bf16", "estimate", "bfloat16"),
    ("dtype", "Half", "estimate", "float16"),
    ("enforce_eager", "yes", "plan", True),
    ("enforce_eager", "0", "plan", False),
    ("headroom", "0", "plan", 0.0),
    ("control_port", "0", "serve", 0),
    ("engine_args", "--seed 1", "plan", "--seed 1"),
    ("gpus", "  ", "plan", None),
])
def test_good_values(name: str, raw: str, command: str, value: object) -> None:
    assert parse(BY_NAME[name], raw, command) == value


# ---- precedence: CLI > env > profile > default --------------------------------------------------

def _settle(given: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None,
            profile: Mapping[str, object] | None = None) -> dict[str, tuple[object, str]]:
    s = settle_command("plan", given or {}, env or {}, profile, "demo" if profile else None)
    return {k: (v.value, v.source) for k, v in s.items()}


def test_default() -> None:
    s = _settle()
    assert s["headroom"] == (policy.DEFAULT_HEADROOM, "default")
    assert s["max_model_len"] == (None, "default")  # not given: the planner decides
    assert s["tp"] == ("auto", "default")


def test_profile_beats_default() -> None:
    assert _settle(profile={"min_context": 512})["min_context"] == (512, "profile:demo")


def test_env_beats_profile() -> None:
    s = _settle(env={"LAUNCHER_MIN_CONTEXT": "1024"}, profile={"min_context": 512})
    assert s["min_context"] == (1024, "env:LAUNCHER_MIN_CONTEXT")


def test_cli_beats_env() -> None:
    s = _settle({"tp": "4"}, env={"LAUNCHER_TP": "2"})
    assert s["tp"] == (4, "cli")


def test_empty_variable_is_unset() -> None:
    assert _settle(env={"LAUNCHER_HEADROOM": " "})["headroom"] == (0.2, "default")


def test_bad_variable_under_a_cli_value_is_not_read() -> None:
    assert _settle({"tp": "2"}, env={"LAUNCHER_TP": "x"})["tp"] == (2, "cli")


def test_profile_values_are_parsed_and_checked() -> None:
    assert _settle(profile={"enforce_eager": True, "tp": 2})["tp"] == (2, "profile:demo")
    with pytest.raises(InputError) as err:
        _settle(profile={"min_context": "short"})
    assert "profile demo" in err.value.message and "LAUNCHER_MIN_CONTEXT" in err.value.message


def test_profile_keys_of_other_commands_are_ignored() -> None:
    s = settle_command("estimate", {}, {}, {"min_context": 512}, "demo")
    assert "min_context" not in s


def test_model_from_argument_or_variable() -> None:
    assert options.model_argument("demo", {"LAUNCHER_MODEL": "other"}) == "demo"
    assert options.model_argument(None, {"LAUNCHER_MODEL": "other"}) == "other"
    with pytest.raises(InputError, match="no model given"):
        options.model_argument(None, {})


# ---- the core's objects -------------------------------------------------------------------------

class Reads(dict):
    """A values mapping that records which settings were read."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> object:
        self.read.add(key)
        return super().__getitem__(key)


def _values(command: str, given: Mapping[str, object] | None = None) -> Reads:
    return Reads(options.values(settle_command(command, given or {}, {})))


def test_plan_and_serve_settings_all_reach_the_core() -> None:
    v = _values("serve", {"gpus": "2xH100-80GB", "tp": "2", "engine_args": "--seed 1"})
    req, target, opts = options.plan_request(v), options.target(v), options.serve_options(v)
    assert v.read == set(v), set(v) - v.read
    assert (req.tp, req.pp, req.headroom) == (2, None, policy.DEFAULT_HEADROOM)
    assert target.engine_args == ("--seed", "1") and target.gpus == "2xH100-80GB"
    assert opts.report is None and opts.control_port == 8001


def test_estimate_settings_all_reach_engine_flags() -> None:
    v = _values("estimate", {"gpus": "H100-80GB", "inventory_file": None})
    flags = options.engine_flags(v)
    v.read |= {"gpus", "inventory_file", "engine_version"}  # the inventory and the calibration
    assert v.read == set(v), set(v) - v.read
    # auto is vLLM's default for plain vLLM; auto/none quantization is no --quantization flag
    assert (flags.tensor_parallel_size, flags.pipeline_parallel_size,
            flags.data_parallel_size, flags.quantization) == (1, 1, 1, None)


def test_estimate_takes_both_kv_sizings_as_vllm_does() -> None:
    """vLLM takes --gpu-memory-utilization with --kv-cache-memory-bytes (the bytes size the
    cache, the fraction gates the start), and every GPU plan passes the pair."""
    v = _values("estimate", {"gpu_memory_utilization": "0.9", "kv_cache_memory_bytes": "1024"})
    flags = options.engine_flags(v)
    assert (flags.gpu_memory_utilization, flags.kv_cache_memory_bytes) == (0.9, 1024)


# ---- generated docs ------------------------------------------------------------------------------

def test_checked_in_tables_match_the_registry() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-docs"), "--check"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, (f"{r.stdout}{r.stderr}\nThe option tables are stale: run "
                               "scripts/gen-docs and commit README.md and docker/.")
