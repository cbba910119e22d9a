"""Inventory snapshots: JSON round trip, strict loading, source precedence, rendering."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from launcher.errors import InputError
from launcher.hardware import get_inventory
from launcher.hardware.catalog import simulated_inventory
from launcher.hardware.inventory import GpuProcess, HostInfo, Inventory
from launcher.hardware.nvml import RawSystem, build_inventory
from launcher.render.hardware import inventory_table

DATA = Path(__file__).parent / "data" / "nvml"
HOST = HostInfo(total_ram_bytes=2 * 1024**4, available_ram_bytes=1900 * 1024**3, cpu_count=192)


@pytest.fixture
def recorded_inventory() -> Inventory:
    raw = RawSystem.from_dict(json.loads((DATA / "h100x2-raw.json").read_text()))
    return build_inventory(raw, {"CUDA_VISIBLE_DEVICES": "1,0"}, host=HOST,
                           captured_at="2024-11-14T07:00:14+00:00")


def _write(tmp_path: Path, data: object, name: str = "inv.json") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_recorded_snapshot_round_trips_exactly(recorded_inventory: Inventory,
                                               tmp_path: Path) -> None:
    p = _write(tmp_path, recorded_inventory.to_json())
    loaded = Inventory.load(p)
    assert loaded == recorded_inventory
    assert loaded.to_json() == recorded_inventory.to_json()


def test_round_trip_keeps_processes_and_unknown_fields(recorded_inventory: Inventory,
                                                       tmp_path: Path) -> None:
    """Processes with and without a reported size, MIG unknown, no host."""
    g = replace(recorded_inventory.gpus[0], mig_mode=None, processes=(
        GpuProcess(pid=4242, name="python", used_bytes=512 * 1024**2),
        GpuProcess(pid=77, name=None, used_bytes=None),
    ))
    inv = replace(recorded_inventory, gpus=(g,), host=None)
    assert Inventory.load(_write(tmp_path, inv.to_json())) == inv


def test_simulated_snapshot_round_trips(tmp_path: Path) -> None:
    inv = simulated_inventory("2xH100-NVL,1xL4", host=HOST)
    assert Inventory.load(_write(tmp_path, inv.to_json())) == inv


def test_get_inventory_replays_file_and_labels_source(recorded_inventory: Inventory,
                                                      tmp_path: Path) -> None:
    p = _write(tmp_path, recorded_inventory.to_json())
    inv = get_inventory(inventory_file=p)
    assert inv.source == f"file:{p}"
    assert inv.gpus == recorded_inventory.gpus and inv.host == HOST


def test_get_inventory_simulated() -> None:
    inv = get_inventory(gpus="2xH100-80GB")
    assert inv.source == "simulated:2xH100-80GB" and len(inv.gpus) == 2


def test_gpus_and_inventory_file_together_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        get_inventory(gpus="2xH100-80GB", inventory_file=tmp_path / "x.json")
    assert err.value.exit_code == 2 and "--inventory-file" in err.value.message


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda d: d["gpus"][0].pop("total_bytes"), "gpus[0].total_bytes", "missing"),
        (lambda d: d["gpus"][1].update(total_bytes="79 GiB"), "gpus[1].total_bytes",
         "expected int"),
        (lambda d: d["gpus"][0].update(used_bytes=True), "gpus[0].used_bytes", "expected int"),
        (lambda d: d["gpus"][0].update(free_bytes=-1), "gpus[0].free_bytes", "≥ 0"),
        (lambda d: d["gpus"][0].update(compute_capability=[9]), "gpus[0].compute_capability",
         "major, minor"),
        (lambda d: d["gpus"][0]["processes"].append({"pid": 1, "name": None}),
         "gpus[0].processes[0].used_bytes", "missing"),
        (lambda d: d["gpus"][1].update(index=0), "gpus", "duplicate"),
        (lambda d: d["host"].update(cpu_count=1.5), "host.cpu_count", "expected int"),
        (lambda d: d.update(format="nvidia-smi"), "format", "launcher-inventory/1"),
        (lambda d: d.pop("gpus"), "gpus", "missing"),
    ],
)
def test_malformed_inventory_names_file_and_field(recorded_inventory: Inventory, tmp_path: Path,
                                                  mutate, field: str, problem: str) -> None:
    data = recorded_inventory.to_dict()
    mutate(data)
    p = _write(tmp_path, data)
    with pytest.raises(InputError) as err:
        get_inventory(inventory_file=p)
    msg = err.value.message
    assert err.value.exit_code == 2
    assert str(p) in msg and f"field {field}:" in msg and problem in msg, msg


@pytest.mark.parametrize("content", ["{not json", "[]", ""])
def test_unparseable_inventory_is_input_error(tmp_path: Path, content: str) -> None:
    p = _write(tmp_path, content)
    with pytest.raises(InputError) as err:
        Inventory.load(p)
    assert str(p) in err.value.message and err.value.exit_code == 2


def test_missing_inventory_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        get_inventory(inventory_file=tmp_path / "nope.json")
    assert "nope.json" in err.value.message


def test_table_shows_cuda_visible_totals(recorded_inventory: Inventory) -> None:
    console = Console(width=200, record=True)
    console.print(inventory_table(recorded_inventory))
    text = console.export_text()
    assert "79.20" in text  # (81559 − 454) MiB, not NVML's 79.65 GiB
    assert "79.65" not in text
    assert "NVIDIA H100 80GB HBM3" in text and "9.0" in text
    assert "192 CPUs" in text and "driver 565.57.01" in text
