"""The GPU catalog (profiles/gpus.yaml) and simulated GPUs built from it.

`--gpus 2xH100-80GB` plans for GPUs that are not here; the catalog supplies what NVML would
have said (CUDA-visible total, compute capability, bandwidth, NVLink). Names are matched after
normalization (case, spaces, dashes and a leading "NVIDIA"/"GeForce"/"Tesla" ignored), so
"2x H100", "h100-sxm" and "NVIDIA H100 80GB HBM3" all find H100-80GB. An unknown name is an
error listing the catalog and the closest names, never a guess.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import InputError, UnknownGpuError
from launcher.hardware.inventory import GpuInfo, HostInfo, Inventory
from launcher.paths import profiles_dir
from launcher.units import MiB

INTERCONNECTS = ("nvlink", "nvlink-bridge", "pcie")


@dataclass(frozen=True)
class GpuType:
    """One catalog entry. `total_bytes` is the CUDA-visible total (DESIGN §3 `T`)."""

    name: str
    marketing_name: str
    aliases: tuple[str, ...]
    total_bytes: int
    nvml_total_mib: int | None
    compute_capability: tuple[int, int]
    memory_bandwidth_gbps: float
    interconnect: str
    nvlink_gbps: float | None
    source: str

    @property
    def nvml_total_bytes(self) -> int | None:
        return None if self.nvml_total_mib is None else self.nvml_total_mib * MiB

    @property
    def reserved_bytes(self) -> int | None:
        """Driver-reserved memory implied by the catalog (NVML total − CUDA total)."""
        nvml = self.nvml_total_bytes
        return None if nvml is None else nvml - self.total_bytes


@dataclass(frozen=True)
class GpuRequest:
    """`count` GPUs of one type, as parsed from a `--gpus` spec."""

    gpu: GpuType
    count: int

    def __str__(self) -> str:
        return f"{self.count}x{self.gpu.name}"


def normalize_name(name: str) -> str:
    """Lower-case alphanumerics only, without a vendor/brand prefix."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for prefix in ("nvidia", "geforce", "tesla"):
        key = key.removeprefix(prefix)
    return key


def catalog_path() -> Path:
    return profiles_dir() / "gpus.yaml"


