"""The fitted efficiency factors of the speed model, per engine and GPU class (typed, frozen).

The physics in `launcher.speed.model` gives the time a step would take at the datasheet's
bandwidth and tensor peak; real kernels reach a fraction of each, and every engine step costs
some host time. Those fractions and costs are fitted on published serving benchmarks
(`calibration/speed/points.csv`, `bench/speed_accuracy.py --fit`) and kept as data in
`profiles/engines/speed.yaml`, one block per engine with optional per-GPU-class overrides.
The file also carries datasheet tensor peaks per GPU, used until the GPU catalog has them.

Pure: `calibration_from_dict` parses what the edge (`launcher.speed_io`) read; a malformed
file fails with InputError naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from launcher.errors import InputError

TENSOR_DTYPES = ("fp16", "bf16", "fp8", "int8", "fp4")
FACTORS = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms",
           "per_sequence_overhead_us", "allreduce_latency_us", "link_efficiency",
           "moe_layer_overhead_us", "pcie_allreduce_latency_us")
# Factors a file may leave out, with the value they then take (older files, other engines).
# The PCIe all-reduce latency: NCCL's small-message time on 8 PCIe cards is 42 us (8x RTX 4090,
# github.com/NVIDIA/nccl/issues/1530) to 54 us (8x RTX 3090, NVIDIA/nccl/issues/1439); 28 us at
# tp 2 grows to 42 us at tp 8 (ALLREDUCE_GROWTH in launcher/speed/model.py).
OPTIONAL = {"link_efficiency": 0.7, "moe_layer_overhead_us": 0.0,
            "pcie_allreduce_latency_us": 28.0}
FRACTIONS = ("bandwidth_efficiency", "compute_efficiency", "link_efficiency")


@dataclass(frozen=True)
class EngineSpeed:
    """How close one engine gets to the hardware: fractions of peak and fixed costs."""

    bandwidth_efficiency: float  # achieved / datasheet memory bandwidth while decoding
    compute_efficiency: float  # achieved / dense tensor peak on large token batches
    step_overhead_ms: float  # host time per engine step (scheduler, sampler, launch)
    per_sequence_overhead_us: float  # host time per running sequence per step
    # Fixed cost of one tensor-parallel all-reduce over NVLink / NVSwitch at tp 2 (the engine's
    # one-shot kernel; set from microbenchmarks, not fitted), growing mildly with tp.
    allreduce_latency_us: float
    link_efficiency: float = 0.7  # achieved / nominal NVLink or PCIe bandwidth
    # Fixed time a MoE layer adds to every step, whatever the batch: routing, top-k, the
    # token permutation and the grouped-GEMM launches (seen at low concurrency).
    moe_layer_overhead_us: float = 0.0
    # The same fixed cost over PCIe (NCCL; vLLM's custom kernel needs NVLink beyond tp 2).
    pcie_allreduce_latency_us: float = 28.0

    def to_json(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in FACTORS}


@dataclass(frozen=True)
class GpuPeak:
    """Datasheet figures the catalog may not carry yet: dense tensor TFLOP/s by dtype (None:
    no such tensor path) and PCIe bandwidth per direction (GB/s)."""

    tflops: tuple[tuple[str, float | None], ...]
    pcie_gbps: float

    def tflops_for(self, dtype: str) -> float | None:
        return dict(self.tflops).get(dtype)


@dataclass(frozen=True)
class SpeedCalibration:
    engines: Mapping[str, EngineSpeed]
    classes: Mapping[str, Mapping[str, EngineSpeed]] = field(default_factory=dict)
    peaks: Mapping[str, GpuPeak] = field(default_factory=dict)
    source: str = ""

    def factors(self, engine: str, gpu_class: str | None = None) -> EngineSpeed:
        """The engine's factors, with its GPU-class override where one was fitted."""
        if engine not in self.engines:
            raise InputError(f"no speed calibration for engine {engine!r}",
                             fix=f"Use one of {', '.join(sorted(self.engines))}.")
        by_class = self.classes.get(engine, {})
        if gpu_class is not None and gpu_class in by_class:
            return by_class[gpu_class]
        return self.engines[engine]

    def with_factors(self, engine: str, speed: EngineSpeed,
                     gpu_class: str | None = None) -> SpeedCalibration:
        """A copy with one engine's (or one engine-and-class's) factors replaced (the fit)."""
        if gpu_class is None:
            return replace(self, engines={**self.engines, engine: speed})
        classes = {k: dict(v) for k, v in self.classes.items()}
        classes.setdefault(engine, {})[gpu_class] = speed
        return replace(self, classes=classes)


