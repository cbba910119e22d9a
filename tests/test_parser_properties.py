"""Every parser of outside input, under broken values: exit 2 naming the field, fast, or a result.

Outside input is config.json (a local directory, a profile, the Hub), safetensors headers and
their index, inventory snapshots (`--inventory-file`), passthrough engine flags
(`--engine-args`) and LAUNCHER_* variables. Broken means NaN, inf, zero and negative sizes,
a layer count of 2**62, huge and deeply nested lists, a list where a number belongs, strings,
wrong types, truncated or garbage headers and length fields that lie. The answer is either a
result or an `InputError` (exit 2) that names the file and the field, within a second of CPU,
never a traceback, a hang or a MemoryError. Fuzzing runs both on the parsers and through the
CLI in-process (`launcher plan DIR --gpus 1xH100-80GB`), so a value that parses but breaks the
memory model later is caught too.

Per-value property tests of config.json fields one level down are in test_config_golden.py;
the planner's properties over valid models in test_planner_properties.py.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from launcher import options
from launcher.cli import main
from launcher.engines.vllm import merge_engine_args
from launcher.errors import CheckpointError, InputError, ModelConfigError
from launcher.hardware.inventory import HostInfo, Inventory
from launcher.hardware.nvml import RawSystem, build_inventory
from launcher.models.config import known_model_type, spec_from_config
from launcher.models.fields import MAX_LAYERS
from launcher.models.resolve import spec_from_dir
from launcher.models.safetensors_meta import read_checkpoint, read_header
from launcher.planner.plan import EngineCommand

CPU_LIMIT = 1.0  # seconds of this process's CPU for an answer to bad input
FIXTURES = {p.stem: json.loads(p.read_text()) for p in sorted(CONFIGS.glob("*.json"))}
LLAMA = "meta-llama--llama-3-1-8b-instruct"
FAST = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- broken values ---------------------------------------------------------------------------
SPECIAL = [math.nan, math.inf, -math.inf, 0, -1, -0.0, 0.5, 1.5, 1e308, 2**62, -(2**62), 10**30,
           2**64 + 1, True, False, None, "", "x", "4096", "bfloat16", [], [1, 2], [[[[1]]]], {},
           {"a": 1}, {"factor": math.nan}]
LEAF = st.one_of(st.sampled_from(SPECIAL), st.integers(), st.floats(), st.text(max_size=6),
                 st.booleans(), st.none())
JSONISH = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=8)
# Large structures are built, not drawn: hypothesis would spend its budget shrinking them.
HUGE = st.sampled_from(["deep_list", "deep_dict", "long_list", "long_string", "many_keys"])


def huge(kind: str) -> Any:
    if kind == "deep_list":
        value: Any = 1
        for _ in range(5000):
            value = [value]
        return value
    if kind == "deep_dict":
        value = 1
        for _ in range(5000):
            value = {"a": value}
        return value
    if kind == "long_list":
        return [1] * 1_000_000
    if kind == "long_string":
        return "9" * 1_000_000
    return {str(i): i for i in range(100_000)}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and list index of a config, at any depth (the first items of long lists)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:2]):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


PATHS = {slug: paths(c) for slug, c in FIXTURES.items()}
DELETE = object()


def put(config: Any, path: tuple[Any, ...], value: Any) -> bool:
    """Set (or delete) `path`; False when an earlier mutation removed its parent."""
    target = config
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(target, dict | list) or (isinstance(target, list) and (
            not isinstance(path[-1], int) or path[-1] >= len(target))):
        return False
    if value is DELETE:
        if isinstance(target, dict):
            target.pop(path[-1], None)
        else:
            del target[path[-1]]
    else:
        target[path[-1]] = value
    return True


@st.composite
def broken_configs(draw: st.DrawFn, *, identity: bool = False) -> tuple[str, dict, set[str]]:
    """(fixture, mutated copy, the keys mutated). `identity`: model_type and architectures may
    be mutated too (a changed model_type may load transformers, which takes seconds)."""
    slug = draw(st.sampled_from(sorted(FIXTURES)), label="fixture")
    config = copy.deepcopy(FIXTURES[slug])
    choices = [p for p in PATHS[slug]
               if identity or not {"model_type", "architectures"} & set(map(str, p))]
    keys: set[str] = set()
    for _ in range(draw(st.integers(1, 3), label="mutations")):
        path = draw(st.sampled_from(choices), label="path")
        kind = draw(st.sampled_from(["value", "value", "value", "delete", "huge"]), label="kind")
        value = DELETE if kind == "delete" else huge(draw(HUGE)) if kind == "huge" \
            else draw(JSONISH, label="value")
        if put(config, path, value):
            keys.update(str(k) for k in path if isinstance(k, str))
    return slug, config, keys


def names_a_key(message: str, keys: set[str]) -> bool:
    return any(k in message for k in keys)


@contextlib.contextmanager
def cpu_clock() -> Iterator[list[float]]:
    spent: list[float] = []
    start = time.process_time()
    try:
        yield spent
    finally:
        spent.append(time.process_time() - start)


# ---- config.json -----------------------------------------------------------------------------
@FAST
@given(case=broken_configs())
def test_broken_config_is_a_spec_or_a_named_error_at_once(case: tuple[str, dict, set[str]]
                                                          ) -> None:
    slug, config, keys = case
    with cpu_clock() as spent:
        try:
            spec = spec_from_config(config, name=slug, source="t", origin=f"/m/{slug}.json")
        except InputError as e:
            event("error")
            assert e.exit_code == 2 and f"/m/{slug}.json" in e.message
            assert names_a_key(e.message, keys) or "model_type" in e.message, (keys, e.message)
            spec = None
    assert spent[0] < CPU_LIMIT
    if spec is not None:
        event("spec")
        assert len(spec.layer_kinds()) == spec.num_layers <= MAX_LAYERS
        json.dumps(spec.to_dict(), allow_nan=False)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=broken_configs(identity=True))
def test_a_broken_identity_is_read_or_refused_naming_it(case: tuple[str, dict, set[str]]) -> None:
    slug, config, _keys = case
    try:
        spec_from_config(config, name=slug, source="t", origin=f"/m/{slug}.json")
    except InputError as e:
        assert e.exit_code == 2 and f"/m/{slug}.json" in e.message


@pytest.mark.parametrize(("key", "value"), [
    ("num_hidden_layers", MAX_LAYERS + 1), ("num_hidden_layers", 10_000),
    ("num_hidden_layers", 2**62), ("layer_types", ["full_attention"] * 10**6),
    ("num_attention_heads", [[[[[[[[[[32]]]]]]]]]]), ("rope_scaling", {"factor": [8.0] * 10**6}),
])
def test_values_that_made_the_memory_model_explode_are_refused_at_once(key: str,
                                                                       value: Any) -> None:
    config = dict(FIXTURES[LLAMA], **{key: value})
    with cpu_clock() as spent, pytest.raises(ModelConfigError) as e:
        spec_from_config(config, name="x", source="t", origin="/m/config.json")
    assert spent[0] < CPU_LIMIT and key in e.value.message and len(e.value.message) < 500


# ---- the CLI in-process: parse, then plan -----------------------------------------------------
def cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`launcher ARGV` in this process: (exit code, stdout, stderr). Anything but SystemExit
    (a traceback) propagates and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
                code = 0
            except SystemExit as e:
                code = int(e.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Load the profiles, the GPU catalog and the engine table once, outside the timings."""
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("LAUNCHER_CACHE_DIR", d)
        cli("plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--json")


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=broken_configs(), gpus=st.sampled_from(["1xH100-80GB", "8xH100-80GB", "1xL4"]))
def test_plan_of_a_broken_model_dir_exits_0_2_or_3_never_a_traceback(
        case: tuple[str, dict, set[str]], gpus: str) -> None:
    _slug, config, keys = case
    with tempfile.TemporaryDirectory() as d:
        try:
            text = json.dumps(config)
        except (ValueError, RecursionError):  # nesting json.dumps refuses: written by hand
            text = "[" * 5000 + "]" * 5000
        (Path(d) / "config.json").write_text(text)
        with cpu_clock() as spent:
            code, out, err = cli("plan", d, "--gpus", gpus, "--json")
    assert code in (0, 2, 3), err
    if code == 2:
        event("exit 2")
        assert "config.json" in err and (names_a_key(err, keys) or "JSON" in err), err
        assert spent[0] < CPU_LIMIT
    else:
        event(f"exit {code}")
        assert json.loads(out)["feasible"] is (code == 0)