@functools.cache
def load_catalog() -> dict[str, GpuType]:
    """Parse gpus.yaml once per process (it is read on every plan)."""
    path = catalog_path()
    try:
        data = yaml.load(path.read_text(encoding="utf-8"),
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"Cannot read GPU catalog {path}: {exc}",
                         fix="Reinstall the launcher or restore profiles/gpus.yaml.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict):
        raise _catalog_error(path, "gpus", "expected a mapping of GPU names")
    catalog = {name: _parse_entry(path, name, entry) for name, entry in data["gpus"].items()}
    _check_unique_keys(path, catalog)
    return catalog


@functools.cache
def _name_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for gpu in load_catalog().values():
        for alias in (gpu.name, *gpu.aliases):
            index[normalize_name(alias)] = gpu.name
    return index


def find_gpu(name: str) -> GpuType | None:
    """The catalog entry whose name or alias matches `name`, or None."""
    key = _name_index().get(normalize_name(name))
    return None if key is None else load_catalog()[key]


def lookup_gpu(name: str) -> GpuType:
    """Like `find_gpu`, but an unknown name is an UnknownGpuError with the closest matches."""
    gpu = find_gpu(name)
    if gpu is not None:
        return gpu
    catalog = load_catalog()
    index = _name_index()
    query = normalize_name(name)
    prefixed = [k for k in index if query and k.startswith(query)]
    close_keys = prefixed + difflib.get_close_matches(query, list(index), n=6, cutoff=0.5)
    close = list(dict.fromkeys(index[k] for k in close_keys))[:3]
    suggestion = f" Closest: {', '.join(close)}." if close else ""
    example = close[0] if close else "H100-80GB"
    raise UnknownGpuError(
        f"Unknown GPU type {name!r}.{suggestion} Known: {', '.join(catalog)}.",
        fix="Use a catalog name (or an alias) from profiles/gpus.yaml, or add the GPU there "
            "with a sourced CUDA-visible total.",
        hint=f"launcher plan MODEL --gpus 2x{example}",
    )


_COUNT_RE = re.compile(r"^\s*(-?\d+)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE)
_ANY_COUNT_RE = re.compile(r"^\s*([^x×*]*?)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE)


def parse_gpu_spec(spec: str) -> list[GpuRequest]:
    """Parse `2xH100-80GB`, `H100`, `4xL4`, `2x H100` or a comma-separated mix.

    A bare name means one GPU. The count must be a positive integer; `0x…`, `-1x…`, `twox…`
    are input errors rather than being read as part of a GPU name.
    """
    if not spec or not spec.strip():
        raise InputError("Empty --gpus value.", fix="Give a count and a GPU type.",
                         hint="launcher plan MODEL --gpus 2xH100-80GB")
    requests: list[GpuRequest] = []
    for part in spec.split(","):
        if not part.strip():
            raise InputError(f"Empty item in --gpus {spec!r}.",
                             fix="Separate GPU groups with single commas.",
                             hint="launcher plan MODEL --gpus 2xH100-80GB,2xA100-80GB")
        requests.append(_parse_one(part, spec))
    return requests


def _parse_one(part: str, spec: str) -> GpuRequest:
    whole = find_gpu(part)
    if whole is not None:
        return GpuRequest(whole, 1)
    m = _COUNT_RE.match(part)
    if m:
        count = int(m.group(1))
        gpu = lookup_gpu(m.group(2))
        if count <= 0:
            raise _bad_count(spec, m.group(1), gpu.name)
        return GpuRequest(gpu, count)
    m = _ANY_COUNT_RE.match(part)
    if m and m.group(1) and find_gpu(m.group(2)) is not None:
        raise _bad_count(spec, m.group(1), lookup_gpu(m.group(2)).name)
    lookup_gpu(part)  # raises UnknownGpuError with suggestions
    raise AssertionError("unreachable")  # pragma: no cover


def _bad_count(spec: str, count: str, gpu_name: str) -> InputError:
    return InputError(
        f"Bad GPU count {count!r} in --gpus {spec!r}: the count must be a whole number ≥ 1.",
        fix="Write the count as a positive integer before 'x'.",
        hint=f"launcher plan MODEL --gpus 2x{gpu_name}",
    )


def simulated_gpus(requests: list[GpuRequest]) -> tuple[GpuInfo, ...]:
    """Idle GPUs (free = total, nothing used) numbered 0..n-1 in spec order.

    NVLink peers follow the catalog's interconnect within each group: `nvlink` (NVSwitch
    boards) links every GPU of the group, `nvlink-bridge` links pairs (0-1, 2-3, …), `pcie` none.
    """
    gpus: list[GpuInfo] = []
    for req in requests:
        start = len(gpus)
        members = list(range(start, start + req.count))
        for i in members:
            t = req.gpu
            if t.interconnect == "nvlink":
                peers = tuple(j for j in members if j != i)
            elif t.interconnect == "nvlink-bridge":
                mate = start + ((i - start) ^ 1)
                peers = (mate,) if mate in members else ()
            else:
                peers = ()
            gpus.append(GpuInfo(
                index=i, uuid=None, name=t.marketing_name, total_bytes=t.total_bytes,
                nvml_total_bytes=t.nvml_total_bytes, reserved_bytes=t.reserved_bytes,
                free_bytes=t.total_bytes, used_bytes=0,
                compute_capability=t.compute_capability, mig_mode=False, processes=(),
                nvlink_peers=peers, memory_bandwidth_gbps=t.memory_bandwidth_gbps,
                catalog_name=t.name, simulated=True,
            ))
    return tuple(gpus)


def simulated_inventory(spec: str, host: HostInfo | None = None) -> Inventory:
    """An Inventory of idle catalog GPUs for planning without hardware.

    The host is None unless given: this machine's RAM says nothing about the planned server.
    """
    requests = parse_gpu_spec(spec)
    return Inventory(
        gpus=simulated_gpus(requests), host=host,
        source="simulated:" + ",".join(str(r) for r in requests),
        driver_version=None, cuda_driver_version=None, captured_at=None,
        assumptions=tuple(
            f"{r.gpu.name}: simulated idle GPU; CUDA-visible total {r.gpu.total_bytes} bytes "
            f"from profiles/gpus.yaml"
            + (" (DERIVED from NVML total, see its source)"
               if r.gpu.source.startswith("DERIVED") else "")
            for r in requests
        ),
    )


# ---- catalog validation ------------------------------------------------------------------
def _catalog_error(path: Path, field: str, problem: str) -> InputError:
    return InputError(f"Malformed GPU catalog {path}: field {field}: {problem}",
                      fix="Correct profiles/gpus.yaml (see its header for the fields).")


def _parse_entry(path: Path, name: Any, e: Any) -> GpuType:
    where = f"gpus.{name}"
    if not isinstance(name, str) or not isinstance(e, dict):
        raise _catalog_error(path, where, "expected a mapping")

    def need(key: str, typ: type | tuple[type, ...], nullable: bool = False) -> Any:
        if key not in e:
            raise _catalog_error(path, f"{where}.{key}", "missing")
        v = e[key]
        if v is None and nullable:
            return None
        if not isinstance(v, typ) or isinstance(v, bool):
            raise _catalog_error(path, f"{where}.{key}", f"unexpected value {v!r}")
        return v

    cc = need("compute_capability", list)
    if len(cc) != 2 or not all(isinstance(x, int) for x in cc):
        raise _catalog_error(path, f"{where}.compute_capability", f"expected [major, minor]: {cc}")
    aliases = need("aliases", list)
    if not all(isinstance(a, str) for a in aliases):
        raise _catalog_error(path, f"{where}.aliases", "expected strings")
    interconnect = need("interconnect", str)
    if interconnect not in INTERCONNECTS:
        raise _catalog_error(path, f"{where}.interconnect", f"one of {INTERCONNECTS}")
    total = need("total_bytes", int)
    nvml_mib = need("nvml_total_mib", int, nullable=True)
    if total <= 0 or (nvml_mib is not None and total > nvml_mib * MiB):
        raise _catalog_error(path, f"{where}.total_bytes",
                             "must be positive and not above the NVML total")
    nvlink = need("nvlink_gbps", (int, float), nullable=True)
    return GpuType(
        name=name, marketing_name=need("marketing_name", str), aliases=tuple(aliases),
        total_bytes=total, nvml_total_mib=nvml_mib, compute_capability=(cc[0], cc[1]),
        memory_bandwidth_gbps=float(need("memory_bandwidth_gbps", (int, float))),
        interconnect=interconnect, nvlink_gbps=None if nvlink is None else float(nvlink),
        source=need("source", str),
    )


def _check_unique_keys(path: Path, catalog: dict[str, GpuType]) -> None:
    seen: dict[str, str] = {}
    for gpu in catalog.values():
        for alias in (gpu.name, *gpu.aliases):
            key = normalize_name(alias)
            if seen.get(key, gpu.name) != gpu.name:
                raise _catalog_error(path, f"gpus.{gpu.name}.aliases",
                                     f"{alias!r} also names {seen[key]}")
            seen[key] = gpu.name
