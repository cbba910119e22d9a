"""Accuracy per vLLM version: public start-ups of newer versions, each estimated with its own rules.

The 0.19 sweep (`accuracy.py`) is where the constants were fitted. Newer versions change how
vLLM budgets memory (0.20 takes the CUDA-graph estimate out of the KV budget, 0.29 measures it
differently, …), so a run is only compared with the estimate of the rules of *its* version:
`calibration_for(version)`. A version without an entry in `profiles/engines/vllm.yaml` is
reported as "not modelled", never estimated with another version's constants.

Two figures per run, both per GPU of rank 0:

- KV cache GiB, as vLLM printed it ("Available KV cache memory");
- the non-KV total: what vLLM takes out of its budget U·T before the KV cache, i.e. weights +
  activation peak + non-torch memory (+ the CUDA-graph estimate in versions that subtract it,
  ≥ 0.20). Measured as the sum of the printed components when the run printed them all, else as
  U·T − KV (flagged "derived": T·U from the printed requested memory or total × utilization).

Target per run (the issue's): non-KV total within 0.5 GiB or 5 %.

Rows come from `calibration/vllm-newer-logs.csv` (its own columns, see `NEWER_COLUMNS`) and
from the rows of `calibration/vllm-memory-reports.csv` of versions after 0.19, adapted. Nothing
here knows where the data lives: callers pass paths and config directories.
"""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypedDict

from launcher.calibration.accuracy import MissingConfigError, ModelConfigs, Row, load_spec, rel
from launcher.errors import LauncherError
from launcher.hardware.catalog import simulated_inventory
from launcher.hardware.inventory import GpuInfo
from launcher.memory.calibration import EngineCalibration
from launcher.memory.estimate import EngineFlags, estimate
from launcher.units import GiB

NEWER_COLUMNS = (
    "source", "vllm_version", "model", "dtype", "quantization", "kv_cache_dtype", "gpu",
    "gpu_catalog", "compute_capability", "gpu_total_gib", "num_gpus", "tensor_parallel_size",
    "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
    "max_num_seqs", "max_num_batched_tokens", "enforce_eager", "status", "weights_gib",
    "activation_peak_gib", "non_torch_gib", "cuda_graph_estimated_gib", "cuda_graph_actual_gib",
    "requested_gib", "kv_cache_gib", "kv_cache_tokens", "max_concurrency", "log_file",
    "verbatim_log", "notes",
)
"""Header of calibration/vllm-newer-logs.csv. Figures are GiB per GPU of rank 0 as printed;
blank = not printed. `gpu_catalog` names the GPU in profiles/gpus.yaml when it is there;
`status` is ok (started) or failed; `log_file` is the trimmed excerpt in vllm-issues/."""

NUMERIC_COLUMNS = (
    "gpu_total_gib", "gpu_memory_utilization", "weights_gib", "activation_peak_gib",
    "non_torch_gib", "cuda_graph_estimated_gib", "cuda_graph_actual_gib", "requested_gib",
    "kv_cache_gib", "max_concurrency")
INT_COLUMNS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
               "max_model_len", "max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens")

NON_KV_TARGET_GIB = 0.5
NON_KV_TARGET_PCT = 5.0
FIRST_NEWER = (0, 20)  # versions after the calibrated 0.19

CalibrationFor: TypeAlias = Callable[[str], EngineCalibration]


# ---- the rows ------------------------------------------------------------------------------


def read_newer_logs(path: Path) -> list[dict[str, str]]:
    """Rows of vllm-newer-logs.csv; ValueError when the header or a figure is malformed."""
    reader = csv.DictReader(path.read_text().splitlines())
    if tuple(reader.fieldnames or ()) != NEWER_COLUMNS:
        raise ValueError(f"{path}: header is not {','.join(NEWER_COLUMNS)}")
    rows = list(reader)
    for i, row in enumerate(rows, start=2):
        check_row(row, where=f"{path}:{i}")
    return rows