def test_deep_or_huge_config_file_is_exit_2(tmp_path: Path) -> None:
    for text in ("[" * 100_000, '{"a": ' + "9" * 5000 + "}", '{"hidden_size": 1e999}'):
        (tmp_path / "config.json").write_text(text)
        with cpu_clock() as spent:
            code, _, err = cli("plan", str(tmp_path), "--gpus", "1xH100-80GB")
        assert code == 2 and "config.json" in err and spent[0] < CPU_LIMIT, err
    with (tmp_path / "config.json").open("wb") as f:  # 17 MB of whitespace: not read at all
        f.truncate(17 * 1024 * 1024)
    code, _, err = cli("plan", str(tmp_path), "--gpus", "1xH100-80GB")
    assert code == 2 and "bytes" in err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_config_or_snapshot_that_never_ends_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.json").symlink_to("/dev/zero")
    with cpu_clock() as spent:
        code, _, err = cli("plan", str(tmp_path), "--gpus", "1xH100-80GB")
        assert code == 2 and "not a regular file" in err, err
        code, _, err = cli("plan", "llama-3.1-8b", "--inventory-file", "/dev/zero")
        assert code == 2 and "not a regular file" in err, err
    assert spent[0] < 2 * CPU_LIMIT


# ---- safetensors headers and the index ---------------------------------------------------------
def _tensor_file(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


ENTRY_VALUES = st.one_of(LEAF, st.lists(LEAF, max_size=3),
                         st.sampled_from([["BF16"], [2**64, 2**64], [1] * 100, [-1, 2], [0, 2],
                                          [2, 0], [[1]], {"a": 1}, "F4", "BF16", [3]]))


@st.composite
def broken_headers(draw: st.DrawFn) -> tuple[bytes, bytes, int | None]:
    """(header bytes, data, a length field that may lie): a valid two-tensor header with
    mutated entries, or garbage."""
    header: dict[str, Any] = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
    }
    data = bytes(12)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["__metadata__", "a", "b", "c"]))
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets", None]))
        if key is None:
            header[name] = draw(ENTRY_VALUES)
        elif isinstance(header.get(name), dict):
            header[name][key] = draw(ENTRY_VALUES)
    raw = draw(st.sampled_from(["json", "json", "truncated", "garbage", "deep"]))
    try:
        body = json.dumps(header).encode()
    except ValueError:
        body = b"{}"
    if raw == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif raw == "garbage":
        body = draw(st.binary(max_size=64))
    elif raw == "deep":
        body = b"[" * 100_000 + b"]" * 100_000
    length = draw(st.sampled_from([None, None, 0, 1, 2**63, 2**64 - 1, len(body) + 1,
                                   max(0, len(body) - 1), 100 * 1024 * 1024 + 1]))
    data = data[: draw(st.integers(0, len(data)))]
    return body, data, length


