"""bench/gpu_probe.py: its recordings replayed, its pure analysis, its exit without a GPU.

Every recording in tests/data/gpu-probe/ is replayed: validated, its findings re-derived with
the probe's own `analyze` and compared with what it wrote, and the launcher's assumptions
checked against it (NVML total − reserved is the CUDA total; the live monitor warns about a
co-tenant and names it where NVML lists processes). While no recording exists there is no replay
test to run (nothing is skipped: the folder's README says how to record one); the analysis is
exercised on a recording assembled from real
readings already in the repository: tests/data/nvml/h100x2-raw.json (NVML of an H100 80GB
HBM3, and CUDA deviceQuery's total for the same GPU, both cited there) and the monitor's own
classes run on that device.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from launcher.hardware.nvml import RawProcess, RawSystem
from launcher.runtime.monitor import HeadroomMonitor, gpu_holders
from launcher.runtime.state import ControlState, LiveDevice

PROBE = ROOT / "bench" / "gpu_probe.py"
RECORDINGS = ROOT / "tests" / "data" / "gpu-probe"
H100 = ROOT / "tests" / "data" / "nvml" / "h100x2-raw.json"

_spec = importlib.util.spec_from_file_location("gpu_probe", PROBE)
assert _spec and _spec.loader
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def recordings() -> list[Path]:
    return sorted(RECORDINGS.glob("*.json"))


def assembled() -> dict[str, Any]:
    """A format-1 recording from real readings: NVML of two H100s and CUDA's total (deviceQuery
    on the same machine). No process or monitor section: nothing of the kind was recorded."""
    raw = json.loads(H100.read_text())
    system = RawSystem.from_dict(raw)
    cuda_total = raw["cross_check"]["cuda_total_bytes_device_query"]
    return {"format": 1, "recorded_at": "2024-11-14T00:00:00+00:00",
            "nvml_before": json.loads(json.dumps(system.to_dict())),
            "cuda_mem_info": [{"cuda_index": i, "name": d.name, "uuid": d.uuid,
                               "total_bytes": cuda_total, "free_bytes": d.memory_free}
                              for i, d in enumerate(system.devices)]}


# ---- replay --------------------------------------------------------------------------------

# Only recordings that exist are replayed (an empty parameter list would be a skip).
if recordings():
    @pytest.mark.parametrize("path", recordings(), ids=lambda p: p.name)
    def test_replay_recording(path: Path) -> None:
        rec = json.loads(path.read_text())
        assert path.name == probe.file_name(rec["nvml_before"]["devices"][0]["name"],
                                            rec["recorded_at"][:10])
        a = probe.analyze(rec)
        assert json.loads(json.dumps(a)) == rec["analysis"], "the findings re-derive as recorded"
        # what the launcher assumes, checked against the real machine
        assert a["totals_agree"], a["totals"]
        mon, acct = a["monitor"], a["process_accounting"]
        assert mon["warned"] and mon["warned_once"], "a 30 % co-tenant crosses the monitor's limit"
        assert mon["names_cotenant"] == acct["pid_listed"], \
            "the monitor names the co-tenant exactly when NVML lists its process"


# ---- the analysis on an assembled recording ------------------------------------------------

def test_totals_from_recorded_nvml_and_cuda() -> None:
    a = probe.analyze(assembled())
    raw = json.loads(H100.read_text())
    d0 = raw["devices"][0]
    visible = d0["memory_total"] - d0["memory_reserved"]
    (t0, t1) = a["totals"]
    assert t0["nvml_visible"] == visible
    assert t0["diff_bytes"] == raw["cross_check"]["cuda_total_bytes_device_query"] - visible
    assert 0 < t0["diff_bytes"] < probe.MIB  # CUDA's total is NVML's to within its rounding
    assert a["totals_agree"] is True and t1["agree"] is True
    assert a["process_accounting"] == "not recorded" and a["monitor"] == "not recorded"


def test_totals_disagreeing_by_more_than_the_tolerance_are_flagged() -> None:
    rec = assembled()
    rec["cuda_mem_info"][1]["total_bytes"] -= 3 * probe.MIB  # e.g. a MIG slice or a vGPU
    a = probe.analyze(rec)
    assert a["totals_agree"] is False and [t["agree"] for t in a["totals"]] == [True, False]


def test_monitor_analysis_reads_what_the_monitor_produces() -> None:
    """The real HeadroomMonitor, fed LiveDevices of the recorded H100 with a co-tenant process
    in NVML's list, warns once and names it; the probe's analysis reads that back."""
    dev = RawSystem.from_dict(json.loads(H100.read_text())).devices[0]
    total = dev.memory_total - dev.memory_reserved
    cotenant = RawProcess(pid=4242, name="python", used_bytes=int(0.3 * total))
    limit = dev.memory_used + int(0.2 * total)
    steps = [(), (cotenant,), (cotenant,), ()]
    samples: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []

    def sample() -> list[LiveDevice]:
        procs = steps[min(len(samples), len(steps) - 1)]
        used = dev.memory_used + sum(p.used_bytes or 0 for p in procs)
        d = LiveDevice(0, total, limit, used, None, time.time(), gpu_holders(procs, set()))
        samples.append(d.to_json())
        return [d]

    mon = HeadroomMonitor(ControlState(), sample, lambda t: warnings.append({"text": t}),
                          interval=0.01)
    mon.start()
    deadline = time.monotonic() + 10
    while len(samples) < len(steps) and time.monotonic() < deadline:
        time.sleep(0.01)
    mon.stop()
    v = probe.monitor_verdict({"samples": samples[:len(steps)], "warnings": warnings,
                               "cotenant": {"pid": cotenant.pid}})
    assert v["first_below_target"] == 1 and v["warned_once"] and v["names_cotenant"]
    assert v["cotenant_bytes_seen"] == cotenant.used_bytes


def test_process_accounting_reads_the_nvml_list() -> None:
    base = {"pid": 7, "torch_reserved_bytes": 4 << 30, "used_before": 1 << 20,
            "used_after": (4 << 30) + (600 << 20)}
    listed = probe.process_accounting({**base, "nvml_processes": [
        {"pid": 7, "name": "python", "used_bytes": (4 << 30) + (500 << 20)}]})
    assert listed["works"] and listed["context_bytes"] == 500 << 20
    # in a container NVML lists host pids (or none): accounting does not work there
    hidden = probe.process_accounting({**base, "nvml_processes": [
        {"pid": 91234, "name": None, "used_bytes": None}]})
    assert not hidden["pid_listed"] and not hidden["works"]
    assert hidden["device_used_delta"] == (4 << 30) + (599 << 20)


FIELDS = [("format",), ("nvml_before",), ("nvml_before", "devices"),
          ("nvml_before", "devices", 0, "memory_total"), ("nvml_before", "devices", 0, "name"),
          ("cuda_mem_info",), ("cuda_mem_info", 1, "total_bytes"), ("cuda_mem_info", 0, "cuda_index")]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FIELDS), st.one_of(st.none(), st.text(max_size=3), st.floats(),
                                          st.booleans(), st.lists(st.integers(), max_size=2)))
def test_broken_recordings_name_the_field(path: tuple, value: Any) -> None:
    assume(not (path[-1] == "name" and isinstance(value, str)))  # any text is a name
    rec = copy.deepcopy(assembled())
    target = rec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    where = ".".join(str(k) for k in path)
    where = where.replace(".0.", "[0].").replace(".1.", "[1].")
    with pytest.raises(probe.ProbeInputError) as e:
        probe.analyze(rec)
    assert str(e.value).startswith(where), (str(e.value), where)


def test_file_name() -> None:
    assert probe.file_name("NVIDIA H100 80GB HBM3", "2026-12-02") == \
        "nvidia-h100-80gb-hbm3-2026-12-02.json"


# ---- no GPU ----------------------------------------------------------------------------------

def test_without_a_gpu_it_exits_2_with_a_message() -> None:
    from launcher.errors import HardwareError
    from launcher.hardware.nvml import read_raw

    try:
        raw = read_raw()
    except HardwareError:
        raw = None
    if raw is not None and raw.devices:
        pytest.skip("this machine has a GPU: the probe would record, not refuse")
    r = subprocess.run([sys.executable, str(PROBE), "--out", "/nonexistent/never-written"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert "no NVIDIA GPU" in r.stderr or "NVML sees no GPU" in r.stderr
    assert "torch" in r.stderr and r.stdout == ""
