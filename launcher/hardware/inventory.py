"""Frozen snapshots of the hardware a plan runs on, and their JSON form.

Everything downstream of `hardware/` sees only these objects, never NVML. A snapshot written by
`launcher gpus --json` (`Inventory.to_json`) loads back unchanged (`Inventory.load`), so a reading
taken on a GPU machine replays in tests and on laptops (`--inventory-file`).

Memory terms (bytes, per GPU; DESIGN §3):
- `total_bytes` is `T`, the CUDA-visible total = NVML total − driver-reserved memory. It is what
  `torch.cuda.mem_get_info()` and vLLM's "total_memory" report, not the NVML total.
- `used_bytes` is memory in use before launch (NVML v2 `used`, which excludes reserved memory);
  `other_used_bytes` names it as the `O` of the budget.
"""

from __future__ import annotations

import json
import reprlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.errors import InputError

FORMAT = "launcher-inventory/1"
# Plausibility limits for a snapshot, which is data from outside: far above any real machine,
# low enough that a lying file cannot make the planner loop or divide by zero.
MAX_GPUS = 1024  # GPUs one NVML reading can list (a node has at most a few dozen)
MAX_BYTES = 2**50  # 1 PiB: memory of one GPU or one host
MAX_BANDWIDTH_GBPS = 1e6
MAX_CAPABILITY = 99  # major and minor of a CUDA compute capability
MAX_CPUS = 2**20
MAX_PROCESSES = 100_000
MAX_PID = 2**32
MAX_FILE_BYTES = 64 * 1024 * 1024
CPU_CATALOG_NAME = "CPU"  # catalog_name of the host-memory device a CPU plan runs on


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU. `used_bytes` is None when the driver does not report
    it (Windows WDDM, or a process in another container without permission)."""

    pid: int
    name: str | None
    used_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the engine will see it: `index` is the CUDA index after CUDA_VISIBLE_DEVICES."""

    index: int
    uuid: str | None
    name: str
    total_bytes: int
    nvml_total_bytes: int | None
    reserved_bytes: int | None
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int]
    mig_mode: bool | None
    processes: tuple[GpuProcess, ...]
    nvlink_peers: tuple[int, ...]
    memory_bandwidth_gbps: float | None
    catalog_name: str | None
    simulated: bool
    # The node (host) this GPU is on; 0 on one machine. In a multi-node inventory `index` is
    # global (the node's offset + its CUDA index), as the runtime's cluster numbers devices.
    node: int = 0

    @property
    def is_cpu(self) -> bool:
        """Host memory standing in for a GPU (vLLM's CPU backend; hardware/cpu.py)."""
        return self.catalog_name == CPU_CATALOG_NAME

    @property
    def other_used_bytes(self) -> int:
        """`O` in the budget: memory already used on this GPU before the engine starts (other
        processes, other tenants, their CUDA contexts). It is NVML's `used`, which also covers
        processes NVML cannot list (other containers), so it is never smaller than the sum of
        `processes`. Driver-reserved memory is not in it: that is already outside `total_bytes`."""
        return self.used_bytes


@dataclass(frozen=True)
class HostInfo:
    """The host's RAM and usable CPU cores (for CPU offload, swap space and the CPU backend)."""

    total_ram_bytes: int
    available_ram_bytes: int
    cpu_count: int