@FAST
@given(case=broken_headers())
def test_broken_safetensors_header_is_tensors_or_a_checkpoint_error(
        case: tuple[bytes, bytes, int | None]) -> None:
    body, data, length = case
    with tempfile.TemporaryDirectory() as d:
        path = _tensor_file(Path(d) / "model.safetensors", body, data, length)
        with cpu_clock() as spent:
            try:
                tensors = read_header(path)
            except CheckpointError as e:
                event("error")
                assert e.exit_code == 2 and str(path) in e.message and len(e.message) < 1000
                tensors = None
    assert spent[0] < CPU_LIMIT
    if tensors is not None:  # a valid header: every tensor fits in the data it declares
        event("tensors")
        assert sum(t.nbytes for t in tensors) <= len(data)


@pytest.mark.parametrize("header", [
    b'{"a": {"dtype": ["BF16"], "shape": [1], "data_offsets": [0, 2]}}',  # unhashable dtype
    b'{"a": {"dtype": "BF16", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 2]}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": {"dtype": "BF16", "shape": [' + b"1," * 100 + b'1], "data_offsets": [0, 2]}}',
    b'{"a": {"dtype": "F64", "shape": [' + b"4294967296," * 63 + b'1], "data_offsets": [0, 8]}}',
    b'{"__metadata__": [1], "a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}',
    b"{}"[:1],
])
def test_headers_that_gave_a_traceback_are_checkpoint_errors(tmp_path: Path,
                                                             header: bytes) -> None:
    path = _tensor_file(tmp_path / "model.safetensors", header, bytes(8))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        read_header(path)


@FAST
@given(weight_map=st.one_of(JSONISH, st.dictionaries(st.text(max_size=4), LEAF, max_size=3),
                            st.sampled_from([{"a": "../config.json"}, {"a": "/etc/passwd"},
                                             {"a": "."}, {"a": ".."}, {"a": "x\x00y"},
                                             {"a": "sub/model.safetensors"}, {"a": 5}])))
