"""GPU catalog: entries are sourced and consistent, specs parse, simulated GPUs look idle."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CALIBRATION
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.errors import InputError, UnknownGpuError
from launcher.hardware.catalog import (
    PRECISIONS,
    catalog_path,
    find_gpu,
    load_catalog,
    normalize_name,
    parse_catalog,
    parse_gpu_spec,
    simulated_inventory,
)
from launcher.paths import profiles_dir
from launcher.units import GiB, MiB

MEMORY_REPORTS = CALIBRATION / "vllm-memory-reports.csv"
REQUIRED = ["T4", "A10", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-80GB",
            "H100-94GB", "H200", "H20", "B200", "RTX3090", "RTX4090", "RTX5090",
            "RTX-A5000", "RTX-A6000", "RTX-6000-Ada", "RTX-PRO-6000", "L40", "H800",
            "GH200-96GB", "GH200-144GB", "B300", "GB200", "GB300", "GB10"]
DISCRETE = [n for n in REQUIRED if n != "GB10"]  # GB10 has no memory of its own


def test_profiles_dir_holds_the_catalog() -> None:
    assert (profiles_dir() / "gpus.yaml").is_file()


def test_catalog_has_every_required_gpu_with_a_source() -> None:
    catalog = load_catalog()
    assert set(REQUIRED) <= set(catalog)
    for gpu in catalog.values():
        assert len(gpu.source) > 40, gpu.name


def test_catalog_load_is_cached() -> None:
    assert load_catalog() is load_catalog()


@pytest.mark.parametrize("name", DISCRETE)
def test_reserved_memory_is_plausible(name: str) -> None:
    """CUDA total = NVML total − driver-reserved memory; the reserved part is a few hundred MiB
    on every recorded GPU (up to ~1.1 GiB on Grace superchips with recent drivers: GH200 94.50 of
    95.58 GiB, GB300 276.50 of 277.55 GiB), so a typo (GB vs GiB, MB vs MiB) shows up here."""
    gpu = load_catalog()[name]
    assert gpu.nvml_total_mib is not None and not gpu.unified_memory
    assert 200 * MiB <= gpu.reserved_bytes <= 1200 * MiB, gpu.reserved_bytes / MiB


def test_unified_gpu_has_no_nvml_total_and_says_why() -> None:
    gb10 = load_catalog()["GB10"]
    assert gb10.unified_memory and gb10.nvml_total_mib is None and gb10.reserved_bytes is None
    assert gb10.total_bytes == 127600748 * 1024  # MemTotal of the recorded DGX Spark
    assert "NOT_SUPPORTED" in gb10.source and gb10.compute_capability == (12, 1)
    assert [g.name for g in load_catalog().values() if g.unified_memory] == ["GB10"]


@pytest.mark.parametrize("name", REQUIRED)
def test_every_gpu_has_cited_tensor_peaks_and_a_host_link(name: str) -> None:
    """Dense tensor peaks: bf16 ≤ fp16-class rates never exceed fp8, fp8 never exceeds fp4, and a
    data-center part is far above a consumer one, so a sparse figure copied unhalved or a
    PFLOPS/TFLOPS slip shows up."""
    gpu = load_catalog()[name]
    t = gpu.tensor_tflops
    assert t is not None and gpu.tensor_source and len(gpu.tensor_source) > 40
    assert set(t.values) | t.unsupported | t.unknown == set(PRECISIONS)
    rates = [t.peak(p) for p in ("fp16", "fp8", "fp4")]
    known = [r for r in rates if r is not None]
    assert known == sorted(known), (name, rates)
    assert all(10 <= r <= 20000 for r in t.values.values()), t.values
    if t.peak("fp16") is not None and t.peak("bf16") is not None:
        assert t.peak("fp16") == t.peak("bf16")
    if gpu.compute_capability < (8, 9):
        assert t.supports("fp8") is False and t.supports("fp4") is False
    # PCIe Gen3..Gen6 x16, NVLink-C2C per direction; GB10: its ConnectX-7 port (no host link)
    assert gpu.pcie_gbps in ((25,) if gpu.unified_memory else (16, 32, 64, 128, 450))


def test_sparse_figures_are_halved_against_known_dense_peaks() -> None:
    c = load_catalog()
    assert c["H100-80GB"].tensor_tflops.peak("bf16") == 989.5  # datasheet 1,979 with sparsity
    assert c["B200"].tensor_tflops.peak("fp4") == 9000  # HGX B200 144 PF / 8 GPUs / 2
    assert c["GB300"].tensor_tflops.peak("fp4") == 15000  # NVL72 1,080 PF dense / 72
    assert c["A10G"].tensor_source.startswith("DERIVED")  # no datasheet: said so


def test_h100_matches_the_design_figures() -> None:
    h100 = load_catalog()["H100-80GB"]
    assert h100.nvml_total_bytes == 85520809984  # 81559 MiB
    assert f"{h100.total_bytes / GiB:.2f}" == "79.19"  # vLLM 0.19 logs on the calibration box
    assert h100.compute_capability == (9, 0)
    assert h100.interconnect == "nvlink"


def _calibration_totals() -> dict[str, list[float]]:
    totals: dict[str, list[float]] = {}
    with MEMORY_REPORTS.open(newline="") as f:
        for row in csv.DictReader(f):
            if not row["gpu_total_gib"]:
                continue
            label = row["gpu"].split("(")[0].strip()
            gpu = find_gpu(label)
            if gpu is not None:
                totals.setdefault(gpu.name, []).append(float(row["gpu_total_gib"]))
    return totals


def test_catalog_totals_agree_with_real_vllm_reports() -> None:
    """Each catalog total is within 0.1 GiB of some vLLM-reported total for that GPU."""
    totals = _calibration_totals()
    assert {"H100-80GB", "A100-40GB", "RTX3090", "A10"} <= set(totals)
    for name, seen in totals.items():
        ours = load_catalog()[name].total_bytes / GiB
        assert min(abs(ours - s) for s in seen) <= 0.1, (name, ours, seen)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2xH100-80GB", [("H100-80GB", 2)]),
        ("H100-80GB", [("H100-80GB", 1)]),
        ("8xA100-40GB", [("A100-40GB", 8)]),
        ("4xL4", [("L4", 4)]),
        ("1xRTX4090", [("RTX4090", 1)]),
        ("RTX4090", [("RTX4090", 1)]),
        ("2x H100", [("H100-80GB", 2)]),
        ("2X h100-sxm", [("H100-80GB", 2)]),
        ("4×H200", [("H200", 4)]),
        ("NVIDIA H100 80GB HBM3", [("H100-80GB", 1)]),
        ("2xH100 NVL", [("H100-94GB", 2)]),
        ("2xH100-80GB, 4xL4", [("H100-80GB", 2), ("L4", 4)]),
        ("1xRTX-PRO-6000", [("RTX-PRO-6000", 1)]),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", [("RTX-PRO-6000", 1)]),
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", [("RTX-PRO-6000", 1)]),
        ("NVIDIA GB10", [("GB10", 1)]),
        ("1xDGX Spark", [("GB10", 1)]),
        ("8xNVIDIA H800", [("H800", 8)]),
        ("8xNVIDIA B200", [("B200", 8)]),
        ("NVIDIA B300 SXM6 AC", [("B300", 1)]),
        ("4xNVIDIA GB200", [("GB200", 4)]),
        ("NVIDIA GB300", [("GB300", 1)]),
        ("NVIDIA GH200 480GB", [("GH200-96GB", 1)]),
        ("NVIDIA GH200 144G HBM3e", [("GH200-144GB", 1)]),
        ("2xNVIDIA RTX A6000", [("RTX-A6000", 2)]),
        ("NVIDIA RTX A5000", [("RTX-A5000", 1)]),
        ("NVIDIA RTX 6000 Ada Generation", [("RTX-6000-Ada", 1)]),
        ("NVIDIA L40", [("L40", 1)]),
    ],
)
def test_parse_gpu_spec(spec: str, expected: list[tuple[str, int]]) -> None:
    assert [(r.gpu.name, r.count) for r in parse_gpu_spec(spec)] == expected


@pytest.mark.parametrize("spec", ["0xH100", "-1xH100", "twoxH100", "2.5xH100", "", " ", "2xL4,"])
def test_bad_count_or_empty_is_input_error(spec: str) -> None:
    with pytest.raises(InputError) as err:
        parse_gpu_spec(spec)
    assert not isinstance(err.value, UnknownGpuError)
    assert err.value.exit_code == 2


def test_unknown_gpu_lists_catalog_and_closest() -> None:
    with pytest.raises(UnknownGpuError) as err:
        parse_gpu_spec("2xA100")
    msg = err.value.message
    assert "A100-40GB, A100-80GB" in msg.split("Known:")[0]  # closest first
    assert all(name in msg.split("Known:")[1] for name in REQUIRED)
    assert err.value.exit_code == 2 and err.value.hint


def test_normalize_name_ignores_vendor_and_punctuation() -> None:
    assert normalize_name("NVIDIA GeForce RTX 4090") == normalize_name("rtx-4090") == "rtx4090"


def test_simulated_inventory_is_idle_and_numbered() -> None:
    inv = simulated_inventory("2xH100-80GB,3xH100-NVL,1xL4")
    assert inv.source == "simulated:2xH100-80GB,3xH100-94GB,1xL4"
    assert [g.index for g in inv.gpus] == list(range(6))
    for g in inv.gpus:
        assert g.simulated and g.free_bytes == g.total_bytes and g.used_bytes == 0
        assert g.other_used_bytes == 0
        assert g.total_bytes == load_catalog()[g.catalog_name].total_bytes
    # NVSwitch group: all-to-all; NVL bridge pairs: (2,3) and a lone 4; PCIe L4: none.
    assert [g.nvlink_peers for g in inv.gpus] == [(1,), (0,), (3,), (2,), (), ()]
    assert inv.host is None and inv.driver_version is None


def test_simulated_inventory_flags_derived_totals() -> None:
    inv = simulated_inventory("2xH20")
    assert any("DERIVED" in a for a in inv.assumptions)
    assert not any("DERIVED" in a for a in simulated_inventory("1xL4").assumptions)


# ---- the catalog parser against broken input (hypothesis) ---------------------------------
def _document() -> dict[str, Any]:
    return yaml.safe_load(catalog_path().read_text(encoding="utf-8"))


_DOC = _document()
_BAD_RATES = st.one_of(
    st.booleans(), st.text(max_size=5), st.just(float("nan")), st.just(float("inf")),
    st.floats(max_value=0, allow_nan=False), st.integers(max_value=0),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=1),
)


def _broken(name: str, key: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_DOC)
    doc["gpus"][name][key] = value
    return doc


def _error_field(doc: dict[str, Any]) -> str:
    with pytest.raises(InputError) as err:
        parse_catalog(doc, Path("gpus.yaml"))
    assert err.value.exit_code == 2
    return err.value.message.split("field ", 1)[1].split(":", 1)[0]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(REQUIRED), precision=st.sampled_from(PRECISIONS), bad=_BAD_RATES)
def test_bad_tensor_peak_names_its_field(name: str, precision: str, bad: Any) -> None:
    tensor = dict(_DOC["gpus"][name]["tensor_tflops"])
    tensor[precision] = bad
    field = _error_field(_broken(name, "tensor_tflops", tensor))
    assert field == f"gpus.{name}.tensor_tflops.{precision}"


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(REQUIRED),
       key=st.text(st.characters(blacklist_characters=":"), min_size=1, max_size=6)
       .filter(lambda k: k not in PRECISIONS))
def test_unknown_precision_names_its_field(name: str, key: str) -> None:
    tensor = {**_DOC["gpus"][name]["tensor_tflops"], key: 1.0}
    assert _error_field(_broken(name, "tensor_tflops", tensor)) == \
        f"gpus.{name}.tensor_tflops.{key}"


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(REQUIRED), bad=_BAD_RATES)
def test_bad_pcie_rate_names_its_field(name: str, bad: Any) -> None:
    assert _error_field(_broken(name, "pcie_gbps", bad)) == f"gpus.{name}.pcie_gbps"


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(REQUIRED),
       bad=st.one_of(st.integers(), st.text(max_size=4), st.lists(st.booleans(), max_size=1),
                     st.floats(allow_nan=False)))
def test_bad_tensor_mapping_or_unified_flag_names_its_field(name: str, bad: Any) -> None:
    if not isinstance(bad, bool):
        assert _error_field(_broken(name, "tensor_tflops", bad)) == f"gpus.{name}.tensor_tflops"
        assert _error_field(_broken(name, "unified_memory", bad)) == \
            f"gpus.{name}.unified_memory"


@pytest.mark.parametrize("source", [None, "", "  "])
def test_tensor_peaks_need_a_citation(source: Any) -> None:
    assert _error_field(_broken("H100-80GB", "tensor_source", source)) == \
        "gpus.H100-80GB.tensor_source"


def test_entries_without_speed_fields_still_load() -> None:
    """An older catalog (before tensor_tflops, pcie_gbps, unified_memory) parses, with None."""
    doc = copy.deepcopy(_DOC)
    for entry in doc["gpus"].values():
        for key in ("tensor_tflops", "tensor_source", "pcie_gbps", "unified_memory"):
            entry.pop(key, None)
    old = parse_catalog(doc, Path("gpus.yaml"))
    assert all(g.tensor_tflops is None and g.pcie_gbps is None and not g.unified_memory
               for g in old.values())
    assert {n: g.total_bytes for n, g in old.items()} == \
        {n: g.total_bytes for n, g in load_catalog().items()}


@settings(max_examples=40, deadline=None)
@given(peaks=st.fixed_dictionaries({}, optional={
    p: st.one_of(st.none(), st.floats(min_value=0.5, max_value=1e5, allow_nan=False))
    for p in PRECISIONS}))
def test_any_valid_peak_table_parses_with_three_states(peaks: dict[str, Any]) -> None:
    t = parse_catalog(_broken("L4", "tensor_tflops", peaks), Path("gpus.yaml"))["L4"].tensor_tflops
    assert t is not None
    for p in PRECISIONS:
        if p not in peaks:
            assert t.supports(p) is None and t.peak(p) is None
        elif peaks[p] is None:
            assert t.supports(p) is False and t.peak(p) is None
        else:
            assert t.supports(p) is True and math.isclose(t.peak(p), peaks[p])