def check_row(row: Row, where: str = "row") -> None:
    """Every figure of a row is blank or a number of its kind; status is ok/failed."""
    for col in NUMERIC_COLUMNS:
        if row[col]:
            try:
                float(row[col])
            except ValueError:
                raise ValueError(f"{where}: {col}={row[col]!r} is not a number") from None
    for col in INT_COLUMNS:
        if row[col] and not row[col].isdigit():
            raise ValueError(f"{where}: {col}={row[col]!r} is not a whole number")
    if row["status"] not in ("ok", "failed"):
        raise ValueError(f"{where}: status={row['status']!r} is neither ok nor failed")
    if not re.match(r"[\w.-]+/[\w.-]+#\d+", row["source"]):
        raise ValueError(f"{where}: source {row['source']!r} cites no thread (owner/repo#N)")


_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def minor_version(text: str) -> str | None:
    """`0.29.1rc1.dev339+g…` → `0.29`; None when the text names no version."""
    m = _VERSION.search(text)
    return f"{int(m[1])}.{int(m[2])}" if m else None


def _newer(version: str | None) -> bool:
    if version is None:
        return True  # unknown: listed, in no version's table
    major, minor = (int(x) for x in version.split("."))
    return (major, minor) >= FIRST_NEWER


def _number(text: str) -> str:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    return m[1] if m else ""


def reports_as_newer(rows: Iterable[Row]) -> list[dict[str, str]]:
    """Rows of vllm-memory-reports.csv from versions after 0.19, in vllm-newer-logs' shape."""
    out = []
    for r in rows:
        if minor_version(r["vllm_version"]) is None or not _newer(minor_version(r["vllm_version"])):
            continue
        failed = "FAILED" in r["notes"]
        out.append({
            **dict.fromkeys(NEWER_COLUMNS, ""),
            "source": r["source"], "vllm_version": r["vllm_version"], "model": r["model"],
            "dtype": r["dtype"], "quantization": r["quantization"],
            "kv_cache_dtype": r["kv_cache_dtype"], "gpu": r["gpu"],
            "gpu_total_gib": _number(r["gpu_total_gib"]), "num_gpus": _number(r["num_gpus"]),
            "tensor_parallel_size": _number(r["tensor_parallel_size"]),
            "pipeline_parallel_size": _number(r["pipeline_parallel_size"]),
            "gpu_memory_utilization": _number(r["gpu_memory_utilization"]),
            "max_model_len": _number(r["max_model_len"]),
            "max_num_seqs": _number(r["max_num_seqs"]),
            "max_num_batched_tokens": _number(r["max_num_batched_tokens"]),
            "status": "failed" if failed else "ok",
            "weights_gib": r["weights_gib"], "activation_peak_gib": r["activation_peak_gib"],
            "non_torch_gib": r["non_torch_gib"], "kv_cache_gib": r["kv_cache_gib"],
            "kv_cache_tokens": r["kv_cache_tokens"], "verbatim_log": r["verbatim_log"],
            "notes": "from vllm-memory-reports.csv. " + r["notes"],
        })
    return out


# ---- measured figures ----------------------------------------------------------------------


def _f(row: Row, col: str) -> float | None:
    return float(row[col]) if row[col] else None


@dataclass(frozen=True)
class Measured:
    kv_gib: float | None
    non_kv_gib: float | None
    non_kv_derived: bool  # U·T − KV rather than the sum of printed components


def measured(row: Row, subtracts_cuda_graphs: bool) -> Measured:
    """What the run printed: its KV cache and its non-KV total (see the module doc)."""
    kv = _f(row, "kv_cache_gib")
    parts = [_f(row, c) for c in ("weights_gib", "activation_peak_gib", "non_torch_gib")]
    if subtracts_cuda_graphs:
        parts.append(_f(row, "cuda_graph_estimated_gib"))
    if all(p is not None for p in parts):
        return Measured(kv, sum(p for p in parts if p is not None), False)
    if kv is None:
        return Measured(None, None, False)
    requested = _f(row, "requested_gib")
    total, util = _f(row, "gpu_total_gib"), _f(row, "gpu_memory_utilization")
    if requested is None and total is not None and util is not None:
        requested = total * util
    return Measured(kv, None if requested is None else requested - kv, requested is not None)


