"""The edge around the pure planner: gather the inputs (inventory, model, engine version,
profile variants, what earlier boots on this host measured), plan, and attach the engine
command. Used by `launcher plan`, `serve --dry-run` and `serve`.

Earlier boots (`launcher.calibration.boot_store`) correct a plan for this host's real devices
only (NVML or host memory, or a relaunch on memory the engine measured), never one for
simulated GPUs or a snapshot: the plan is made once, its fingerprint looked up, and when the
boots call for more memory it is made again with that much more runtime reserve per device
(`PlanRequest.learned_bytes`), with a note saying from how many boots and how.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import Device
from launcher.models.spec import ModelSpec
from launcher.planner import Plan, PlanRequest
from launcher.planner import plan as make_plan
from launcher.policy import DEFAULT_HOST, DEFAULT_PORT, DEVICE_CHOICES

if TYPE_CHECKING:
    from launcher.calibration.boot_store import BootStore
    from launcher.calibration.boots import Fingerprint
    from launcher.planner.speed import SpeedInputs
    from launcher.render.fit import FitRow


@dataclass(frozen=True)
class Target:
    """Where and how the engine would run."""

    gpus: str | None = None
    inventory_file: str | None = None
    engine_version: str | None = None
    engine_python: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    device: str = "auto"  # auto | cuda | cpu
    engine_args: tuple[str, ...] = ()  # passthrough vLLM flags, checked against the plan
    price_file: str | None = None  # GPU prices for the plan's cost figures


def model_ref(spec: ModelSpec) -> str | None:
    """What the engine's `--model` gets: the local directory, else the repo id."""
    if spec.source.startswith("local:"):
        return spec.source.split(":", 1)[1]
    return spec.repo_id


def served_name(model: str) -> str | None:
    """Clients address the model by the name the user typed, when it is a plain alias."""
    if "/" in model or Path(model).expanduser().exists():
        return None
    return model


class ResolvedDevices(NamedTuple):
    device: Device
    devices: list[GpuInfo]
    source: str  # where the readings came from: nvml, simulated:…, file:…, host:…
    notes: list[str]
    driver: str | None = None  # NVIDIA driver of the inventory read (None: none known)


def resolve_devices(target: Target) -> ResolvedDevices:
    """The device kind, the devices to plan on, where they were read, notes, and the driver.

    `auto` is the GPUs NVML sees, else (no driver, or no GPU) the CPU backend on host memory.
    `--gpus`/`--inventory-file` describe GPUs unless `--device cpu` asks for the snapshot's host.
    """
    from launcher.errors import HardwareError, InputError
    from launcher.hardware import get_inventory
    from launcher.hardware.cpu import NodeMemory, cpu_device, read_node_memory

    if target.device not in DEVICE_CHOICES:
        raise InputError(f"--device {target.device!r} is not auto, cuda or cpu",
                         fix="Use --device auto (GPUs if any, else CPU), cuda or cpu.")
    if target.device == "cpu":
        if target.gpus:
            raise InputError("--device cpu with --gpus: simulated GPUs are not host memory",
                             fix="Drop --gpus to plan on this host's memory.")
        if target.inventory_file:
            inv = get_inventory(inventory_file=target.inventory_file)
            if inv.host is None:
                raise InputError(f"{target.inventory_file} has no host memory reading",
                                 fix="Record it with `launcher gpus --json` on the host.")
            mem = NodeMemory(0, inv.host.total_ram_bytes, inv.host.available_ram_bytes,
                             f"file:{target.inventory_file}")
            return ResolvedDevices(Device.CPU, [cpu_device(mem)], mem.source, [])
        mem = read_node_memory()
        return ResolvedDevices(Device.CPU, [cpu_device(mem)], f"host:{mem.source}", [])
    if target.gpus or target.inventory_file or target.device == "cuda":
        inv = get_inventory(gpus=target.gpus, inventory_file=target.inventory_file)
        return ResolvedDevices(Device.CUDA, list(inv.gpus), inv.source,
                               list(inv.assumptions), inv.driver_version)
    try:
        inv = get_inventory()
    except HardwareError as e:
        mem = read_node_memory()
        return ResolvedDevices(Device.CPU, [cpu_device(mem)], f"host:{mem.source}", [
            f"no GPU ({e.message.rstrip('.')}): planning for vLLM's CPU backend on host "
            "memory"])
    if not inv.gpus:
        mem = read_node_memory()
        return ResolvedDevices(Device.CPU, [cpu_device(mem)], f"host:{mem.source}", [
            "NVML sees no GPU: planning for vLLM's CPU backend on host memory"])
    return ResolvedDevices(Device.CUDA, list(inv.gpus), inv.source,
                           list(inv.assumptions), inv.driver_version)


MEASURED = "measured by the engine"  # the inventory source of a relaunch
# The devices with what other launchers on this host will still take counted as used, and
# the notes that say so (runtime/lease.py `HostLease.budget_around`).
Around = Callable[[Sequence[GpuInfo]], tuple[list[GpuInfo], list[str]]]