def gpu_class(compute_capability: tuple[int, int]) -> str:
    """The architecture a set of kernels is tuned for, from the compute capability."""
    major, minor = compute_capability
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "hopper"
    if (major, minor) == (8, 9):
        return "ada"
    if major == 8:
        return "ampere"
    return "turing" if (major, minor) == (7, 5) else "older"


# ---- parsing ---------------------------------------------------------------------------------

def _err(where: str, problem: str, source: str) -> InputError:
    return InputError(f"{source}: {where} {problem}",
                      fix=f"Correct {where} in {source} (see bench/speed_accuracy.py --fit).")


def _number(raw: Any, where: str, source: str, *, lo: float = 0.0, hi: float = math.inf,
            open_lo: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _err(where, f"is not a number: {raw!r}", source)
    x = float(raw)
    if x < lo or (open_lo and x == lo) or x > hi:
        raise _err(where, f"{x} is outside {'(' if open_lo else '['}{lo}, {hi}]", source)
    return x


def _mapping(raw: Any, where: str, source: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _err(where, "is not a mapping", source)
    return raw


def _speed(raw: Any, where: str, source: str, base: EngineSpeed | None = None) -> EngineSpeed:
    """One factor block; with `base`, a class override that names only what differs."""
    m = _mapping(raw, where, source)
    unknown = set(m) - set(FACTORS) - {"fit", "note"}
    if unknown:
        raise _err(f"{where}.{sorted(unknown)[0]}", "is not a speed factor", source)
    values: dict[str, float] = {}
    for k in FACTORS:
        if k not in m:
            if base is not None:
                values[k] = getattr(base, k)
                continue
            if k in OPTIONAL:
                values[k] = OPTIONAL[k]
                continue
            raise _err(f"{where}.{k}", "is missing", source)
        frac = k in FRACTIONS
        values[k] = _number(m[k], f"{where}.{k}", source, hi=1.0 if frac else math.inf,
                            open_lo=frac)
    return EngineSpeed(**values)


def calibration_from_dict(raw: Any, source: str = "speed.yaml") -> SpeedCalibration:
    top = _mapping(raw, "the file", source)
    if top.get("schema_version") != 1:
        raise _err("schema_version", f"is {top.get('schema_version')!r}, expected 1", source)
    engines: dict[str, EngineSpeed] = {}
    classes: dict[str, dict[str, EngineSpeed]] = {}
    for name, block in _mapping(top.get("engines"), "engines", source).items():
        where = f"engines.{name}"
        b = _mapping(block, where, source)
        engines[str(name)] = base = _speed({k: v for k, v in b.items() if k != "classes"},
                                           where, source)
        for cls, over in _mapping(b.get("classes", {}), f"{where}.classes", source).items():
            classes.setdefault(str(name), {})[str(cls)] = _speed(
                over, f"{where}.classes.{cls}", source, base)
    if not engines:
        raise _err("engines", "is empty", source)
    peaks: dict[str, GpuPeak] = {}
    for gpu, block in _mapping(top.get("gpu_peaks", {}), "gpu_peaks", source).items():
        where = f"gpu_peaks.{gpu}"
        b = _mapping(block, where, source)
        tf = _mapping(b.get("tensor_tflops"), f"{where}.tensor_tflops", source)
        unknown = set(tf) - set(TENSOR_DTYPES)
        if unknown:
            raise _err(f"{where}.tensor_tflops.{sorted(unknown)[0]}", "is not a tensor dtype",
                       source)
        pairs = tuple((d, None if tf.get(d) is None else
                       _number(tf[d], f"{where}.tensor_tflops.{d}", source, open_lo=True))
                      for d in TENSOR_DTYPES)
        peaks[str(gpu)] = GpuPeak(pairs, _number(b.get("pcie_gbps"), f"{where}.pcie_gbps",
                                                 source, open_lo=True))
    return SpeedCalibration(engines=engines, classes=classes, peaks=peaks,
                            source=str(top.get("source", source)))
