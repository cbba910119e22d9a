"""The one doorway to NVML: the only module that imports pynvml, and only inside functions
(so `--help` and simulated planning never load libnvidia-ml).

Two halves, kept apart so the second is testable with recorded readings on machines without
a GPU:
- `read_raw()` talks to NVML and returns a `RawSystem`: plain values as NVML reported them.
- `build_inventory(raw, env)` is pure: it applies NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES,
  renumbers devices the way CUDA does, maps NVLink remotes to peers, and builds `GpuInfo`s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from launcher.errors import HardwareError
from launcher.hardware.inventory import GpuInfo, GpuProcess, HostInfo, Inventory

NO_DRIVER_FIX = ("Install the NVIDIA driver (or start the container with the NVIDIA runtime, "
                 "e.g. `docker run --gpus all`), or run on a GPU machine.")
NO_DRIVER_HINT = "launcher estimate MODEL --gpus 2xH100-80GB  (plan for simulated GPUs)"


# ---- raw readings (what NVML said, nothing derived) ----------------------------------------
@dataclass(frozen=True)
class RawProcess:
    pid: int
    name: str | None
    used_bytes: int | None


@dataclass(frozen=True)
class RawNvLink:
    """One active NVLink: the PCI bus id at the far end and what sits there
    ("gpu", "switch", "ibmnpu" or "unknown")."""

    remote_bus_id: str
    remote_type: str


@dataclass(frozen=True)
class RawDevice:
    """One physical GPU as NVML enumerates it (PCI bus order).

    `memory_reserved` is None when only NVML v1 memory info was available; then `memory_used`
    includes the reserved memory. `nvlinks` is None when NVLink is not supported or not read.

    `unified_memory` is True for a GPU without memory of its own (DGX Spark GB10), where NVML
    answers NOT_SUPPORTED for memory info: the memory_* fields then hold the host's MemTotal and
    MemAvailable (used = the difference), the figures CUDA (total) and vLLM (free, on integrated
    GPUs) use there, and memory_reserved is None.
    """

    nvml_index: int
    name: str
    uuid: str | None
    pci_bus_id: str | None
    memory_total: int
    memory_reserved: int | None
    memory_free: int
    memory_used: int
    compute_capability: tuple[int, int]
    mig_mode: bool | None
    processes: tuple[RawProcess, ...] = ()
    nvlinks: tuple[RawNvLink, ...] | None = None
    unified_memory: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RawDevice:
        nvlinks = d.get("nvlinks")
        return cls(
            nvml_index=int(d["nvml_index"]), name=str(d["name"]), uuid=d.get("uuid"),
            pci_bus_id=d.get("pci_bus_id"), memory_total=int(d["memory_total"]),
            memory_reserved=d.get("memory_reserved"), memory_free=int(d["memory_free"]),
            memory_used=int(d["memory_used"]),
            compute_capability=(int(d["compute_capability"][0]), int(d["compute_capability"][1])),
            mig_mode=d.get("mig_mode"),
            processes=tuple(RawProcess(**p) for p in d.get("processes", ())),
            nvlinks=None if nvlinks is None else tuple(RawNvLink(**n) for n in nvlinks),
            unified_memory=bool(d.get("unified_memory", False)),
        )


@dataclass(frozen=True)
class RawSystem:
    driver_version: str | None
    cuda_driver_version: str | None
    devices: tuple[RawDevice, ...]
    assumptions: tuple[str, ...] = field(default=())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RawSystem:
        """Load a recorded reading (tests/data/nvml/*.json); extra keys such as `source` are
        documentation and ignored."""
        return cls(
            driver_version=d.get("driver_version"),
            cuda_driver_version=d.get("cuda_driver_version"),
            devices=tuple(RawDevice.from_dict(x) for x in d["devices"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- pure mapping ---------------------------------------------------------------------------
def cuda_visible_total(memory_total: int, memory_reserved: int | None) -> int:
    """`T` from NVML: total − reserved (v2). With v1 (reserved unknown) the NVML total is all
    we have; v1 `used` then includes the reserved memory, so it is counted as used instead."""
    return memory_total if memory_reserved is None else memory_total - memory_reserved


def normalize_bus_id(bus_id: str) -> str:
    """Canonical "dddddddd:bb:dd.f" (NVML mixes 4- and 8-digit domains and letter case)."""
    text = bus_id.strip().lower()
    parts = text.split(":")
    if len(parts) == 3:
        domain, bus, devfn = parts
        return f"{int(domain, 16):08x}:{int(bus, 16):02x}:{devfn}"
    return text


def cuda_version_string(version: int) -> str:
    """NVML's integer CUDA driver version (12070) → "12.7"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def select_visible(
    devices: Sequence[RawDevice],
    cuda_visible_devices: str | None,
    nvidia_visible_devices: str | None = None,
    cuda_device_order: str | None = None,
) -> tuple[list[RawDevice], list[str]]:
    """The devices a CUDA process will see, in CUDA index order, plus assumptions made.

    NVIDIA_VISIBLE_DEVICES is the container runtime's selection: "void"/"none"/"" expose no GPU,
    "all" or unset everything; a list of UUIDs filters by UUID. A list of indices is applied
    only when NVML sees more devices than it names (outside the container); inside one, NVML
    already sees just those devices renumbered from 0.

    CUDA_VISIBLE_DEVICES follows CUDA: entries are indices or (unique prefixes of) GPU UUIDs;
    the listed order becomes CUDA indices 0..n-1; parsing stops at the first invalid or repeated
    entry; "" hides every GPU. MIG UUIDs are skipped (MIG instances are not planned for).
    """
    notes: list[str] = []
    pool = list(devices)

    nv = None if nvidia_visible_devices is None else nvidia_visible_devices.strip()
    if nv is not None and nv.lower() != "all":
        if nv.lower() in ("", "void", "none"):
            notes.append(f"NVIDIA_VISIBLE_DEVICES={nv!r}: the container runtime exposes no GPU")
            return [], notes
        entries = [e.strip() for e in nv.split(",") if e.strip()]
        if all(e.isdigit() for e in entries):
            if len(pool) > len(entries):
                wanted = [int(e) for e in entries]
                pool = [d for d in pool if d.nvml_index in wanted]
            else:
                notes.append(f"NVIDIA_VISIBLE_DEVICES={nv}: assumed already applied by the "
                             "container runtime (NVML sees only the exposed GPUs)")
        else:
            uuids = {e.lower() for e in entries}
            pool = [d for d in pool if d.uuid is not None and d.uuid.lower() in uuids]

    if cuda_visible_devices is None:
        chosen = pool
    else:
        chosen = []
        for entry in (e.strip() for e in cuda_visible_devices.split(",")):
            dev, stop = _resolve_cuda_entry(entry, pool, chosen, notes)
            if stop:
                break
            if dev is not None:
                chosen.append(dev)
        if not chosen:
            notes.append(f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} selects no GPU")

    names = {d.name for d in chosen}
    if len(names) > 1 and (cuda_device_order or "").upper() != "PCI_BUS_ID":
        notes.append("mixed GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number "
                     "the fastest GPU first; indices here follow PCI bus order")
    return chosen, notes


def _resolve_cuda_entry(entry: str, pool: list[RawDevice], chosen: list[RawDevice],
                        notes: list[str]) -> tuple[RawDevice | None, bool]:
    """(device, stop): one CUDA_VISIBLE_DEVICES entry resolved against the visible pool."""
    if entry.lower().startswith("mig-"):
        notes.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} is a MIG instance: skipped "
                     "(MIG instances are not planned for)")
        return None, False
    dev: RawDevice | None = None
    if entry.isdigit():
        i = int(entry)
        dev = pool[i] if i < len(pool) else None
    elif entry.lower().startswith("gpu-") and len(entry) > 4:
        matches = [d for d in pool if d.uuid and d.uuid.lower().startswith(entry.lower())]
        dev = matches[0] if len(matches) == 1 else None
    if dev is None or dev in chosen:
        why = "repeated" if dev is not None else "invalid or ambiguous"
        notes.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} is {why}: CUDA ignores it and "
                     "every entry after it")
        return None, True
    return dev, False


def nvlink_peers(devices: Sequence[RawDevice]) -> dict[int, set[int]]:
    """NVML index → NVML indices reachable over NVLink.

    A link whose far end is another GPU's bus id joins the two. Links ending at an NVSwitch put
    the GPU on the switch fabric, and all GPUs on it reach each other (HGX boards).
    """
    by_bus = {normalize_bus_id(d.pci_bus_id): d.nvml_index for d in devices if d.pci_bus_id}
    peers: dict[int, set[int]] = {d.nvml_index: set() for d in devices}
    on_switch: set[int] = set()
    for d in devices:
        for link in d.nvlinks or ():
            if link.remote_type == "switch":
                on_switch.add(d.nvml_index)
                continue
            other = by_bus.get(normalize_bus_id(link.remote_bus_id))
            if other is not None and other != d.nvml_index:
                peers[d.nvml_index].add(other)
                peers[other].add(d.nvml_index)
    for i in on_switch:
        peers[i] |= on_switch - {i}
    return peers


def to_gpu_info(raw: RawDevice, index: int, peers: tuple[int, ...]) -> GpuInfo:
    """One visible device → GpuInfo with CUDA index `index` (catalog fields filled if known)."""
    from launcher.hardware.catalog import find_gpu

    gpu_type = find_gpu(raw.name)
    procs: dict[int, GpuProcess] = {}
    for p in raw.processes:  # a process can be listed as compute and graphics: keep one
        prev = procs.get(p.pid)
        if prev is None or (p.used_bytes or 0) > (prev.used_bytes or 0):
            procs[p.pid] = GpuProcess(pid=p.pid, name=p.name, used_bytes=p.used_bytes)
    return GpuInfo(
        index=index,
        uuid=raw.uuid,
        name=raw.name,
        total_bytes=cuda_visible_total(raw.memory_total, raw.memory_reserved),
        nvml_total_bytes=None if raw.unified_memory else raw.memory_total,
        reserved_bytes=raw.memory_reserved,
        free_bytes=raw.memory_free,
        used_bytes=raw.memory_used,
        compute_capability=raw.compute_capability,
        mig_mode=raw.mig_mode,
        processes=tuple(procs[k] for k in sorted(procs)),
        nvlink_peers=peers,
        memory_bandwidth_gbps=None if gpu_type is None else gpu_type.memory_bandwidth_gbps,
        catalog_name=None if gpu_type is None else gpu_type.name,
        simulated=False,
    )


def build_inventory(
    raw: RawSystem,
    env: Mapping[str, str],
    host: HostInfo | None = None,
    captured_at: str | None = None,
) -> Inventory:
    """Pure: a raw NVML reading plus the environment → the Inventory CUDA will see."""
    visible, notes = select_visible(
        raw.devices,
        env.get("CUDA_VISIBLE_DEVICES"),
        env.get("NVIDIA_VISIBLE_DEVICES"),
        env.get("CUDA_DEVICE_ORDER"),
    )
    cuda_index = {d.nvml_index: i for i, d in enumerate(visible)}
    links = nvlink_peers(raw.devices)
    gpus = tuple(
        to_gpu_info(d, i, tuple(sorted(cuda_index[p] for p in links[d.nvml_index]
                                       if p in cuda_index)))
        for i, d in enumerate(visible)
    )
    if any(d.memory_reserved is None and not d.unified_memory for d in visible):
        notes.append("NVML v2 memory info unavailable: total includes driver-reserved memory "
                     "and used counts it")
    notes.extend(unified_memory_note(i, d) for i, d in enumerate(visible) if d.unified_memory)
    return Inventory(
        gpus=gpus, host=host, source="nvml", driver_version=raw.driver_version,
        cuda_driver_version=raw.cuda_driver_version, captured_at=captured_at,
        assumptions=(*raw.assumptions, *notes),
    )


def unified_memory_note(index: int, raw: RawDevice) -> str:
    """What the plan says about a unified-memory GPU: where its numbers came from and that the
    OS shares them (DGX Spark: vLLM's own utilization check compares against MemAvailable)."""
    from launcher.hardware.catalog import UNIFIED_NOTE

    gib = 1024 ** 3
    return (f"GPU {index} ({raw.name}): {UNIFIED_NOTE} (NVML reports no framebuffer memory; "
            f"total = MemTotal {raw.memory_total / gib:.2f} GiB, free = MemAvailable "
            f"{raw.memory_free / gib:.2f} GiB, as vLLM measures it on integrated GPUs); other "
            "programs' RAM use shrinks what the engine can get")


def host_memory() -> tuple[int, int]:
    """(MemTotal, MemAvailable) of this host, in bytes: psutil reads /proc/meminfo, as vLLM's
    MemorySnapshot does on integrated GPUs (so a container sees the host's figures, like vLLM)."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


# ---- the side-effecting half ---------------------------------------------------------------
def read_raw() -> RawSystem:
    """Read every GPU through NVML. Raises HardwareError when NVML cannot be used."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise _init_error(pynvml, exc) from exc
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _optional(pynvml, lambda: cuda_version_string(
            pynvml.nvmlSystemGetCudaDriverVersion()))
        count = pynvml.nvmlDeviceGetCount()
        notes: list[str] = []
        devices = tuple(_read_device(pynvml, i, notes) for i in range(count))
        return RawSystem(driver, cuda, devices, tuple(notes))
    except pynvml.NVMLError as exc:
        raise HardwareError(f"NVML query failed: {exc}", fix="Check the GPU with `nvidia-smi`; "
                            "a GPU that has fallen off the bus needs a reset or reboot.",
                            hint=NO_DRIVER_HINT) from exc
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def read_inventory(env: Mapping[str, str] | None = None) -> Inventory:
    """The real GPUs of this machine, as the engine's CUDA process will see them."""
    from launcher.hardware.host import read_host

    raw = read_raw()
    return build_inventory(raw, os.environ if env is None else env, host=read_host(),
                           captured_at=datetime.now(UTC).isoformat(timespec="seconds"))


def _init_error(pynvml: Any, exc: Exception) -> HardwareError:
    no_driver = (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
                 pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
    if getattr(exc, "value", None) in no_driver:
        return HardwareError(f"No NVIDIA driver found: NVML could not be loaded ({exc}).",
                             fix=NO_DRIVER_FIX, hint=NO_DRIVER_HINT)
    return HardwareError(f"NVML initialisation failed ({exc}).",
                         fix="Check that `nvidia-smi` works for this user and that the driver "
                             "and libnvidia-ml versions match (reboot after a driver update).",
                         hint=NO_DRIVER_HINT)


def _read_memory(pynvml: Any, h: Any, name: str,
                 host: Callable[[], tuple[int, int]]) -> tuple[int, int | None, int, int, bool]:
    """(total, reserved, free, used, unified) for one device.

    NVML v2 first (it reports reserved memory), v1 when v2 is missing. A GPU without memory of
    its own (GB10) answers NOT_SUPPORTED to both; its budget is host RAM. A catalog entry marked
    unified_memory is read from the host even if a driver does answer, because NVML's and CUDA's
    free figure miss reclaimable page cache there (vLLM uses MemAvailable for the same reason).
    """
    from launcher.hardware.catalog import find_gpu

    gpu_type = find_gpu(name)
    unified = gpu_type is not None and gpu_type.unified_memory
    if not unified:
        try:
            mem = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
            return int(mem.total), int(mem.reserved), int(mem.free), int(mem.used), False
        except (pynvml.NVMLError, AttributeError):
            pass  # no v2 in this driver or binding: v1 below
        try:
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            return int(mem.total), None, int(mem.free), int(mem.used), False
        except pynvml.NVMLError_NotSupported:
            pass  # neither version: no framebuffer, i.e. unified memory
    total, available = host()
    return total, None, available, max(0, total - available), True


def _read_device(pynvml: Any, i: int, notes: list[str],
                 host: Callable[[], tuple[int, int]] = host_memory) -> RawDevice:
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    name = _text(pynvml.nvmlDeviceGetName(h))
    total, reserved, free, used, unified = _read_memory(pynvml, h, name, host)
    cc_major, cc_minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
    return RawDevice(
        nvml_index=i,
        name=name,
        uuid=_optional(pynvml, lambda: _text(pynvml.nvmlDeviceGetUUID(h))),
        pci_bus_id=_optional(pynvml, lambda: _text(pynvml.nvmlDeviceGetPciInfo(h).busId)),
        memory_total=total, memory_reserved=reserved,
        memory_free=free, memory_used=used, unified_memory=unified,
        compute_capability=(int(cc_major), int(cc_minor)),
        mig_mode=_optional(pynvml, lambda: pynvml.nvmlDeviceGetMigMode(h)[0]
                           == pynvml.NVML_DEVICE_MIG_ENABLE),
        processes=_read_processes(pynvml, h, i, notes),
        nvlinks=_read_nvlinks(pynvml, h),
    )


def _read_processes(pynvml: Any, h: Any, i: int, notes: list[str]) -> tuple[RawProcess, ...]:
    procs: list[RawProcess] = []
    for getter in (pynvml.nvmlDeviceGetComputeRunningProcesses,
                   pynvml.nvmlDeviceGetGraphicsRunningProcesses):
        try:
            listed = getter(h)
        except pynvml.NVMLError as exc:
            notes.append(f"GPU {i}: process list unavailable ({exc}); used memory still counts")
            continue
        for p in listed:
            used = p.usedGpuMemory
            procs.append(RawProcess(pid=int(p.pid), name=_process_name(int(p.pid)),
                                    used_bytes=None if used is None else int(used)))
    return tuple(procs)


def _read_nvlinks(pynvml: Any, h: Any) -> tuple[RawNvLink, ...] | None:
    types = {pynvml.NVML_NVLINK_DEVICE_TYPE_GPU: "gpu",
             pynvml.NVML_NVLINK_DEVICE_TYPE_IBMNPU: "ibmnpu",
             pynvml.NVML_NVLINK_DEVICE_TYPE_SWITCH: "switch"}
    links: list[RawNvLink] = []
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            if pynvml.nvmlDeviceGetNvLinkState(h, link) != pynvml.NVML_FEATURE_ENABLED:
                continue
            bus = _text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId)
        except pynvml.NVMLError_NotSupported:
            return None if link == 0 else tuple(links)
        except pynvml.NVMLError:
            continue  # link index beyond this GPU's links, or link down
        kind = _optional(pynvml, lambda lk=link: types.get(
            pynvml.nvmlDeviceGetNvLinkRemoteDeviceType(h, lk), "unknown")) or "unknown"
        links.append(RawNvLink(remote_bus_id=bus, remote_type=kind))
    return tuple(links)


def _process_name(pid: int) -> str | None:
    import psutil

    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None  # another container's pid namespace, or already gone


def _optional(pynvml: Any, fn: Any) -> Any:
    """A field some GPUs/drivers do not support: None instead of failing the whole reading."""
    try:
        return fn()
    except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound,
            pynvml.NVMLError_NoPermission):
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