def build_plan(model: str, req: PlanRequest, target: Target,
               devices: Sequence[GpuInfo] | None = None, *,
               boots: BootStore | None = None, around: Around | None = None) -> Plan:
    """Plan `model`; `devices` replaces the inventory (a relaunch re-plans on memory the
    engine measured); `boots` is the boot store to learn from (default: the cache's);
    `around` takes off the memory other launchers on this host have planned but not yet
    allocated (`serve` passes its host lease, `launcher.runtime.lease`), real devices only."""
    from launcher.engines.calibration import calibration_for
    from launcher.engines.version import choose_version
    from launcher.engines.vllm import command, merge_engine_args
    from launcher.errors import InputError
    from launcher.memory.context import engine_context
    from launcher.models.profiles import find_profile
    from launcher.models.resolve import resolve_model

    if devices is None:
        device, devices, source, notes, driver = resolve_devices(target)
    else:
        device = Device.CPU if devices[0].is_cpu else Device.CUDA
        source, notes, driver = MEASURED, [], None
    if around is not None and learns_here(source):
        devices, lease_notes = around(devices)
        notes = [*notes, *lease_notes]
    req = replace(req, device=device)
    version, version_source = choose_version(target.engine_version, device)
    cal = calibration_for(version, device)
    spec = engine_context(resolve_model(model), cal.context)
    req.check(spec.max_position_embeddings)
    profile = find_profile(model) if not Path(model).expanduser().exists() else None
    templates = suggestion_templates(devices) if device == Device.CUDA else list(devices[:1])
    speed = speed_inputs(devices)

    def planned(r: PlanRequest) -> Plan:
        p = make_plan(spec, devices, cal, r,
                      variants=profile.variants if profile else (), model_ref=model_ref(spec),
                      engine_version_source=f"{version} ({version_source})",
                      templates=templates, inventory_source=source, speed=speed)
        return replace(p, notes=(*p.notes, *notes))

    p = planned(req)
    if p.feasible and learns_here(source):
        if device == Device.CUDA and driver is None:
            driver = driver_version()
        p = _learned(p, req, planned, version, driver, boots)
    if target.price_file:
        from launcher.prices import load_prices

        price = load_prices(target.price_file).get(devices[0].catalog_name if devices else None)
        p = replace(p, price=price) if price else replace(p, notes=(
            *p.notes, f"{target.price_file} has no price for {devices[0].name}: no cost "
            "figures"))
    if not p.feasible:
        return p
    cmd = command(p, python=target.engine_python or sys.executable, host=target.host,
                  port=target.port, served_model_name=served_name(model))
    try:
        return p.with_engine(merge_engine_args(cmd, target.engine_args))
    except ValueError as e:
        raise InputError(f"LAUNCHER_ENGINE_ARGS / --engine-args: {e}",
                         fix="Set planned values with the launcher's own options (they "
                             "are budgeted); pass only flags the plan does not decide.") from e


# ---- `launcher fit`: the same plan on every catalog GPU type and count --------------------

def fit_rows(model: str, req: PlanRequest, *, engine_version: str | None = None,
             price_file: str | None = None) -> tuple[list[FitRow], list[str]]:
    """One plan per catalog type × `policy.FIT_GPU_COUNTS` (idle simulated GPUs, no
    suggestions: the table is itself the list of what fits), priced from `price_file`.
    Returns the rows (catalog order) and notes (types without speed figures)."""
    from launcher.engines.calibration import calibration_for
    from launcher.engines.version import choose_version
    from launcher.errors import InputError
    from launcher.hardware.catalog import GpuRequest, load_catalog, simulated_gpus
    from launcher.memory.context import engine_context
    from launcher.models.profiles import find_profile
    from launcher.models.resolve import resolve_model
    from launcher.planner.search import Memo
    from launcher.planner.speed import SpeedInputs
    from launcher.policy import FIT_GPU_COUNTS
    from launcher.prices import load_prices
    from launcher.render.fit import FitRow
    from launcher.speed.hardware import gpu_speed
    from launcher.speed_io import load_speed_calibration

    prices = load_prices(price_file) if price_file else None
    req = replace(req, device=Device.CUDA)
    version, version_source = choose_version(engine_version, Device.CUDA)
    cal = calibration_for(version, Device.CUDA)
    spec = engine_context(resolve_model(model), cal.context)
    req.check(spec.max_position_embeddings)
    profile = find_profile(model) if not Path(model).expanduser().exists() else None
    variants = profile.variants if profile else ()
    scal = load_speed_calibration()
    rows: list[FitRow] = []
    notes: list[str] = []
    memo: Memo = {}  # one model and request: sizing and weight options shared by all rows
    for t in load_catalog().values():
        try:
            speed: SpeedInputs | None = SpeedInputs(scal, gpu_speed(t, scal))
        except InputError as e:
            speed = None
            notes.append(f"{t.name}: no speed prediction ({e.message})")
        for n in FIT_GPU_COUNTS:
            gpus = simulated_gpus([GpuRequest(t, n)])
            p = make_plan(spec, gpus, cal, req, variants=variants, model_ref=model_ref(spec),
                          engine_version_source=f"{version} ({version_source})",
                          inventory_source=f"simulated:{n}x{t.name}", speed=speed,
                          suggestions=False, memo=memo)
            rows.append(FitRow(t.name, n, p, prices.get(t.name) if prices else None))
    return rows, notes