# ---- one run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRun:
    """One row against its version's estimate. `status` is `compared`, or why not: `not
    modelled` (no calibration for the version), `no config`, `no GPU`, `not comparable`
    (nothing measured to compare), `refused` (the estimator says it would not start),
    `unknown version`. Pairs are (estimated, measured), GiB."""

    source: str
    version: str  # major.minor, "" when unknown
    model: str
    shape: str
    status: str
    reason: str = ""
    kv_gib: tuple[float, float] | None = None
    non_kv_gib: tuple[float, float] | None = None
    non_kv_derived: bool = False

    @property
    def kv_pct(self) -> float | None:
        return rel(*self.kv_gib) if self.kv_gib else None

    @property
    def non_kv_abs(self) -> float | None:
        return abs(self.non_kv_gib[0] - self.non_kv_gib[1]) if self.non_kv_gib else None

    @property
    def non_kv_pct(self) -> float | None:
        return rel(*self.non_kv_gib) if self.non_kv_gib else None

    @property
    def non_kv_within_target(self) -> bool | None:
        if self.non_kv_gib is None:
            return None
        return (self.non_kv_abs or 0.0) <= NON_KV_TARGET_GIB or \
            (self.non_kv_pct or 0.0) <= NON_KV_TARGET_PCT


def _int(row: Row, col: str, default: int | None = None) -> int | None:
    return int(row[col]) if row[col] else default


def gpus_for(row: Row) -> list[GpuInfo] | None:
    """Idle GPUs as the run had them: the catalog's when the row names one, else a simulated
    GPU of the printed total and compute capability; None when neither is known."""
    tp = _int(row, "tensor_parallel_size", 1) or 1
    pp = _int(row, "pipeline_parallel_size", 1) or 1
    dp = _int(row, "data_parallel_size", 1) or 1
    n = tp * pp * dp
    if row["gpu_catalog"]:
        return list(simulated_inventory(f"{n}x{row['gpu_catalog']}").gpus)
    total = _f(row, "gpu_total_gib")
    cc = row["compute_capability"]
    if total is None or not re.fullmatch(r"\d+\.\d+", cc):
        return None
    major, minor = (int(x) for x in cc.split("."))
    size = int(total * GiB)
    return [GpuInfo(index=i, uuid=None, name=row["gpu"], total_bytes=size, nvml_total_bytes=None,
                    reserved_bytes=None, free_bytes=size, used_bytes=0,
                    compute_capability=(major, minor), mig_mode=False, processes=(),
                    nvlink_peers=(), memory_bandwidth_gbps=None, catalog_name=None,
                    simulated=True) for i in range(n)]


def flags_for(row: Row) -> EngineFlags | str:
    """The run's vLLM flags, or why they cannot be modelled."""
    kv = row["kv_cache_dtype"].lower()
    if kv and not kv.startswith(("fp8", "auto", "bfloat16", "float16")):
        return f"KV cache dtype {row['kv_cache_dtype']} not modelled"
    dtype = row["dtype"].split()[0] if row["dtype"] else "auto"
    return EngineFlags(
        tensor_parallel_size=_int(row, "tensor_parallel_size", 1) or 1,
        pipeline_parallel_size=_int(row, "pipeline_parallel_size", 1) or 1,
        data_parallel_size=_int(row, "data_parallel_size", 1) or 1,
        dtype=dtype, kv_cache_dtype="fp8" if kv.startswith("fp8") else "auto",
        max_model_len=_int(row, "max_model_len"), max_num_seqs=_int(row, "max_num_seqs"),
        max_num_batched_tokens=_int(row, "max_num_batched_tokens"),
        gpu_memory_utilization=_f(row, "gpu_memory_utilization"),
        enforce_eager=row["enforce_eager"].lower() in ("true", "yes", "1"))


