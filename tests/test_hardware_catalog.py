"""GPU catalog: entries are sourced and consistent, specs parse, simulated GPUs look idle."""

from __future__ import annotations

import csv

import pytest
from conftest import CALIBRATION

from launcher.errors import InputError, UnknownGpuError
from launcher.hardware.catalog import (
    find_gpu,
    load_catalog,
    normalize_name,
    parse_gpu_spec,
    simulated_inventory,
)
from launcher.paths import profiles_dir
from launcher.units import GiB, MiB

MEMORY_REPORTS = CALIBRATION / "vllm-memory-reports.csv"
REQUIRED = ["T4", "A10", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-80GB",
            "H100-94GB", "H200", "H20", "B200", "RTX3090", "RTX4090", "RTX5090"]


def test_profiles_dir_holds_the_catalog() -> None:
    assert (profiles_dir() / "gpus.yaml").is_file()


def test_catalog_has_every_required_gpu_with_a_source() -> None:
    catalog = load_catalog()
    assert set(REQUIRED) <= set(catalog)
    for gpu in catalog.values():
        assert len(gpu.source) > 40, gpu.name


def test_catalog_load_is_cached() -> None:
    assert load_catalog() is load_catalog()


@pytest.mark.parametrize("name", REQUIRED)
def test_reserved_memory_is_plausible(name: str) -> None:
    """CUDA total = NVML total − driver-reserved memory; the reserved part is a few hundred MiB
    on every recorded GPU, so a typo (GB vs GiB, MB vs MiB) shows up here."""
    gpu = load_catalog()[name]
    assert gpu.nvml_total_mib is not None
    assert 200 * MiB <= gpu.reserved_bytes <= 1024 * MiB, gpu.reserved_bytes / MiB


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
