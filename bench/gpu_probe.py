"""One run on an NVIDIA GPU machine records what the launcher's GPU paths rely on, for tests to
replay (tests/test_gpu_probe.py). Torch and NVML only, no vLLM; about 2 minutes (≤ 8).

    python bench/gpu_probe.py [--out tests/data/gpu-probe] [--alloc-gib 4] [--cotenant 0.30]

What it records, per question:
  1. `launcher gpus --json`: the inventory as the launcher reads it (NVML, CUDA_VISIBLE_DEVICES).
  2. Is NVML's total − reserved the total CUDA sees? `torch.cuda.mem_get_info` per CUDA device
     (in a child process, so this one never holds a CUDA context) beside NVML's v2 memory info.
  3. Does per-process accounting work? A child allocates --alloc-gib GiB on GPU 0; what
     nvmlDeviceGetComputeRunningProcesses lists for it (its pid found? its bytes?) and how
     much the device's used memory rose (the CUDA context comes on top of the tensor).
  4. Does the live headroom monitor (launcher/runtime/monitor.py) see a co-tenant? The monitor
     runs as `serve` runs it (HeadroomMonitor + `sampler` for CUDA), with no engine, against
     a child that takes --cotenant of GPU 0's CUDA-visible total half-way through. Its limit
     is "what was used at the start + 20 % of the device", so a 30 % co-tenant crosses it.
     Recorded: every sample, every warning, and whether a warning names the co-tenant's pid.

Without an NVIDIA driver, or without torch with CUDA, it exits 2 at once with a message.

Output: one JSON file, <out>/<gpu-name>-<YYYY-MM-DD>.json (tests/data/gpu-probe/README.md
documents every field), format FORMAT. `analyze` (pure) derives the findings from a recording;
the tests re-derive them from each recorded file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FORMAT = 1
GIB = 1 << 30
MIB = 1 << 20
# NVML reports whole bytes, CUDA rounds its total to its own granularity: within this they agree.
TOTAL_TOLERANCE = 2 * MIB
EXTRA_OTHERS = 0.20  # the monitor's limit: used at the start + this share of the device


class ProbeInputError(ValueError):
    """A recording that is not what `record` writes (the field is named)."""


# ---- pure analysis (tests replay these on every recording) --------------------------------

def compare_totals(nvml_devices: list[dict[str, Any]], cuda: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per CUDA device: NVML total − reserved (what the launcher takes as T) against the total
    torch.cuda.mem_get_info reports, matched by UUID (else by index)."""
    by_uuid = {d.get("uuid"): d for d in nvml_devices if d.get("uuid")}
    out = []
    for c in cuda:
        n = by_uuid.get(c.get("uuid")) or (nvml_devices[c["cuda_index"]]
                                           if c["cuda_index"] < len(nvml_devices) else None)
        if n is None:
            out.append({"cuda_index": c["cuda_index"], "matched": False})
            continue
        reserved = n.get("memory_reserved")
        visible = n["memory_total"] - (reserved or 0)
        diff = c["total_bytes"] - visible
        out.append({"cuda_index": c["cuda_index"], "matched": True, "name": n["name"],
                    "nvml_total": n["memory_total"], "nvml_reserved": reserved,
                    "nvml_visible": visible, "cuda_total": c["total_bytes"], "diff_bytes": diff,
                    "agree": abs(diff) <= TOTAL_TOLERANCE})
    return out


def process_accounting(alloc: dict[str, Any]) -> dict[str, Any]:
    """Did NVML list the allocating process, and with how much memory?"""
    pid = alloc["pid"]
    listed = [p for p in alloc["nvml_processes"] if p["pid"] == pid]
    nvml_bytes = listed[0]["used_bytes"] if listed else None
    allocated = alloc["torch_reserved_bytes"]
    return {
        "pid_listed": bool(listed),
        "bytes_reported": nvml_bytes is not None,
        "nvml_process_bytes": nvml_bytes,
        "torch_reserved_bytes": allocated,
        "context_bytes": None if nvml_bytes is None else nvml_bytes - allocated,
        "device_used_delta": alloc["used_after"] - alloc["used_before"],
        "works": bool(listed) and nvml_bytes is not None and nvml_bytes >= allocated,
    }