def non_kv_bytes(stage_weights: int, act: int, non_torch: int, graphs: int,
                 cal: EngineCalibration) -> int:
    """What the version takes out of U·T before the KV cache."""
    return stage_weights + act + non_torch + (graphs if cal.subtract_cuda_graph_estimate else 0)


def evaluate_row(row: Row, configs: ModelConfigs, calibration_for: CalibrationFor) -> VersionRun:
    version = minor_version(row["vllm_version"]) or ""
    tp, pp = _int(row, "tensor_parallel_size", 1), _int(row, "pipeline_parallel_size", 1)

    def run(status: str, reason: str = "", kv: tuple[float, float] | None = None,
            non_kv: tuple[float, float] | None = None, derived: bool = False) -> VersionRun:
        return VersionRun(source=row["source"], version=version, model=row["model"],
                          shape=f"tp{tp}pp{pp}", status=status, reason=reason, kv_gib=kv,
                          non_kv_gib=non_kv, non_kv_derived=derived)

    if not version:
        return run("unknown version", "the thread names no vLLM version")
    try:
        cal = calibration_for(version)
    except LauncherError as e:
        return run("not modelled", e.message.split(" (")[0])
    m = measured(row, cal.subtract_cuda_graph_estimate)
    if m.kv_gib is None and m.non_kv_gib is None:
        return run("not comparable", "no KV GiB printed")
    try:
        spec, _ = load_spec(row["model"], configs)
    except MissingConfigError:
        return run("no config", "no config.json for the model")
    gpus = gpus_for(row)
    if gpus is None:
        return run("no GPU", "GPU not in the catalog and its total/capability not printed")
    flags = flags_for(row)
    if isinstance(flags, str):
        return run("no config", flags)
    try:
        est = estimate(spec, gpus, flags, cal)
    except LauncherError as e:
        return run("refused", e.message[:120])
    if not est.starts or not est.stages:
        return run("refused", (est.error or "no estimate")[:120])
    s = est.stages[0]
    # What vLLM takes out of U·T before the KV cache: its own CUDA-graph estimate (not the
    # captured pool), in versions that subtract it.
    est_non_kv = non_kv_bytes(s.weights_bytes, s.activation_bytes, s.non_torch_bytes,
                              s.cuda_graph_estimate_bytes, cal) / GiB
    return run("compared",
               kv=(s.kv_cache_bytes / GiB, m.kv_gib) if m.kv_gib is not None else None,
               non_kv=(est_non_kv, m.non_kv_gib) if m.non_kv_gib is not None else None,
               derived=m.non_kv_derived)


# ---- per version ---------------------------------------------------------------------------


class MedMax(TypedDict):
    median: float
    max: float


class VersionSummary(TypedDict):
    version: str
    rows: int
    modelled: bool | None  # None: unknown version
    compared: int
    skipped: dict[str, int]  # status → rows
    kv_gib_pct: MedMax | None
    non_kv_gib_abs: MedMax | None
    non_kv_gib_pct: MedMax | None
    non_kv_within_target: int
    non_kv_measured: int  # runs with a measured non-KV total


def _medmax(values: list[float]) -> MedMax | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _version_sort(v: str) -> tuple[int, ...]:
    """Version order for `0.28`, `0.21-0.25` (a range entry sorts by its start), unknown last."""
    m = _VERSION.search(v)
    return (int(m[1]), int(m[2])) if m else (1 << 30,)