@dataclass(frozen=True)
class Inventory:
    """Every GPU visible to the engine plus the host, and where the reading came from.

    `source` is "nvml", "simulated:<spec>" or "file:<path>". `assumptions` lists what the reader
    had to assume (e.g. a MIG UUID in CUDA_VISIBLE_DEVICES skipped), so a plan can show it.
    """

    gpus: tuple[GpuInfo, ...]
    host: HostInfo | None
    source: str
    driver_version: str | None
    cuda_driver_version: str | None
    captured_at: str | None
    assumptions: tuple[str, ...] = field(default=())

    # ---- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "captured_at": self.captured_at,
            "assumptions": list(self.assumptions),
            "host": None if self.host is None else {
                "total_ram_bytes": self.host.total_ram_bytes,
                "available_ram_bytes": self.host.available_ram_bytes,
                "cpu_count": self.host.cpu_count,
            },
            "gpus": [_gpu_to_dict(g) for g in self.gpus],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "inventory") -> Inventory:
        """Strictly rebuild an Inventory; any missing or mistyped field is an InputError that
        names `origin` (the file) and the field path, e.g. `gpus[1].total_bytes`."""
        r = _Reader(origin)
        d = r.obj(data, "")
        fmt = r.get(d, "format", str, "")
        if fmt != FORMAT:
            raise r.error("format", f"expected {FORMAT!r}, got {_show(fmt)}")
        host_raw = d.get("host")
        host = None
        if host_raw is not None:
            h = r.obj(host_raw, "host")
            host = HostInfo(
                total_ram_bytes=r.nonneg(h, "total_ram_bytes", "host", hi=MAX_BYTES),
                available_ram_bytes=r.nonneg(h, "available_ram_bytes", "host", hi=MAX_BYTES),
                cpu_count=r.nonneg(h, "cpu_count", "host", hi=MAX_CPUS),
            )
            if host.available_ram_bytes > host.total_ram_bytes:
                raise r.error("host.available_ram_bytes",
                              f"{host.available_ram_bytes} exceeds host.total_ram_bytes "
                              f"{host.total_ram_bytes}")
        gpus_raw = r.get(d, "gpus", list, "")
        if len(gpus_raw) > MAX_GPUS:
            raise r.error("gpus", f"{len(gpus_raw)} GPUs, more than one host has "
                                  f"(limit {MAX_GPUS})")
        gpus = tuple(_gpu_from_dict(r, g, f"gpus[{i}]") for i, g in enumerate(gpus_raw))
        indices = [g.index for g in gpus]
        if len(set(indices)) != len(indices):
            raise r.error("gpus", f"duplicate GPU indices {indices}")
        assumptions = r.get(d, "assumptions", list, "", optional=True) or []
        if not all(isinstance(a, str) for a in assumptions):
            raise r.error("assumptions", "expected a list of strings")
        return cls(
            gpus=gpus,
            host=host,
            source=r.get(d, "source", str, ""),
            driver_version=r.get(d, "driver_version", str, "", nullable=True),
            cuda_driver_version=r.get(d, "cuda_driver_version", str, "", nullable=True),
            captured_at=r.get(d, "captured_at", str, "", nullable=True),
            assumptions=tuple(assumptions),
        )

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        """Read a snapshot written by `to_json`. The result equals the inventory that was
        written (its `source` included); `get_inventory` relabels it `file:<path>`."""
        p = Path(path)
        try:
            st = p.stat()
            # A snapshot is a few KB in a regular file: never read gigabytes, nor a device or
            # pipe (/dev/zero, /dev/stdin) that would never end.
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                what = (f"{st.st_size:,} bytes (limit {MAX_FILE_BYTES:,})"
                        if stat.S_ISREG(st.st_mode) else "not a regular file")
                raise InputError(
                    f"Inventory file {p} is {what}; a snapshot is a few KB of JSON",
                    fix="Pass a JSON file written by `launcher gpus --json`.",
                    hint="launcher gpus --json > inventory.json")
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"Cannot read inventory file {p}: {exc.strerror or exc}",
                fix="Pass a JSON file written by `launcher gpus --json`.",
                hint="launcher gpus --json > inventory.json",
            ) from exc
        except ValueError as exc:  # bytes that are not UTF-8
            raise InputError(
                f"Inventory file {p} is not UTF-8 text ({type(exc).__name__})",
                fix="Pass a JSON file written by `launcher gpus --json`.",
                hint="launcher gpus --json > inventory.json",
            ) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"Inventory file {p} is not valid JSON (line {exc.lineno}, column {exc.colno}): "
                f"{exc.msg}",
                fix="Pass a JSON file written by `launcher gpus --json`.",
                hint="launcher gpus --json > inventory.json",
            ) from exc
        except (ValueError, RecursionError) as exc:
            # An integer literal too long to convert, or nesting deeper than the parser's stack.
            raise InputError(
                f"Inventory file {p} is not a snapshot ({type(exc).__name__}: "
                f"{str(exc)[:120]})",
                fix="Pass a JSON file written by `launcher gpus --json`.",
                hint="launcher gpus --json > inventory.json",
            ) from exc
        return cls.from_dict(data, origin=str(p))


def _gpu_to_dict(g: GpuInfo) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "total_bytes": g.total_bytes,
        "nvml_total_bytes": g.nvml_total_bytes,
        "reserved_bytes": g.reserved_bytes,
        "free_bytes": g.free_bytes,
        "used_bytes": g.used_bytes,
        "compute_capability": list(g.compute_capability),
        "mig_mode": g.mig_mode,
        "processes": [
            {"pid": p.pid, "name": p.name, "used_bytes": p.used_bytes} for p in g.processes
        ],
        "nvlink_peers": list(g.nvlink_peers),
        "memory_bandwidth_gbps": g.memory_bandwidth_gbps,
        "catalog_name": g.catalog_name,
        "simulated": g.simulated,
        "node": g.node,
    }


