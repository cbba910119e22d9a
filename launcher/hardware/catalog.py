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
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from launcher.errors import InputError, UnknownGpuError
from launcher.hardware.inventory import GpuInfo, HostInfo, Inventory
from launcher.paths import profiles_dir
from launcher.units import MiB

INTERCONNECTS = ("nvlink", "nvlink-bridge", "pcie")
PRECISIONS = ("fp16", "bf16", "fp8", "int8", "fp4")
UNIFIED_NOTE = "unified memory: budget read from host RAM, shared with the OS"


@dataclass(frozen=True)
class TensorTflops:
    """Dense (no 2:4 sparsity) tensor-core peaks of one GPU, TFLOP/s (TOP/s for int8).

    Three states per precision, because a speed model must not read "unknown" as "unsupported":
    a number; None in `unsupported` (the hardware has no tensor-core path for it, e.g. FP8 on
    Ampere); or left out of the catalog (no public figure), listed in `unknown`.
    """

    values: Mapping[str, float] = field(default_factory=dict)
    unsupported: frozenset[str] = frozenset()

    @property
    def unknown(self) -> frozenset[str]:
        return frozenset(PRECISIONS) - set(self.values) - self.unsupported

    def peak(self, precision: str) -> float | None:
        """The dense peak, or None when the precision is unsupported or has no public figure
        (ask `supports` to tell the two apart)."""
        if precision not in PRECISIONS:
            raise KeyError(f"unknown precision {precision!r}; one of {PRECISIONS}")
        return self.values.get(precision)

    def supports(self, precision: str) -> bool | None:
        """True/False from the catalog, None when the catalog does not know."""
        if self.peak(precision) is not None:
            return True
        return False if precision in self.unsupported else None

    def __hash__(self) -> int:  # frozen dataclass with a Mapping field
        return hash((tuple(sorted(self.values.items())), self.unsupported))


@dataclass(frozen=True)
class GpuType:
    """One catalog entry. `total_bytes` is the CUDA-visible total (DESIGN §3 `T`).

    The speed fields (`tensor_tflops`, `pcie_gbps`) are optional: entries and catalogs written
    before they existed still load, with None. `unified_memory` marks a GPU without memory of its
    own (GB10): its budget is host RAM, shared with the OS.
    """

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
    pcie_gbps: float | None = None
    tensor_tflops: TensorTflops | None = None
    tensor_source: str | None = None
    unified_memory: bool = False

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
    """`count` GPUs of one type, as parsed from a `--gpus` spec; `nodes` > 0 when the spec
    named nodes (`2x8xH100-80GB`: 2 nodes of 8 GPUs each), 0 for GPUs of the one machine."""

    gpu: GpuType
    count: int
    nodes: int = 0

    def __str__(self) -> str:
        return (f"{self.nodes}x" if self.nodes else "") + f"{self.count}x{self.gpu.name}"


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
    return parse_catalog(data, path)


def parse_catalog(data: Any, path: Path) -> dict[str, GpuType]:
    """Validate a parsed gpus.yaml document; any bad field is an InputError (exit 2) naming
    `gpus.<name>.<field>`."""
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
# NODES x GPUS-PER-NODE x TYPE (`2x8xH100-80GB`); both counts as written, checked after.
_NODES_RE = re.compile(r"^\s*([^x×*,]*?)\s*[x×*]\s*([^x×*,]*?)\s*[x×*]\s*(.+?)\s*$",
                       re.IGNORECASE)