def test_broken_index_is_a_checkpoint_error(weight_map: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        index = Path(d) / "model.safetensors.index.json"
        index.write_text(json.dumps({"weight_map": weight_map}))
        try:
            tensors = read_checkpoint(Path(d))
        except CheckpointError as e:
            assert e.exit_code == 2
            assert "index" in e.message or "lacks shard" in e.message
            return
    assert tensors is None  # an empty weight map lists no shard


def test_shard_names_claiming_millions_of_shards_are_refused_at_once(tmp_path: Path) -> None:
    _tensor_file(tmp_path / "model-00001-of-99999999999.safetensors", b"{}")
    with cpu_clock() as spent, pytest.raises(CheckpointError, match="99999999999"):
        read_checkpoint(tmp_path)
    assert spent[0] < CPU_LIMIT


def test_unreadable_index_is_a_checkpoint_error(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    for text in ("[" * 100_000, '{"weight_map": {"a": ' + "9" * 5000 + "}}"):
        index.write_text(text)
        with pytest.raises(CheckpointError, match="index"):
            read_checkpoint(tmp_path)


# ---- inventory snapshots -------------------------------------------------------------------------
def _snapshot() -> dict[str, Any]:
    data = Path(__file__).parent / "data" / "nvml" / "h100x2-raw.json"
    raw = RawSystem.from_dict(json.loads(data.read_text()))
    inv = build_inventory(raw, {}, host=HostInfo(2 * 1024**4, 1900 * 1024**3, 192),
                          captured_at="2024-11-14T07:00:14+00:00")
    return inv.to_dict()


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


SNAPSHOT = _snapshot()
SNAPSHOT_PATHS = paths(SNAPSHOT)
SNAPSHOT_LEAVES = [p for p in SNAPSHOT_PATHS if p[-1] != "format"
                   and not isinstance(_get(SNAPSHOT, p), dict | list)]
# Half broken, half plausible-but-extreme, so that some snapshots load and reach the planner.
INVENTORY_VALUES = st.one_of(
    LEAF, st.sampled_from([2**50 + 1, 2**200, [0, 0], [99, 99], [10**9, 0], [9], 1e308]),
    st.sampled_from([0, 1, 2, 1024, 2**30, 2**40, 2**50, 80 * 2**30, None, "x", 0.0, 1e6]))


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_broken_snapshot_is_an_inventory_or_an_error_naming_the_field(data: st.DataObject) -> None:
    snapshot = copy.deepcopy(SNAPSHOT)
    changed: list[str] = []
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(SNAPSHOT_LEAVES if data.draw(st.integers(0, 4))
                                         else SNAPSHOT_PATHS))
        value = DELETE if data.draw(st.booleans()) and data.draw(st.booleans()) \
            else data.draw(INVENTORY_VALUES)
        if put(snapshot, path, value):
            changed.append(str(path[0]))
    with cpu_clock() as spent:
        try:
            inv = Inventory.from_dict(snapshot, origin="/x/inv.json")
        except InputError as e:
            event("error")
            assert e.exit_code == 2 and "/x/inv.json" in e.message
            assert "field " in e.message and len(e.message) < 600
            inv = None
    assert spent[0] < CPU_LIMIT
    if inv is None:
        return
    event("inventory")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "inv.json"
        path.write_text(inv.to_json())
        device = data.draw(st.sampled_from(["auto", "cpu"]))
        code, _, err = cli("plan", "llama-3.1-8b", "--inventory-file", str(path),
                             "--device", device, "--json")
    assert code in (0, 2, 3), err


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe{}", b'{"a": ' + b"9" * 5000 + b"}"])
def test_unreadable_snapshot_file_is_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "inv.json"
    path.write_bytes(content)
    code, _, err = cli("plan", "llama-3.1-8b", "--inventory-file", str(path))
    assert code == 2 and "inv.json" in err, err


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d["gpus"][0].update(total_bytes=0), "gpus[0].total_bytes"),
    (lambda d: d["gpus"][0].update(total_bytes=2**200), "gpus[0].total_bytes"),
    (lambda d: d["gpus"][0].update(memory_bandwidth_gbps=math.nan),
     "gpus[0].memory_bandwidth_gbps"),
    (lambda d: d["gpus"][0].update(compute_capability=[10**9, 0]),
     "gpus[0].compute_capability"),
    (lambda d: d.update(gpus=[dict(d["gpus"][0], index=i) for i in range(5000)]), "gpus"),
    (lambda d: d["host"].update(available_ram_bytes=d["host"]["total_ram_bytes"] + 1),
     "host.available_ram_bytes"),
])
def test_snapshot_values_that_broke_the_planner_are_named(mutate: Any, field: str) -> None:
    snapshot = copy.deepcopy(SNAPSHOT)
    mutate(snapshot)
    with pytest.raises(InputError, match=re.escape(f"field {field}")):
        Inventory.from_dict(json.loads(json.dumps(snapshot)), origin="inv.json")


# ---- passthrough engine flags ----------------------------------------------------------------------
PLANNED = EngineCommand(("python", "-m", "vllm", "--model", "m", "--max-model-len", "4096",
                         "--dtype", "bfloat16"), {})