def summarize_versions(runs: Iterable[VersionRun],
                       calibration_for: CalibrationFor) -> list[VersionSummary]:
    """One summary per version (unknown last), in version order."""
    by: dict[str, list[VersionRun]] = {}
    for r in runs:
        by.setdefault(r.version, []).append(r)
    out: list[VersionSummary] = []
    for version in sorted(by, key=_version_sort):
        rs = by[version]
        ok = [r for r in rs if r.status == "compared"]
        modelled: bool | None = None
        if version:
            try:
                calibration_for(version)
                modelled = True
            except LauncherError:
                modelled = False
        with_non_kv = [r for r in ok if r.non_kv_gib is not None]
        out.append({
            "version": version, "rows": len(rs), "modelled": modelled, "compared": len(ok),
            "skipped": dict(Counter(r.status for r in rs if r.status != "compared")),
            "kv_gib_pct": _medmax([r.kv_pct for r in ok if r.kv_pct is not None]),
            "non_kv_gib_abs": _medmax([r.non_kv_abs for r in with_non_kv
                                       if r.non_kv_abs is not None]),
            "non_kv_gib_pct": _medmax([r.non_kv_pct for r in with_non_kv
                                       if r.non_kv_pct is not None]),
            "non_kv_within_target": sum(1 for r in with_non_kv if r.non_kv_within_target),
            "non_kv_measured": len(with_non_kv),
        })
    return out


def evaluate_versions(rows: Iterable[Row], configs: ModelConfigs,
                      calibration_for: CalibrationFor) -> list[VersionRun]:
    return [evaluate_row(r, configs, calibration_for) for r in rows]


# ---- text ----------------------------------------------------------------------------------


def _mm(v: MedMax | None, unit: str = "") -> str:
    return "-" if v is None else f"{v['median']:.2f}/{v['max']:.2f}{unit}"


def format_versions(summaries: list[VersionSummary], title: str) -> str:
    """A blank line, the title, one line per version. No line starts with "runs": CI greps
    `^runs` for the 0.19 summary."""
    head = (f"{'version':<8} {'rows':>4} {'modelled':>8} {'compared':>8} "
            f"{'KV err % med/max':>17} {'non-KV err GiB med/max':>23} "
            f"{'non-KV err % med/max':>21} {'non-KV in target':>17}  not compared")
    lines = ["", title,
             f"target per run: non-KV total within {NON_KV_TARGET_GIB:g} GiB or "
             f"{NON_KV_TARGET_PCT:g} %", head, "-" * len(head)]
    for s in summaries:
        modelled = {True: "yes", False: "no", None: "-"}[s["modelled"]]
        target = (f"{s['non_kv_within_target']}/{s['non_kv_measured']}"
                  if s["non_kv_measured"] else "-")
        skipped = ", ".join(f"{n} {k}" for k, n in sorted(s["skipped"].items()))
        lines.append(
            f"{s['version'] or 'unknown':<8} {s['rows']:>4} {modelled:>8} {s['compared']:>8} "
            f"{_mm(s['kv_gib_pct']):>17} {_mm(s['non_kv_gib_abs']):>23} "
            f"{_mm(s['non_kv_gib_pct']):>21} {target:>17}  {skipped}")
    return "\n".join(lines)


def _thread(source: str) -> str:
    m = re.match(r"(\S+#\d+)", source)
    return m[1] if m else source[:28]


def format_runs(runs: list[VersionRun]) -> str:
    """One line per row: its thread, model, and the comparison or why there is none."""
    head = (f"{'version':<8} {'thread':<26} {'model':<44} {'shape':<7} "
            f"{'KV GiB est/real':>16} {'non-KV GiB est/real':>20}  status")
    lines = [head, "-" * len(head)]
    for r in sorted(runs, key=lambda r: (_version_sort(r.version), r.source)):
        kv = f"{r.kv_gib[0]:.2f}/{r.kv_gib[1]:.2f}" if r.kv_gib else "-"
        nk = (f"{r.non_kv_gib[0]:.2f}/{r.non_kv_gib[1]:.2f}{'*' if r.non_kv_derived else ''}"
              if r.non_kv_gib else "-")
        status = r.status + (f": {r.reason}" if r.reason else "")
        lines.append(f"{r.version or 'unknown':<8} {_thread(r.source):<26} {r.model[:44]:<44} "
                     f"{r.shape:<7} {kv:>16} {nk:>20}  {status}")
    lines.append("(* measured non-KV derived as U·T − KV)")
    return "\n".join(lines)