def monitor_verdict(mon: dict[str, Any]) -> dict[str, Any]:
    """What the monitor made of the co-tenant: warned, when, and did it name the holder?"""
    samples, warnings = mon["samples"], mon["warnings"]
    pid = mon["cotenant"]["pid"]
    below = [i for i, s in enumerate(samples) if s["below_target"]]
    named = [w for w in warnings if re.search(rf"\bpid {pid}\b", w["text"])]
    holders = [h for s in samples for h in s["holders"]
               if h["who"].startswith(f"pid {pid} ") or h["who"] == f"pid {pid}"]
    return {
        "samples": len(samples),
        "first_below_target": below[0] if below else None,
        "warned": bool(warnings),
        "warned_once": len([w for w in warnings if "below the headroom target" in w["text"]]) == 1,
        "names_cotenant": bool(named),
        "cotenant_bytes_seen": max((h["bytes"] or 0 for h in holders), default=None),
        "max_used_bytes": max((s["used_bytes"] for s in samples), default=None),
    }


def validate(rec: Any) -> dict[str, Any]:
    """The recording, or ProbeInputError naming the first field that is wrong."""
    def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ProbeInputError(f"{where}{key}: missing")
        v = obj[key]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            raise ProbeInputError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, "
                                  f"got {type(v).__name__}")
        return v

    if not isinstance(rec, dict):
        raise ProbeInputError("recording: expected a JSON object")
    if need(rec, "format", int, "") != FORMAT:
        raise ProbeInputError(f"format: {rec['format']} is not {FORMAT}")
    nvml = need(rec, "nvml_before", dict, "")
    if not need(nvml, "devices", list, "nvml_before."):
        raise ProbeInputError("nvml_before.devices: empty (the probe records only with a GPU)")
    if not need(rec, "cuda_mem_info", list, ""):
        raise ProbeInputError("cuda_mem_info: empty (the probe records only with a GPU)")
    for i, d in enumerate(nvml["devices"]):
        for key, kind in (("name", str), ("memory_total", int), ("memory_used", int)):
            need(d, key, kind, f"nvml_before.devices[{i}].")
        if d.get("memory_reserved") is not None:
            need(d, "memory_reserved", int, f"nvml_before.devices[{i}].")
    for i, c in enumerate(need(rec, "cuda_mem_info", list, "")):
        need(c, "cuda_index", int, f"cuda_mem_info[{i}].")
        need(c, "total_bytes", int, f"cuda_mem_info[{i}].")
        need(c, "free_bytes", int, f"cuda_mem_info[{i}].")
    alloc = rec.get("allocation")
    if alloc is not None:
        for key in ("pid", "torch_reserved_bytes", "used_before", "used_after"):
            need(alloc, key, int, "allocation.")
        for i, p in enumerate(need(alloc, "nvml_processes", list, "allocation.")):
            need(p, "pid", int, f"allocation.nvml_processes[{i}].")
    mon = rec.get("monitor")
    if mon is not None:
        need(need(mon, "cotenant", dict, "monitor."), "pid", int, "monitor.cotenant.")
        for i, s in enumerate(need(mon, "samples", list, "monitor.")):
            need(s, "used_bytes", int, f"monitor.samples[{i}].")
            need(s, "below_target", bool, f"monitor.samples[{i}].")
            need(s, "holders", list, f"monitor.samples[{i}].")
        for i, w in enumerate(need(mon, "warnings", list, "monitor.")):
            need(w, "text", str, f"monitor.warnings[{i}].")
    return rec


def analyze(rec: dict[str, Any]) -> dict[str, Any]:
    """The findings of one recording; a section that was not recorded says so."""
    rec = validate(rec)
    totals = compare_totals(rec["nvml_before"]["devices"], rec["cuda_mem_info"])
    return {
        "totals": totals,
        "totals_agree": all(t.get("agree") for t in totals) if totals else None,
        "process_accounting": process_accounting(rec["allocation"]) if rec.get("allocation")
        else "not recorded",
        "monitor": monitor_verdict(rec["monitor"]) if rec.get("monitor") else "not recorded",
    }