TOKENS = st.one_of(st.text(max_size=8), st.sampled_from(
    ["--seed", "1", "--max-model-len", "4096", "--max-model-len=8192", "-tp", "2", "--", "-",
     "--=", "---x", "-O3", "--block-size", "--enforce-eager", "--no-enforce-eager", "\x00",
     "--max-mod", "--served-model-name", "x" * 200_000, "--enable-prefix-caching"]))


@FAST
@given(extra=st.lists(TOKENS, max_size=6))
def test_engine_args_merge_or_are_refused_with_a_reason(extra: list[str]) -> None:
    try:
        cmd = merge_engine_args(PLANNED, extra)
    except ValueError as e:
        assert str(e)
        return
    added = cmd.argv[len(PLANNED.argv):]
    assert all("\x00" not in a for a in added)
    assert not {"--", "-"} & set(added)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(extra=st.lists(TOKENS.filter(lambda t: len(t) < 100), max_size=4))
def test_engine_args_from_the_environment_exit_0_or_2_naming_the_variable(extra: list[str]
                                                                          ) -> None:
    text = " ".join(extra).replace("\x00", "")
    code, _, err = cli("plan", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--json",
                       env={"LAUNCHER_ENGINE_ARGS": text})
    assert code in (0, 2), err
    if code == 2:
        assert "LAUNCHER_ENGINE_ARGS" in err or "--engine-args" in err, err


# ---- LAUNCHER_* variables ---------------------------------------------------------------------------
ENV_OPTIONS = [o for o in options.OPTIONS if o.env_var and o.cli and not o.argument
               and o.kind not in ("text", "path")]
ENV_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(
    ["nan", "inf", "-inf", "1e308", "1e999", "-1", "0", "1" + "0" * 30, "9" * 5000, "١٢", "1_0",
     "0x10", "+4", " 2 ", "auto", "AUTO", "yes", "[1]", "{}", "0.5", "1.5"]))


@FAST
@given(opt=st.sampled_from(ENV_OPTIONS), raw=ENV_TEXT,
       command=st.sampled_from(["plan", "estimate", "serve"]))
def test_env_value_parses_or_is_exit_2_naming_the_variable(opt: options.Option, raw: str,
                                                           command: str) -> None:
    if command not in opt.commands:
        return
    with cpu_clock() as spent:
        try:
            settings_ = options.settle_command(command, {}, environ={opt.env_var or "": raw})
        except InputError as e:
            assert e.exit_code == 2 and str(opt.env_var) in e.message and len(e.message) < 400
            settings_ = None
    assert spent[0] < CPU_LIMIT
    if settings_ is not None and raw.strip():
        value = settings_[opt.name].value
        assert raw.strip().isascii()
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(env=st.dictionaries(st.sampled_from(["LAUNCHER_MAX_MODEL_LEN", "LAUNCHER_MIN_CONTEXT",
                                            "LAUNCHER_MIN_CONCURRENCY", "LAUNCHER_TP",
                                            "LAUNCHER_PP", "LAUNCHER_HEADROOM",
                                            "LAUNCHER_KV_CACHE_DTYPE", "LAUNCHER_QUANTIZATION",
                                            "LAUNCHER_DEVICE", "LAUNCHER_OBJECTIVE",
                                            "LAUNCHER_PORT", "LAUNCHER_ENGINE_VERSION"]),
                           ENV_TEXT.filter(lambda t: "\x00" not in t), min_size=1, max_size=3))
def test_plan_with_broken_variables_exits_0_2_or_3(env: dict[str, str]) -> None:
    code, _, err = cli("plan", "qwen3-30b-a3b", "--gpus", "2xH100-80GB", "--json", env=env)
    assert code in (0, 2, 3), err
    if code == 2:
        assert any(var in err for var in env) or "LAUNCHER_" in err, err


def test_a_gpu_count_no_host_has_is_exit_2_at_once() -> None:
    with cpu_clock() as spent:
        code, _, err = cli("plan", "llama-3.1-8b", "--json", env={"LAUNCHER_GPUS":
                                                                  "5000xH100-80GB"})
    assert code == 2 and "LAUNCHER_GPUS" in err and spent[0] < CPU_LIMIT


def test_a_known_model_type_stays_on_the_fast_path() -> None:
    assert all(known_model_type(c["model_type"]) for c in FIXTURES.values())


def test_profile_dir_path_is_resolved_without_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(FIXTURES[LLAMA]))
    assert spec_from_dir(tmp_path).num_layers == FIXTURES[LLAMA]["num_hidden_layers"]
