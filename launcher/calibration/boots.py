"""What earlier verified boots on this host measured, and the correction they teach. Pure.

After a verified start the serve loop records one `Boot`: the plan's numbers on the device
that came out worst, what the engine measured there (NVML per process on a GPU, PSS of the
engine's process tree on the CPU) and the components its log printed, under a `Fingerprint`
(`boot_store` keeps them in a file). The next plan for the same host asks `correction`:

* an EXACT match (same engine version, device, driver, model, dtype and quantization,
  TP/PP/DP, batch, enforce-eager and KV dtype) reserves what that configuration measured over
  the memory model: the largest overshoot of its last `EXACT_RECENT` boots, so run-to-run
  noise (PSS, allocator rounding) never lets the next start come in short;
* a NEAR match (same engine, device and model; another shape or batch) reserves the
  median relative overshoot of those boots times this plan's modelled non-KV memory per
  device. Relative, because what changes between near boots (TP/PP split the weights, the
  batch sizes the activation) scales the components the model sized, so a fixed byte count
  measured at TP1 would over-reserve every TP4 shard; the median, because one odd boot (a
  neighbour's page cache, a different compile) must not set the rule.

The overshoot of a boot is measured engine memory minus what the memory model planned for it
(its planned engine total less any reserve the plan already carried), so a corrected plan
records the same overshoot again instead of learning its own correction away. A correction
only adds memory: an undershoot is not taken back (the plan stays at least the model), and it
is capped (`cap_bytes`), since a figure far off the model is more likely a bad measurement
than a rule. Below `NOISE_BYTES` it is no correction at all.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from launcher.memory.calibration import Device
from launcher.memory.components import Component
from launcher.planner.plan import Plan
from launcher.units import GiB, MiB, fmt_gib

EXACT_RECENT = 3  # exact boots looked at: the newest few (the host may have changed since)
NOISE_BYTES = 32 * MiB  # a smaller correction is noise, not a rule
CAP_FRACTION = 0.25  # at most this share of the plan's modelled non-KV memory per device …
CAP_FLOOR_BYTES = 1 * GiB  # … or this much, whichever is larger

# Components the engine's log prints, as `LogFigures` field → name in the record.
FIGURES = {"model_loading_gib": "weights", "kv_cache_gib": "kv_cache",
           "graph_capture_gib": "cuda_graphs", "summary_activation_peak_gib": "activation",
           "summary_non_torch_gib": "non_torch", "profile_non_torch_increase_gib": "non_torch",
           "host_non_kv_gib": "host_non_kv"}


@dataclass(frozen=True)
class Fingerprint:
    """What makes two boots the same configuration on the same machine."""

    engine: str  # the vLLM version planned for (installed: the full version)
    device: str  # cuda | cpu
    device_name: str  # the GPU name(s), or "cpu"
    driver: str | None  # NVIDIA driver version; None on the CPU
    # Recorded, not matched: a container's hostname changes on every start while the store
    # (on the cache volume) and the hardware (device name, driver) stay the same.
    host: str = field(compare=False)
    model: str  # what --model got: a directory or a repo id
    dtype: str  # the serving dtype
    quantization: str  # "none" or the method
    tp: int
    pp: int
    dp: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enforce_eager: bool
    kv_cache_dtype: str

    # The fields a NEAR match shares: the engine, the machine and the model.
    NEAR = ("engine", "device", "device_name", "driver", "model", "dtype", "quantization")

    def near(self, other: Fingerprint) -> bool:
        return all(getattr(self, k) == getattr(other, k) for k in self.NEAR)

    @property
    def shape(self) -> str:
        return (f"TP{self.tp}×PP{self.pp}×DP{self.dp} {self.max_num_seqs} seqs/"
                f"{self.max_num_batched_tokens} tok{' eager' if self.enforce_eager else ''}"
                f"{' kv ' + self.kv_cache_dtype if self.kv_cache_dtype != 'auto' else ''}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(**{f.name: _typed(d, f.name, f.type) for f in fields(cls)})


def fingerprint(plan: Plan, *, engine: str, driver: str | None, host: str) -> Fingerprint | None:
    """The fingerprint of a feasible plan (None when nothing was chosen)."""
    d, c = plan.decision, plan.chosen
    if d is None or c is None:
        return None
    cpu = plan.device == Device.CPU
    names = sorted({g.name for g in c.gpus})
    return Fingerprint(
        engine=engine, device=str(plan.device), device_name="cpu" if cpu else " + ".join(names),
        driver=None if cpu else driver, host=host, model=d.model or plan.model.name,
        dtype=d.dtype, quantization=d.quantization or "none", tp=d.tensor_parallel_size,
        pp=d.pipeline_parallel_size, dp=d.data_parallel_size, max_num_seqs=d.max_num_seqs,
        max_num_batched_tokens=d.max_num_batched_tokens, enforce_eager=d.enforce_eager,
        kv_cache_dtype=d.kv_cache_dtype)


def model_non_kv_bytes(plan: Plan) -> int:
    """What the memory model alone planned per device besides the KV cache, on the device
    where it planned the most: weights, activation, graphs and runtime, without memory other
    processes hold and without any reserve the request carried."""
    return max((b.non_kv_bytes - b.planned[Component.OTHER] - plan.request.reserve_bytes
                for b in plan.budgets), default=0)


@dataclass(frozen=True)
class Boot:
    """One verified start: the plan's numbers and what was measured, on one device."""

    at: str  # ISO time
    fingerprint: Fingerprint
    model_name: str
    max_model_len: int
    device_index: int  # the device these numbers are of: the one furthest over its plan
    devices: int
    planned: dict[str, int]  # bytes per component on that device, as planned
    reserve_bytes: int  # extra the plan carried (failed launches and earlier boots taught)
    engine_planned_bytes: int  # the engine's planned total there (every component but other)
    engine_measured_bytes: int | None  # what it held after warm-up (None: not measurable)
    figures: dict[str, int]  # bytes per component the engine's log printed
    source: str  # how it was measured

    @property
    def model_non_kv_bytes(self) -> int:
        return self.engine_planned_bytes - self.reserve_bytes - self.planned.get("kv_cache", 0)

    @property
    def overshoot_bytes(self) -> int | None:
        """Measured engine memory minus what the memory model planned (negative: under)."""
        if self.engine_measured_bytes is None:
            return None
        return self.engine_measured_bytes - (self.engine_planned_bytes - self.reserve_bytes)

    @property
    def overshoot_fraction(self) -> float | None:
        over, base = self.overshoot_bytes, self.model_non_kv_bytes
        return None if over is None or base <= 0 else over / base

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint.to_json(),
                "overshoot_bytes": self.overshoot_bytes}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Boot:
        """Strict: a missing or mistyped field is a ValueError (the store is then corrupt)."""
        if not isinstance(d, Mapping):
            raise ValueError("a boot is not an object")
        fp = d.get("fingerprint")
        if not isinstance(fp, Mapping):
            raise ValueError("a boot has no fingerprint object")
        out: dict[str, Any] = {"fingerprint": Fingerprint.from_json(fp)}
        for f in fields(cls):
            if f.name != "fingerprint":
                out[f.name] = _typed(d, f.name, f.type)
        for name in ("planned", "figures"):
            if not all(isinstance(k, str) and _is_int(v) for k, v in out[name].items()):
                raise ValueError(f"boot {name} holds a value that is not bytes")
        return cls(**out)