def file_name(gpu_name: str, day: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-")
    return f"{slug}-{day}.json"


# ---- child processes (torch) -----------------------------------------------------------------

def _worker_mem_info() -> None:
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        props = torch.cuda.get_device_properties(i)
        uuid = getattr(props, "uuid", None)
        out.append({"cuda_index": i, "name": props.name, "free_bytes": int(free),
                    "total_bytes": int(total), "uuid": f"GPU-{uuid}" if uuid else None})
    print(json.dumps({"devices": out, "torch": torch.__version__, "cuda": torch.version.cuda}),
          flush=True)


def _worker_hold(nbytes: int) -> None:
    """Allocate `nbytes` on CUDA device 0, say so on stdout, hold until stdin closes."""
    import torch

    x = torch.empty(nbytes, dtype=torch.uint8, device="cuda:0")
    x.fill_(1)
    torch.cuda.synchronize()
    print(json.dumps({"pid": os.getpid(), "allocated": int(torch.cuda.memory_allocated(0)),
                      "reserved": int(torch.cuda.memory_reserved(0))}), flush=True)
    sys.stdin.read()
    del x


class Holder:
    """A child process holding `nbytes` of GPU 0 until closed."""

    def __init__(self, nbytes: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "hold", str(nbytes)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise RuntimeError(f"the allocating child failed (exit {self.proc.wait(30)})")
        self.info = json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- recording ------------------------------------------------------------------------------

def _nvml() -> Any:
    from launcher.hardware.nvml import read_raw

    return read_raw()


def _device0_used(raw: Any, uuid: str | None) -> tuple[Any, int]:
    d = next((x for x in raw.devices if uuid and x.uuid == uuid), raw.devices[0])
    return d, d.memory_used


def record(args: argparse.Namespace) -> dict[str, Any]:
    from launcher.errors import HardwareError

    try:
        before = _nvml()
    except HardwareError as e:
        raise SystemExit(_fail(f"no NVIDIA GPU here: {e.message}")) from e
    if not before.devices:
        raise SystemExit(_fail("NVML sees no GPU"))
    t0 = time.monotonic()
    rec: dict[str, Any] = {"format": FORMAT,
                           "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
                           "host": {"platform": platform.platform(), "python": sys.version.split()[0],
                                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}
    gpus = subprocess.run([sys.executable, "-c", "from launcher.cli import main; main()", "gpus",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    rec["launcher_gpus"] = json.loads(gpus.stdout) if gpus.returncode == 0 else \
        {"exit_code": gpus.returncode, "stderr": gpus.stderr[-2000:]}
    rec["nvml_before"] = before.to_dict()

    info = subprocess.run([sys.executable, __file__, "--worker", "mem-info"], capture_output=True,
                          text=True, timeout=300)
    if info.returncode != 0:
        raise SystemExit(_fail(f"torch cannot use CUDA here: {info.stderr.strip()[-500:]}"))
    mem = json.loads(info.stdout)
    rec["torch"] = {"version": mem["torch"], "cuda": mem["cuda"]}
    rec["cuda_mem_info"] = mem["devices"]
    uuid0 = mem["devices"][0].get("uuid") if mem["devices"] else None
    print(f"[{time.monotonic() - t0:5.1f} s] totals read", file=sys.stderr)

    # 3. per-process accounting
    _, used_before = _device0_used(_nvml(), uuid0)
    holder = Holder(int(args.alloc_gib * GIB))
    try:
        time.sleep(1.0)
        raw = _nvml()
        dev, used_after = _device0_used(raw, uuid0)
        rec["allocation"] = {"pid": holder.info["pid"], "requested_bytes": int(args.alloc_gib * GIB),
                             "torch_allocated_bytes": holder.info["allocated"],
                             "torch_reserved_bytes": holder.info["reserved"],
                             "used_before": used_before, "used_after": used_after,
                             "nvml_processes": [vars(p) for p in dev.processes]}
    finally:
        holder.close()
    print(f"[{time.monotonic() - t0:5.1f} s] per-process accounting read", file=sys.stderr)

    rec["monitor"] = _monitor_run(args, mem["devices"][0], uuid0)
    print(f"[{time.monotonic() - t0:5.1f} s] monitor run done", file=sys.stderr)
    rec = json.loads(json.dumps(rec))  # as the file will hold it (tuples become lists)
    rec["analysis"] = analyze(rec)
    return rec


def _monitor_run(args: argparse.Namespace, cuda0: dict[str, Any], uuid0: str | None) -> dict[str, Any]:
    """HeadroomMonitor with the serve path's CUDA sampler, no engine, and a co-tenant."""
    from launcher.hardware import get_inventory
    from launcher.memory.calibration import Device
    from launcher.planner.plan import EngineCommand
    from launcher.runtime.monitor import HeadroomMonitor, sampler
    from launcher.runtime.state import ControlState
    from launcher.runtime.supervisor import EngineProcess

    inv = get_inventory()
    gpu = next((g for g in inv.gpus if uuid0 and g.uuid == uuid0), inv.gpus[0])
    _, used_start = _device0_used(_nvml(), gpu.uuid)
    limit = used_start + int(EXTRA_OTHERS * gpu.total_bytes)
    never_started = EngineProcess(EngineCommand(argv=("true",)), Path(os.devnull))  # pids() == []
    read = sampler(never_started, Device.CUDA, [gpu], {gpu.index: limit})
    samples: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def sample() -> list[Any]:
        devices = read()
        samples.extend({**d.to_json(), "t": round(time.monotonic() - t0, 2)} for d in devices)
        return devices

    def warn(text: str) -> None:
        warnings.append({"t": round(time.monotonic() - t0, 2), "text": text})

    mon = HeadroomMonitor(ControlState(), sample, warn, interval=args.interval)
    mon.start()
    cotenant_bytes = int(args.cotenant * cuda0["total_bytes"])
    try:
        time.sleep(args.monitor_seconds / 3)
        holder = Holder(cotenant_bytes)
        started = round(time.monotonic() - t0, 2)
        try:
            time.sleep(args.monitor_seconds / 3)
        finally:
            holder.close()
        ended = round(time.monotonic() - t0, 2)
        time.sleep(args.monitor_seconds / 3)
    finally:
        mon.stop()
    return {"interval_s": args.interval, "limit_bytes": limit, "used_at_start": used_start,
            "limit_rule": f"used at start + {EXTRA_OTHERS:.0%} of the CUDA-visible total",
            "gpu": {"index": gpu.index, "uuid": gpu.uuid, "total_bytes": gpu.total_bytes},
            "cotenant": {"pid": holder.info["pid"], "requested_bytes": cotenant_bytes,
                         "fraction": args.cotenant, "started_t": started, "ended_t": ended},
            "samples": samples, "warnings": warnings}


def _fail(message: str) -> int:
    print(f"gpu_probe: {message}\nRun it on a machine with an NVIDIA GPU, its driver and torch "
          "with CUDA (pip install torch).", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "gpu-probe")
    p.add_argument("--alloc-gib", type=float, default=4.0)
    p.add_argument("--cotenant", type=float, default=0.30, help="share of GPU 0 the co-tenant takes")
    p.add_argument("--monitor-seconds", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker[0] == "mem-info":
            _worker_mem_info()
        else:
            _worker_hold(int(args.worker[1]))
        return 0
    if not 0 < args.cotenant < 0.8 or args.alloc_gib <= 0:
        p.error("--cotenant must be in (0, 0.8) and --alloc-gib above 0")
    sys.path.insert(0, str(ROOT))
    rec = record(args)
    name = rec["nvml_before"]["devices"][0]["name"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / file_name(name, rec["recorded_at"][:10])
    path.write_text(json.dumps(rec, indent=1) + "\n")
    a = rec["analysis"]
    print(json.dumps({"written": str(path), "totals_agree": a["totals_agree"],
                      "process_accounting": a["process_accounting"], "monitor": a["monitor"]},
                     indent=1))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