MAX_NODES = 1024  # plausibility limit of a spec (a cluster file lists its nodes itself)
MAX_SPEC_GPUS = 1024  # GPUs one spec may simulate (the inventory's own limit)
_ANY_COUNT_RE = re.compile(r"^\s*([^x×*]*?)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE)


def parse_gpu_spec(spec: str) -> list[GpuRequest]:
    """Parse `2xH100-80GB`, `H100`, `4xL4`, `2x H100` or a comma-separated mix, all on one
    machine; or nodes: `2x8xH100-80GB` (2 nodes of 8 GPUs), `1x8xH100-80GB,1x8xH200`.

    A bare name means one GPU. Counts must be positive integers; `0x…`, `-1x…`, `twox…`
    are input errors rather than being read as part of a GPU name. A spec either names nodes
    in every item or in none (one machine's GPUs cannot sit beside whole nodes).
    """
    if not spec or not spec.strip():
        raise InputError("Empty --gpus value.", fix="Give a count and a GPU type.",
                         hint="launcher plan MODEL --gpus 2xH100-80GB")
    requests: list[GpuRequest] = []
    for part in spec.split(","):
        if not part.strip():
            raise InputError(f"Empty item in --gpus (LAUNCHER_GPUS) {spec!r}.",
                             fix="Separate GPU groups with single commas.",
                             hint="launcher plan MODEL --gpus 2xH100-80GB,2xA100-80GB")
        requests.append(_parse_one(part, spec))
    if len({r.nodes > 0 for r in requests}) > 1:
        bare = next(r for r in requests if not r.nodes)
        raise InputError(
            f"--gpus (LAUNCHER_GPUS) {spec!r} mixes nodes (NODESxGPUSxTYPE) with GPUs of one machine "
            f"({bare}).",
            fix="Name the nodes in every item, e.g. 1x8xH100-80GB,1x4xA100-80GB.",
            hint="launcher plan MODEL --gpus 2x8xH100-80GB")
    total = sum(r.count * max(1, r.nodes) for r in requests)
    if total > MAX_SPEC_GPUS:
        raise InputError(f"--gpus (LAUNCHER_GPUS) {spec!r} asks for {total:,} GPUs (limit {MAX_SPEC_GPUS}).",
                         fix="Ask for fewer nodes or GPUs.",
                         hint="launcher plan MODEL --gpus 2x8xH100-80GB")
    return requests


def _parse_one(part: str, spec: str) -> GpuRequest:
    whole = find_gpu(part)
    if whole is not None:
        return GpuRequest(whole, 1)
    m = _COUNT_RE.match(part)
    if m and find_gpu(m.group(2)) is not None:
        return _single(m, spec)
    m = _NODES_RE.match(part)
    if m and find_gpu(m.group(3)) is not None:
        gpu = lookup_gpu(m.group(3))
        nodes, per = _count(m.group(1)), _count(m.group(2))
        if nodes is None or nodes > MAX_NODES:
            raise InputError(
                f"Bad node count {m.group(1)!r} in --gpus (LAUNCHER_GPUS) {spec!r}: the count of nodes must "
                f"be a whole number from 1 to {MAX_NODES}.",
                fix="Write NODESxGPUS-PER-NODExTYPE with positive integers.",
                hint=f"launcher plan MODEL --gpus 2x8x{gpu.name}")
        if per is None:
            raise InputError(
                f"Bad GPUs-per-node count {m.group(2)!r} in --gpus (LAUNCHER_GPUS) {spec!r}: the count must "
                "be a whole number ≥ 1.",
                fix="Write NODESxGPUS-PER-NODExTYPE with positive integers.",
                hint=f"launcher plan MODEL --gpus {m.group(1)}x8x{gpu.name}")
        return GpuRequest(gpu, per, nodes=nodes)
    m = _COUNT_RE.match(part)
    if m:
        return _single(m, spec)
    m = _ANY_COUNT_RE.match(part)
    if m and m.group(1) and find_gpu(m.group(2)) is not None:
        raise _bad_count(spec, m.group(1), lookup_gpu(m.group(2)).name)
    lookup_gpu(part)  # raises UnknownGpuError with suggestions
    raise AssertionError("unreachable")  # pragma: no cover


def _single(m: re.Match[str], spec: str) -> GpuRequest:
    """COUNT x TYPE on one machine."""
    count = int(m.group(1))
    gpu = lookup_gpu(m.group(2))
    if count <= 0:
        raise _bad_count(spec, m.group(1), gpu.name)
    return GpuRequest(gpu, count)


def _count(text: str) -> int | None:
    """A positive whole number written in ASCII digits, else None."""
    t = text.strip()
    if not t.isascii() or not t.isdigit() or len(t) > 6 or int(t) < 1:
        return None
    return int(t)


def _bad_count(spec: str, count: str, gpu_name: str) -> InputError:
    return InputError(
        f"Bad GPU count {count!r} in --gpus (LAUNCHER_GPUS) {spec!r}: the count must be a whole number ≥ 1.",
        fix="Write the count as a positive integer before 'x'.",
        hint=f"launcher plan MODEL --gpus 2x{gpu_name}",
    )


def simulated_gpus(requests: list[GpuRequest]) -> tuple[GpuInfo, ...]:
    """Idle GPUs (free = total, nothing used) numbered 0..n-1 in spec order; a request that
    names nodes adds that many nodes (`GpuInfo.node`), each with its own `count` GPUs.

    NVLink peers follow the catalog's interconnect within each group (never across nodes):
    `nvlink` (NVSwitch boards) links every GPU of the group, `nvlink-bridge` links pairs
    (0-1, 2-3, …), `pcie` none.
    """
    gpus: list[GpuInfo] = []
    groups: list[tuple[GpuRequest, int]] = []  # (request, node) per group of GPUs
    node = 0
    for req in requests:
        for _ in range(req.nodes or 1):
            groups.append((req, node))
            node += 1 if req.nodes else 0
    for req, node in groups:
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
                catalog_name=t.name, simulated=True, node=node,
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
            + (f"; {UNIFIED_NOTE}; simulated with all of it free (a real reading subtracts "
               "what the OS and other processes hold)" if r.gpu.unified_memory else "")
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
    unified = e.get("unified_memory", False)
    if not isinstance(unified, bool):
        raise _catalog_error(path, f"{where}.unified_memory", f"expected true/false: {unified!r}")
    tensor = _parse_tensor(path, where, e.get("tensor_tflops"))
    tensor_source = e.get("tensor_source")
    if tensor is not None and (not isinstance(tensor_source, str) or not tensor_source.strip()):
        raise _catalog_error(path, f"{where}.tensor_source",
                             "required with tensor_tflops: cite the datasheet")
    return GpuType(
        name=name, marketing_name=need("marketing_name", str), aliases=tuple(aliases),
        total_bytes=total, nvml_total_mib=nvml_mib, compute_capability=(cc[0], cc[1]),
        memory_bandwidth_gbps=float(need("memory_bandwidth_gbps", (int, float))),
        interconnect=interconnect, nvlink_gbps=None if nvlink is None else float(nvlink),
        source=need("source", str),
        pcie_gbps=_optional_rate(path, f"{where}.pcie_gbps", e.get("pcie_gbps")),
        tensor_tflops=tensor, tensor_source=tensor_source if tensor is not None else None,
        unified_memory=unified,
    )


def _optional_rate(path: Path, where: str, v: Any) -> float | None:
    """None, or a positive finite number (bools and strings are errors, not 1 or NaN)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise _catalog_error(path, where, f"expected a positive number or null, got {v!r}")
    return float(v)


def _parse_tensor(path: Path, where: str, raw: Any) -> TensorTflops | None:
    """`{fp16: N, bf16: N, fp8: N|null, int8: N|null, fp4: N|null}`; null = not supported in
    hardware, a missing key = no public figure."""
    if raw is None:
        return None
    field_path = f"{where}.tensor_tflops"
    if not isinstance(raw, dict):
        raise _catalog_error(path, field_path, f"expected a mapping of precisions, got {raw!r}")
    values: dict[str, float] = {}
    unsupported: set[str] = set()
    for key, v in raw.items():
        if key not in PRECISIONS:
            raise _catalog_error(path, f"{field_path}.{key}", f"unknown precision; one of "
                                 f"{', '.join(PRECISIONS)}")
        rate = _optional_rate(path, f"{field_path}.{key}", v)
        if rate is None:
            unsupported.add(key)
        else:
            values[key] = rate
    return TensorTflops(values=MappingProxyType(values), unsupported=frozenset(unsupported))


def _check_unique_keys(path: Path, catalog: dict[str, GpuType]) -> None:
    seen: dict[str, str] = {}
    for gpu in catalog.values():
        for alias in (gpu.name, *gpu.aliases):
            key = normalize_name(alias)
            if seen.get(key, gpu.name) != gpu.name:
                raise _catalog_error(path, f"gpus.{gpu.name}.aliases",
                                     f"{alias!r} also names {seen[key]}")
            seen[key] = gpu.name