def boot_of(plan: Plan, devices: Sequence[Mapping[str, Any]], figures: Mapping[str, Any],
            fp: Fingerprint, at: str) -> Boot:
    """The record of a verified start: `devices` are the verification's per-device rows
    (index, engine_planned_bytes, engine_measured_bytes, source), `figures` the engine
    log's (`LogFigures.to_json()`)."""
    budgets = {b.index: b for b in plan.budgets}

    def over(row: Mapping[str, Any]) -> float:
        m = row.get("engine_measured_bytes")
        return float("-inf") if m is None else m - row["engine_planned_bytes"]

    rows = [r for r in devices if r.get("index") in budgets]
    if not rows:
        raise ValueError("no measured device belongs to the plan")
    row = max(rows, key=over)
    b = budgets[row["index"]]
    logged: dict[str, int] = {}
    for key, name in FIGURES.items():
        v = figures.get(key)
        if isinstance(v, int | float) and name not in logged:
            logged[name] = int(v * GiB)
    measured = row.get("engine_measured_bytes")
    d = plan.decision
    return Boot(at=at, fingerprint=fp, model_name=plan.model.name,
                max_model_len=d.max_model_len if d else 0, device_index=b.index,
                devices=len(plan.budgets),
                planned={str(k): int(v) for k, v in b.planned.items()},
                reserve_bytes=plan.request.reserve_bytes,
                engine_planned_bytes=int(row["engine_planned_bytes"]),
                engine_measured_bytes=None if measured is None else int(measured),
                figures=logged, source=str(row.get("source") or ""))