def runs_json(runs: list[VersionRun]) -> list[dict[str, object]]:
    return [{"source": r.source, "version": r.version, "model": r.model, "shape": r.shape,
             "status": r.status, "reason": r.reason,
             "kv_gib": list(r.kv_gib) if r.kv_gib else None,
             "non_kv_gib": list(r.non_kv_gib) if r.non_kv_gib else None,
             "non_kv_derived": r.non_kv_derived, "non_kv_within_target": r.non_kv_within_target}
            for r in runs]


def versions_in(rows: Iterable[Mapping[str, str]]) -> set[str]:
    """The major.minor versions the rows name (unknown left out)."""
    return {v for r in rows if (v := minor_version(r["vllm_version"]))}


# ---- fitting -------------------------------------------------------------------------------


def shape_class(tp: int, pp: int) -> str:
    """The non_torch_gib key of vllm.yaml a shape uses."""
    if tp == 1:
        return "single" if pp == 1 else "pipeline_only"
    return "tp2" if tp == 2 else "tp4_plus"


class Evidence(TypedDict):
    source: str
    model: str
    shape: str
    value: float  # GiB: the figure the constant would have to take for this run


class Proposal(TypedDict):
    constant: str  # e.g. "non_torch_gib.tp2", "cuda_graph (base + per_layer·L)"
    value: float | None  # median over the evidence, None when there is none
    evidence: list[Evidence]