def _gpu_from_dict(r: _Reader, raw: Any, where: str) -> GpuInfo:
    d = r.obj(raw, where)
    cc = r.get(d, "compute_capability", list, where)
    if len(cc) != 2 or not all(_is_int(x) and 0 <= x <= MAX_CAPABILITY for x in cc):
        raise r.error(f"{where}.compute_capability",
                      f"expected [major, minor] from 0 to {MAX_CAPABILITY}, got {_show(cc)}")
    procs = []
    procs_raw = r.get(d, "processes", list, where)
    if len(procs_raw) > MAX_PROCESSES:
        raise r.error(f"{where}.processes", f"{len(procs_raw)} processes (limit {MAX_PROCESSES})")
    for i, p_raw in enumerate(procs_raw):
        pw = f"{where}.processes[{i}]"
        p = r.obj(p_raw, pw)
        procs.append(GpuProcess(
            pid=r.nonneg(p, "pid", pw, hi=MAX_PID),
            name=r.get(p, "name", str, pw, nullable=True),
            used_bytes=r.nonneg(p, "used_bytes", pw, nullable=True, hi=MAX_BYTES),
        ))
    peers = r.get(d, "nvlink_peers", list, where)
    if len(peers) > MAX_GPUS or not all(_is_int(x) and 0 <= x < MAX_GPUS for x in peers):
        raise r.error(f"{where}.nvlink_peers", f"expected GPU indices, got {_show(peers)}")
    bw = d.get("memory_bandwidth_gbps")
    if bw is not None and (not isinstance(bw, int | float) or isinstance(bw, bool)
                           or not 0 <= bw <= MAX_BANDWIDTH_GBPS):  # NaN fails too
        raise r.error(f"{where}.memory_bandwidth_gbps",
                      f"expected a number from 0 to {MAX_BANDWIDTH_GBPS:g}, got {_show(bw)}")
    # A GPU with no memory would divide the budget by zero: total must be at least 1 byte.
    total = r.nonneg(d, "total_bytes", where, lo=1, hi=MAX_BYTES)
    free = r.nonneg(d, "free_bytes", where, hi=MAX_BYTES)
    used = r.nonneg(d, "used_bytes", where, hi=MAX_BYTES)
    # free may exceed total: NVML's free counts memory the driver reserves, total does not.
    return GpuInfo(
        index=r.nonneg(d, "index", where, hi=MAX_GPUS - 1),
        uuid=r.get(d, "uuid", str, where, nullable=True),
        name=r.get(d, "name", str, where),
        total_bytes=total,
        nvml_total_bytes=r.nonneg(d, "nvml_total_bytes", where, nullable=True, hi=MAX_BYTES),
        reserved_bytes=r.nonneg(d, "reserved_bytes", where, nullable=True, hi=MAX_BYTES),
        free_bytes=free,
        used_bytes=used,
        compute_capability=(cc[0], cc[1]),
        mig_mode=r.get(d, "mig_mode", bool, where, nullable=True),
        processes=tuple(procs),
        nvlink_peers=tuple(peers),
        memory_bandwidth_gbps=None if bw is None else float(bw),
        catalog_name=r.get(d, "catalog_name", str, where, nullable=True),
        simulated=r.get(d, "simulated", bool, where),
        node=_node(r, d, where),
    )


def _node(r: _Reader, d: dict[str, Any], where: str) -> int:
    """`node`, optional: snapshots written before multi-node planning are node 0."""
    if d.get("node") is None:
        return 0
    return int(r.nonneg(d, "node", where, hi=MAX_GPUS - 1))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _show(value: Any) -> str:
    """A bounded repr: a hostile value must not make the error message itself huge."""
    return _REPR.repr(value)


class _Reader:
    """Typed field access that turns every problem into one InputError naming file and field."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def error(self, field_path: str, problem: str) -> InputError:
        return InputError(
            f"Malformed inventory {self.origin}: field {field_path or '<root>'}: {problem}",
            fix="Regenerate the file with `launcher gpus --json` or correct that field.",
            hint="launcher gpus --json > inventory.json",
        )

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected an object, got {type(value).__name__}")
        return value

    def get(self, d: dict[str, Any], key: str, typ: type, where: str, *,
            nullable: bool = False, optional: bool = False) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in d:
            if optional:
                return None
            raise self.error(path, "missing")
        value = d[key]
        if value is None and (nullable or optional):
            return None
        ok = isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))
        if not ok:
            raise self.error(path, f"expected {typ.__name__}, got {_show(value)}")
        return value

    def nonneg(self, d: dict[str, Any], key: str, where: str, *, nullable: bool = False,
               lo: int = 0, hi: int = 2**63 - 1) -> Any:
        """A whole number in [lo, hi] (≥ 0 unless `lo` says more; `hi` a plausibility limit)."""
        value = self.get(d, key, int, where, nullable=nullable)
        path = f"{where}.{key}" if where else key
        if value is not None and value < lo:
            raise self.error(path, f"must be ≥ {lo}, got {_show(value)}")
        if value is not None and value > hi:
            raise self.error(path, f"must be ≤ {hi:,} (plausibility limit), got {_show(value)}")
        return value
