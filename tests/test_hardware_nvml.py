"""NVML mapping, tested on recorded real readings (tests/data/nvml/, sources inside the files).

This machine has no NVIDIA driver, so the side-effecting reader is tested for its failure: a
HardwareError (exit 6) that tells the user to plan for simulated GPUs instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.errors import HardwareError
from launcher.hardware import get_inventory
from launcher.hardware.nvml import (
    RawNvLink,
    RawSystem,
    build_inventory,
    cuda_visible_total,
    normalize_bus_id,
    nvlink_peers,
    read_inventory,
    select_visible,
)
from launcher.units import GiB, MiB

DATA = Path(__file__).parent / "data" / "nvml"
UUID0 = "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"
UUID1 = "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd"


@pytest.fixture
def recorded() -> dict:
    return json.loads((DATA / "h100x2-raw.json").read_text())


@pytest.fixture
def raw(recorded: dict) -> RawSystem:
    return RawSystem.from_dict(recorded)


def _driver_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


# ---- memory: v2 reserved → CUDA-visible total -------------------------------------------
def test_v2_reserved_is_subtracted_byte_exact() -> None:
    """Oracle Cloud H100, NVML v2 in bytes: total − reserved is what CUDA can use, and the
    reading itself obeys free + used == total − reserved."""
    r = json.loads((DATA / "h100-memory-v2-oci.json").read_text())
    t = cuda_visible_total(r["memory_total"], r["memory_reserved"])
    assert t == 85169143808
    assert r["memory_free"] + r["memory_used"] == t
    assert f"{t / GiB:.2f}" == "79.32"


def test_recorded_h100s_map_to_gpu_info(raw: RawSystem, recorded: dict) -> None:
    inv = build_inventory(raw, env={})
    assert inv.source == "nvml" and inv.driver_version == "565.57.01"
    assert inv.cuda_driver_version == "12.7"
    assert [g.uuid for g in inv.gpus] == [UUID0, UUID1]
    g = inv.gpus[0]
    assert g.nvml_total_bytes == 81559 * MiB and g.reserved_bytes == 454 * MiB
    assert g.total_bytes == (81559 - 454) * MiB
    # The CUDA total deviceQuery printed on the same machine agrees to within nvidia-smi's
    # MiB rounding: the v2 subtraction gives what CUDA (and vLLM) see.
    cuda_total = recorded["cross_check"]["cuda_total_bytes_device_query"]
    assert abs(g.total_bytes - cuda_total) < MiB
    assert g.used_bytes == g.other_used_bytes == 1 * MiB
    assert g.compute_capability == (9, 0) and g.mig_mode is False
    assert g.catalog_name == "H100-80GB" and g.memory_bandwidth_gbps == 3350
    assert g.processes == () and g.nvlink_peers == () and not g.simulated


def test_v1_fallback_keeps_nvml_total_and_says_so(raw: RawSystem) -> None:
    """Without v2, reserved is unknown and v1 `used` includes it (same reading, v1 shape)."""
    d = raw.devices[0]
    v1 = replace(d, memory_reserved=None, memory_used=d.memory_used + d.memory_reserved)
    inv = build_inventory(replace(raw, devices=(v1,)), env={})
    assert inv.gpus[0].total_bytes == 81559 * MiB and inv.gpus[0].reserved_bytes is None
    assert any("v2 memory info unavailable" in a for a in inv.assumptions)


# ---- visible devices and CUDA renumbering -----------------------------------------------
@pytest.mark.parametrize(
    ("cuda", "uuids", "note"),
    [
        (None, [UUID0, UUID1], None),
        ("1", [UUID1], None),
        ("1,0", [UUID1, UUID0], None),
        ("GPU-7c3c", [UUID1], None),
        (f"{UUID1},0", [UUID1, UUID0], None),
        ("", [], "selects no GPU"),
        ("0,5,1", [UUID0], "'5' is invalid"),
        ("1,1", [UUID1], "'1' is repeated"),
        ("GPU-", [], "invalid or ambiguous"),
        ("MIG-0e3c5f0a-1111-5a2b-8a1e-2f3c4d5e6f70,1", [UUID1], "MIG instance"),
    ],
)
def test_cuda_visible_devices(raw: RawSystem, cuda: str | None, uuids: list[str],
                              note: str | None) -> None:
    env = {} if cuda is None else {"CUDA_VISIBLE_DEVICES": cuda}
    inv = build_inventory(raw, env)
    assert [g.uuid for g in inv.gpus] == uuids
    assert [g.index for g in inv.gpus] == list(range(len(uuids)))  # renumbered from 0
    if note:
        assert any(note in a for a in inv.assumptions), inv.assumptions


@pytest.mark.parametrize(
    ("nvidia", "cuda", "uuids", "note"),
    [
        ("all", None, [UUID0, UUID1], None),
        ("void", None, [], "exposes no GPU"),
        ("none", "0", [], "exposes no GPU"),
        (UUID1, None, [UUID1], None),
        (UUID1, "0", [UUID1], None),  # CUDA indices count only what the runtime exposed
        ("1", None, [UUID1], None),  # NVML sees more than listed: not inside that container
        ("0,1", None, [UUID0, UUID1], "already applied"),
    ],
)
def test_nvidia_visible_devices(raw: RawSystem, nvidia: str, cuda: str | None,
                                uuids: list[str], note: str | None) -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": nvidia}
    if cuda is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda
    inv = build_inventory(raw, env)
    assert [g.uuid for g in inv.gpus] == uuids
    if note:
        assert any(note in a for a in inv.assumptions)


def test_mixed_models_warn_about_cuda_device_order(raw: RawSystem) -> None:
    other = replace(raw.devices[1], name="NVIDIA H100 PCIe")
    mixed = [raw.devices[0], other]
    _, notes = select_visible(mixed, None)
    assert any("CUDA_DEVICE_ORDER" in n for n in notes)
    _, notes = select_visible(mixed, None, cuda_device_order="PCI_BUS_ID")
    assert not notes


# ---- NVLink ---------------------------------------------------------------------------------
def test_bus_ids_normalize_across_nvml_spellings() -> None:
    assert normalize_bus_id("0000:2A:00.0") == normalize_bus_id("00000000:2a:00.0")


def test_nvlink_peers_direct_and_through_switch(raw: RawSystem) -> None:
    """Peer mapping rule on the recorded bus ids (the recording itself has no link data)."""
    d0, d1 = raw.devices
    direct = [replace(d0, nvlinks=(RawNvLink("0000:2A:00.0", "gpu"),)), replace(d1, nvlinks=())]
    assert nvlink_peers(direct) == {0: {1}, 1: {0}}
    switched = [replace(d, nvlinks=(RawNvLink("00000000:05:00.0", "switch"),)) for d in raw.devices]
    assert nvlink_peers(switched) == {0: {1}, 1: {0}}
    assert nvlink_peers(raw.devices) == {0: set(), 1: set()}  # null = not supported
    inv = build_inventory(replace(raw, devices=tuple(switched)), {"CUDA_VISIBLE_DEVICES": "1,0"})
    assert [g.nvlink_peers for g in inv.gpus] == [(1,), (0,)]
    inv = build_inventory(replace(raw, devices=tuple(switched)), {"CUDA_VISIBLE_DEVICES": "1"})
    assert inv.gpus[0].nvlink_peers == ()  # the peer is not visible to CUDA


# ---- the real reader on this machine ----------------------------------------------------
@pytest.mark.skipif(_driver_present(), reason="an NVIDIA driver is present on this machine")
def test_read_inventory_without_driver_is_hardware_error() -> None:
    with pytest.raises(HardwareError) as err:
        read_inventory()
    e = err.value
    assert e.exit_code == 6
    assert e.message.startswith("No NVIDIA driver found: NVML could not be loaded")
    assert "driver" in (e.fix or "") and "--gpus 2xH100-80GB" in (e.hint or "")


@pytest.mark.skipif(_driver_present(), reason="an NVIDIA driver is present on this machine")
def test_launcher_gpus_path_without_driver_is_hardware_error() -> None:
    """`launcher gpus` (no --gpus, no file) reads NVML through get_inventory()."""
    with pytest.raises(HardwareError) as err:
        get_inventory()
    assert err.value.as_dict()["exit_code"] == 6


def test_simulated_and_file_paths_never_load_pynvml(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from launcher.hardware import get_inventory\n"
        "inv = get_inventory(gpus='2xH100-80GB')\n"
        f"open({str(tmp_path / 'i.json')!r}, 'w').write(inv.to_json())\n"
        f"get_inventory(inventory_file={str(tmp_path / 'i.json')!r})\n"
        "import launcher.render.hardware\n"
        "print('pynvml' in sys.modules)\n"
    )
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                                     os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root, env=env)
    assert out.stdout.strip() == "False"


def test_only_nvml_module_imports_pynvml() -> None:
    root = Path(__file__).parents[1] / "launcher"
    importers = {p.relative_to(root).as_posix() for p in root.rglob("*.py")
                 if "import pynvml" in p.read_text()}
    assert importers == {"hardware/nvml.py"}


# ---- unified memory (DGX Spark GB10): NVML has no framebuffer -----------------------------
class _RecordedNvml:
    """The pynvml module answering from a recorded reading (tests/data/nvml/*.json).

    Constants and exception classes are pynvml's own; a call the recording has is answered with
    the recorded value or raises the recorded NVML error (built by pynvml, so it is the very
    NVMLError_NotSupported a driver produces); a call the recording lacks raises NOT_SUPPORTED,
    which the reader treats as "absent". No behaviour of ours is imitated here.
    """

    def __init__(self, device: dict, errors: dict[str, str], memory: dict | None = None) -> None:
        import pynvml

        self._real, self._device, self._errors, self._memory = pynvml, device, errors, memory

    def __getattr__(self, attr: str):
        value = getattr(self._real, attr)
        if not attr.startswith("nvml") or attr.startswith("nvmlMemory"):
            return value  # constants, exception classes, struct versions

        def unrecorded(*_a, **_k):
            raise self._real.NVMLError(self._real.NVML_ERROR_NOT_SUPPORTED)
        return unrecorded

    def _raise_if_recorded(self, call: str) -> None:
        if call in self._errors:
            raise self._real.NVMLError(getattr(self._real, self._errors[call]))

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._device["name"]

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        major, minor = self._device["compute_capability"]
        return major, minor

    def nvmlDeviceGetPciInfo(self, h: int):
        from types import SimpleNamespace
        return SimpleNamespace(busId=self._device["pci_bus_id"])

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None):
        from types import SimpleNamespace
        self._raise_if_recorded("nvmlDeviceGetMemoryInfo" if version is None
                                else "nvmlDeviceGetMemoryInfo_v2")
        m = self._memory or {}
        if version is None:
            return SimpleNamespace(total=m["memory_total"], free=m["memory_free"],
                                   used=m["memory_used"] + m["memory_reserved"])
        return SimpleNamespace(**{k.removeprefix("memory_"): v for k, v in m.items()})


@pytest.fixture
def gb10() -> dict:
    return json.loads((DATA / "gb10-unified-raw.json").read_text())


def _gb10_host(gb10: dict) -> tuple[int, int]:
    kb = gb10["meminfo_kb"]
    return kb["MemTotal"] * 1024, kb["MemAvailable"] * 1024


def test_gb10_without_nvml_memory_is_budgeted_from_host_ram(gb10: dict) -> None:
    """Recorded GB10: NVML's memory info is NOT_SUPPORTED (v1 and v2), so the reader takes
    MemTotal / MemAvailable — the total torch reports there (121.69 GiB) and the free figure
    vLLM uses on integrated GPUs — and the plan's notes say the OS shares it."""
    from launcher.hardware.nvml import _read_device

    nvml = _RecordedNvml(gb10["device"], gb10["nvml_errors"])
    notes: list[str] = []
    dev = _read_device(nvml, 0, notes, host=lambda: _gb10_host(gb10))
    total, available = _gb10_host(gb10)
    assert dev.unified_memory and dev.memory_reserved is None
    assert (dev.memory_total, dev.memory_free, dev.memory_used) == (total, available,
                                                                    total - available)
    assert dev.compute_capability == (12, 1) and dev.nvlinks is None and dev.mig_mode is None

    inv = build_inventory(RawSystem(gb10["driver_version"], "13.0", (dev,)), env={})
    g = inv.gpus[0]
    assert f"{g.total_bytes / GiB:.2f}" == gb10["cross_check"]["torch_total_gib"]
    assert g.free_bytes == available and g.other_used_bytes == total - available
    assert g.nvml_total_bytes is None and g.reserved_bytes is None
    assert g.catalog_name == "GB10" and g.memory_bandwidth_gbps == 273
    assert any("unified memory: budget read from host RAM, shared with the OS" in a
               and "MemAvailable 113.07 GiB" in a for a in inv.assumptions), inv.assumptions
    assert not any("v2 memory info unavailable" in a for a in inv.assumptions)


def test_gb10_reading_survives_a_snapshot_round_trip(gb10: dict) -> None:
    from launcher.hardware.inventory import Inventory
    from launcher.hardware.nvml import RawDevice, _read_device

    dev = _read_device(_RecordedNvml(gb10["device"], gb10["nvml_errors"]), 0, [],
                       host=lambda: _gb10_host(gb10))
    assert RawDevice.from_dict(RawSystem(None, None, (dev,)).to_dict()["devices"][0]) == dev
    inv = build_inventory(RawSystem(None, None, (dev,)), env={})
    assert Inventory.from_dict(json.loads(inv.to_json())) == inv


def test_discrete_gpu_keeps_nvml_memory(recorded: dict) -> None:
    """The same reader on the recorded H100 (v2 answers) never consults the host, and a driver
    without v2 falls back to v1 as before; only NOT_SUPPORTED from both means unified memory."""
    from launcher.hardware.nvml import _read_device

    d = recorded["devices"][0]

    def host() -> tuple[int, int]:
        raise AssertionError("host memory read for a discrete GPU")

    dev = _read_device(_RecordedNvml(d, {}, d), 0, [], host=host)
    assert not dev.unified_memory and dev.memory_reserved == d["memory_reserved"]
    assert dev.memory_total == d["memory_total"] and dev.pci_bus_id == d["pci_bus_id"]
    v1 = _read_device(_RecordedNvml(d, {"nvmlDeviceGetMemoryInfo_v2": "NVML_ERROR_NOT_SUPPORTED"},
                                    d), 0, [], host=host)
    assert not v1.unified_memory and v1.memory_reserved is None
    assert v1.memory_used == d["memory_used"] + d["memory_reserved"]


def test_simulated_gb10_says_the_budget_is_shared() -> None:
    from launcher.hardware.catalog import simulated_inventory

    inv = simulated_inventory("1xDGX-Spark")
    assert inv.gpus[0].catalog_name == "GB10" and inv.gpus[0].nvml_total_bytes is None
    assert any("unified memory: budget read from host RAM" in a for a in inv.assumptions)