@dataclass(frozen=True)
class Correction:
    """Extra runtime memory per device that earlier boots call for, and why."""

    extra_bytes: int  # 0: the boots measured within the model (or too little to matter)
    kind: str  # "exact" or "near"
    boots: int  # how many boots it rests on
    raw_bytes: int  # before the floor at 0 and the cap
    fraction: float | None = None  # near: the median relative overshoot
    base_bytes: int = 0  # near: the plan's modelled non-KV memory it was applied to
    cap: int = 0

    @property
    def capped(self) -> bool:
        return self.raw_bytes > self.cap

    def note(self) -> str:
        head = (f"calibrated from {self.boots} boot{'s' if self.boots != 1 else ''} on this "
                f"host (+{fmt_gib(self.extra_bytes)} runtime per device)")
        if self.kind == "exact":
            why = (f"this configuration measured {_signed(self.raw_bytes)} against the memory "
                   f"model (the largest of its last {min(self.boots, EXACT_RECENT)})")
        else:
            why = (f"this model in other shapes or batches measured a median "
                   f"{self.fraction or 0:+.1%} against the memory model's non-KV memory; "
                   f"applied to this plan's {fmt_gib(self.base_bytes)}")
        if self.capped:
            why += f"; capped at {fmt_gib(self.cap)}"
        elif self.extra_bytes == 0:
            why += ("; within the model: nothing added" if self.raw_bytes < NOISE_BYTES and
                    self.raw_bytes >= 0 else "; under the model: the plan is not shrunk")
        return f"{head}: {why}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "capped": self.capped, "note": self.note()}


def cap_bytes(base_non_kv: int) -> int:
    return max(CAP_FLOOR_BYTES, int(CAP_FRACTION * base_non_kv))


def correction(boots: Sequence[Boot], fp: Fingerprint, base_non_kv: int) -> Correction | None:
    """The correction for a plan with fingerprint `fp` whose memory model planned
    `base_non_kv` bytes besides the KV cache per device; None when no boot matches."""
    usable = [b for b in boots if b.overshoot_bytes is not None]
    cap = cap_bytes(base_non_kv)
    exact = [b for b in usable if b.fingerprint == fp]
    if exact:
        raw = max(int(b.overshoot_bytes or 0) for b in exact[-EXACT_RECENT:])
        return Correction(_clamp(raw, cap), "exact", len(exact), raw, cap=cap)
    near = [b for b in usable if b.fingerprint.near(fp) and b.overshoot_fraction is not None]
    if not near:
        return None
    frac = statistics.median(b.overshoot_fraction or 0.0 for b in near)
    raw = int(frac * base_non_kv)
    return Correction(_clamp(raw, cap), "near", len(near), raw, fraction=frac,
                      base_bytes=base_non_kv, cap=cap)


def _clamp(raw: int, cap: int) -> int:
    if raw < NOISE_BYTES:
        return 0
    return -(-min(raw, cap) // MiB) * MiB  # whole MiB, rounded up


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + fmt_gib(abs(n))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _typed(d: Mapping[str, Any], name: str, annotation: object) -> Any:
    """`d[name]` checked against its field's annotation (as written, a string)."""
    if name not in d:
        raise ValueError(f"missing {name!r}")
    v = d[name]
    kind = str(annotation)
    optional = "None" in kind
    if v is None:
        if optional:
            return None
        raise ValueError(f"{name!r} is null")
    base = kind.replace(" | None", "")
    ok = {"str": isinstance(v, str), "int": _is_int(v), "bool": isinstance(v, bool),
          "dict[str, int]": isinstance(v, dict)}.get(base)
    if ok is None:
        raise ValueError(f"no reader for {name!r} ({kind})")
    if not ok:
        raise ValueError(f"{name!r} is not {base}: {v!r}")
    return v