# ---- speed and the GPU types suggestions name ----------------------------------------------

def speed_inputs(devices: Sequence[GpuInfo]) -> SpeedInputs | None:
    """The speed model's inputs for the GPUs planned on (the first, most free one's type):
    the fitted factors and the GPU's speed figures. None for the CPU backend or a GPU the
    catalog does not know (the plan then says its shape was not chosen by speed)."""
    from launcher.hardware.catalog import find_gpu
    from launcher.planner.speed import SpeedInputs
    from launcher.speed.hardware import gpu_speed
    from launcher.speed_io import load_speed_calibration

    if not devices or devices[0].is_cpu:
        return None
    entry = find_gpu(devices[0].catalog_name or devices[0].name)
    if entry is None:
        return None
    cal = load_speed_calibration()
    return SpeedInputs(cal, gpu_speed(entry, cal))


def suggestion_templates(devices: Sequence[GpuInfo]) -> list[GpuInfo]:
    """GPU types "what would fit" is phrased with: the type planned on, the next larger
    catalog types (`policy.SUGGESTION_OTHER_GPU_TYPES`), and H100-80GB as a common yardstick."""
    from launcher.hardware.catalog import (
        GpuRequest,
        GpuType,
        find_gpu,
        load_catalog,
        simulated_gpus,
    )
    from launcher.policy import SUGGESTION_MEMORY_STEP, SUGGESTION_OTHER_GPU_TYPES

    out = list(devices[:1])
    here = find_gpu(devices[0].catalog_name or devices[0].name) if devices else None
    size = devices[0].total_bytes if devices else 0
    bigger: list[GpuType] = []  # each at least SUGGESTION_MEMORY_STEP × the memory of the one before
    for t in sorted(load_catalog().values(), key=lambda t: t.total_bytes):
        if len(bigger) < SUGGESTION_OTHER_GPU_TYPES and t.total_bytes >= size * \
                SUGGESTION_MEMORY_STEP and (here is None or t.name != here.name):
            bigger.append(t)
            size = t.total_bytes
    h100 = load_catalog()["H100-80GB"]
    for t in [*bigger, *([] if h100 in bigger or here == h100 else [h100])]:
        out.append(simulated_gpus([GpuRequest(t, 1)])[0])
    return out


# ---- what earlier boots on this host taught ------------------------------------------------

def learns_here(inventory_source: str) -> bool:
    """Boots describe this host's real devices: not simulated GPUs, not a snapshot."""
    return inventory_source == "nvml" or inventory_source.startswith("host:") or \
        inventory_source == MEASURED


def driver_version() -> str | None:
    """The NVIDIA driver of this host (None without one)."""
    from launcher.errors import HardwareError
    from launcher.hardware import get_inventory

    try:
        return get_inventory().driver_version
    except HardwareError:
        return None


def boot_fingerprint(plan: Plan, target: Target, driver: str | None = None) -> Fingerprint | None:
    """The fingerprint a boot of `plan` is stored under (the serve loop records with it)."""
    from launcher.calibration.boots import fingerprint
    from launcher.engines.version import choose_version

    version, _ = choose_version(target.engine_version, plan.device)
    if plan.device == Device.CUDA and driver is None:
        driver = driver_version()
    return fingerprint(plan, engine=version, driver=driver, host=socket.gethostname())


def _learned(p: Plan, req: PlanRequest, replan: Callable[[PlanRequest], Plan], version: str,
             driver: str | None, boots: BootStore | None) -> Plan:
    """`p` corrected by the boots that match it: re-planned with their extra runtime per
    device, with the note that says so (and any problem the store had)."""
    from launcher.calibration.boot_store import BootStore
    from launcher.calibration.boots import correction, fingerprint, model_non_kv_bytes

    fp = fingerprint(p, engine=version, driver=driver, host=socket.gethostname())
    store = boots or BootStore()
    try:
        found = store.load()
    except OSError as e:
        return replace(p, notes=(*p.notes, f"the boot store {store.path} could not be read "
                                 f"({e.strerror or e}): planned from the fitted constants alone"))
    extra = [found.problem] if found.problem else []
    corr = correction(found.boots, fp, model_non_kv_bytes(p)) if fp is not None else None
    if corr is not None:
        if corr.extra_bytes:
            p = replan(replace(req, reserve_bytes=req.reserve_bytes + corr.extra_bytes,
                               learned_bytes=corr.extra_bytes))
        extra.append(corr.note())
    return replace(p, notes=(*p.notes, *extra)) if extra else p