class VersionFit(TypedDict):
    version: str  # the calibration entry (or major.minor when not modelled)
    rows: int
    proposals: list[Proposal]
    non_kv_shift: Proposal  # measured − estimated non-KV with `baseline` rules, per run
    baseline: str  # whose constants the shift is relative to


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def fit_versions(rows: Iterable[Row], configs: ModelConfigs, calibration_for: CalibrationFor,
                 baseline: EngineCalibration) -> list[VersionFit]:
    """What the overhead constants would be if fitted on each version's rows (median of the
    per-run values, as the 0.19 constants were): non-torch memory per shape from printed
    non-torch figures; the CUDA-graph pool per layer (base fixed at the baseline's) from printed
    estimates (versions that subtract them) or actual pools; the activation residual from
    printed peaks less physics; and, for every run with a measured non-KV total, how far it is
    from the estimate with the version's own rules when modelled, else with `baseline`'s
    constants under the version's budget rule (`subtract_cuda_graph_estimate` of its range)."""
    from launcher.memory.overheads import activation_bytes

    groups: dict[str, list[Row]] = {}
    for r in rows:
        v = minor_version(r["vllm_version"])
        if v is None:
            continue
        try:
            key = calibration_for(v).version
        except LauncherError:
            key = v
        groups.setdefault(key, []).append(r)
    fits: list[VersionFit] = []
    for key in sorted(groups, key=_version_sort):
        non_torch: dict[str, list[Evidence]] = {}
        graphs: list[Evidence] = []
        residual: list[Evidence] = []
        shift: list[Evidence] = []
        overheads: list[Evidence] = []
        overheads_est: list[Evidence] = []
        own: EngineCalibration | None
        try:
            own = calibration_for(key)
        except LauncherError:
            own = None
        subtracts = _version_sort(key) >= (0, 21)
        cal = own or baseline.with_graph_estimate_subtracted(subtracts)
        for r in groups[key]:
            tp = _int(r, "tensor_parallel_size", 1) or 1
            pp = _int(r, "pipeline_parallel_size", 1) or 1
            shape = f"tp{tp}pp{pp}"

            def ev(value: float, r: Row = r, shape: str = shape) -> Evidence:
                return Evidence(source=r["source"], model=r["model"], shape=shape, value=value)

            if (nt := _f(r, "non_torch_gib")) is not None:
                non_torch.setdefault(shape_class(tp, pp), []).append(ev(nt))
            try:
                spec, _ = load_spec(r["model"], configs)
            except MissingConfigError:
                continue
            layers = spec.num_layers // pp
            g = _f(r, "cuda_graph_estimated_gib") if subtracts else None
            g = g if g is not None else _f(r, "cuda_graph_actual_gib")
            if g is not None and layers:
                graphs.append(ev(round((g - cal.cuda_graph.base_gib) / layers, 5)))
            flags = flags_for(r)
            gpus = gpus_for(r)
            if isinstance(flags, str) or gpus is None:
                continue
            try:
                est = estimate(spec, gpus, flags, cal)
            except LauncherError:
                continue
            if not est.stages:
                continue
            s = est.stages[0]
            if (act := _f(r, "activation_peak_gib")) is not None:
                physics = activation_bytes(
                    spec, cal.model_copy(update={"activation": cal.activation.model_copy(
                        update={"residual_gib": 0.0})}),
                    tp=tp, last_stage=pp == 1,
                    max_num_batched_tokens=int(str(est.resolved["max_num_batched_tokens"])),
                    max_num_seqs=int(str(est.resolved["max_num_seqs"])),
                    act_bytes=2) / GiB
                residual.append(ev(round(act - physics, 3)))
            m = measured(r, cal.subtract_cuda_graph_estimate)
            if m.non_kv_gib is not None:
                e = non_kv_bytes(s.weights_bytes, s.activation_bytes, s.non_torch_bytes,
                                 s.cuda_graph_bytes, cal) / GiB
                shift.append(ev(round(m.non_kv_gib - e, 3)))
                if (w := _f(r, "weights_gib")) is not None:
                    # Everything but the weights, measured and as the constants give it.
                    overheads.append(ev(round(m.non_kv_gib - w, 3)))
                    overheads_est.append(ev(round(e - s.weights_bytes / GiB, 3)))
        proposals: list[Proposal] = [
            Proposal(constant=f"non_torch_gib.{k}", value=_median([e["value"] for e in v]),
                     evidence=v) for k, v in sorted(non_torch.items())]
        for name, evs in ((f"cuda_graph per layer (base {cal.cuda_graph.base_gib} GiB kept)",
                           graphs), ("activation.residual_gib", residual),
                          ("activation + non-torch (+ CUDA-graph estimate) together, measured "
                           "(U·T − KV − printed weights)", overheads),
                          ("the same as the constants give it", overheads_est)):
            proposals.append(Proposal(constant=name, value=_median([e["value"] for e in evs]),
                                      evidence=evs))
        fits.append(VersionFit(
            version=key, rows=len(groups[key]), proposals=proposals,
            non_kv_shift=Proposal(constant="non-KV total: measured − estimated",
                                  value=_median([e["value"] for e in shift]), evidence=shift),
            baseline=f"{key}'s own entry" if own else
            f"{baseline.version}'s constants, CUDA-graph estimate "
            f"{'subtracted' if subtracts else 'not subtracted'} (this version has no entry)"))
    return fits


def format_fits(fits: list[VersionFit]) -> str:
    lines = ["", "overhead constants fitted per version (median per run; evidence = threads)"]
    for f in fits:
        lines.append(f"{f['version']}: {f['rows']} rows; shift relative to {f['baseline']}")
        for p in [*f["proposals"], f["non_kv_shift"]]:
            if not p["evidence"]:
                lines.append(f"  {p['constant']}: no evidence")
                continue
            ev = "; ".join(f"{_thread(e['source'])} {e['model'][:30]} {e['shape']} {e['value']:+.3f}"
                           for e in p["evidence"])
            lines.append(f"  {p['constant']}: {p['value']} (n={len(p['evidence'])}: {ev})")
    return "\n".join(lines)
