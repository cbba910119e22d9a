"""Accuracy of `launcher estimate` against real vLLM start-ups.

Each run of a calibration sweep (one row of its runs CSV: the model, the GPU and the flags vLLM
was started with, and the figures it logged) is estimated with the same code path as
`launcher estimate`, and the estimate is compared with what vLLM measured: weights GiB, KV-cache
GiB and KV-cache tokens, next to a plain baseline (KV = U·T − weights, tokens = KV / naive
bytes-per-token, as most calculators compute). KV GiB is compared with rank 0 (what the logs
report); tokens with the pipeline minimum.

Nothing here knows where the data lives: callers pass the CSV paths and the config directories
(in a source checkout: `calibration/<sweep>/runs.csv`, `calibration/<sweep>/models/` and
`tests/data/configs/`; see `calibration/NOTICE.md`).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypedDict

import yaml

from launcher.hardware.catalog import simulated_inventory
from launcher.memory.calibration import EngineCalibration
from launcher.memory.estimate import EngineFlags, estimate
from launcher.memory.kv import kv_bytes_per_token_layer
from launcher.models.config import spec_from_config
from launcher.models.profiles import find_profile, profile_config
from launcher.models.spec import ModelSpec
from launcher.units import GiB

Row: TypeAlias = Mapping[str, str]
"""One run: a row of a sweep's runs CSV (or a memory report in that shape); every value a string."""

# The target per run: KV cache within 5 %, or within 0.3 GiB where the cache is only a few GiB.
KV_TARGET_PCT = 5.0
KV_TARGET_GIB = 0.3


class MissingConfigError(LookupError):
    """No config.json (verbatim, reconstructed or built-in profile) for a sweep model."""


# ---- model configs -------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedCheckpoint:
    """A quantized checkpoint of the sweep: its base model's config plus its own quantization."""

    base: str
    quantization_config: dict[str, Any]


@dataclass(frozen=True)
class ModelConfigs:
    """Where a sweep model's config.json comes from, first match wins: `<slug>.json` in
    `verbatim_dirs` (public config.json files), then in `reconstructed_dir` (rebuilt from the
    model's published architecture; runs that use one are tagged "(r)"), then a built-in
    profile. A quantized checkpoint in `quantized` reuses its base model's config with the
    checkpoint's `quantization_config`."""

    verbatim_dirs: tuple[Path, ...]
    reconstructed_dir: Path
    quantized: Mapping[str, QuantizedCheckpoint]  # keyed by lower-case model id

    @classmethod
    def load(cls, models_dir: Path, verbatim_dirs: Iterable[Path] = ()) -> ModelConfigs:
        """`models_dir` holds the reconstructed configs and `quantized.yaml`
        (model id → {base, quantization_config})."""
        raw = yaml.safe_load((models_dir / "quantized.yaml").read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{models_dir / 'quantized.yaml'}: expected a mapping of model ids")
        quantized: dict[str, QuantizedCheckpoint] = {}
        for model_id, entry in raw.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("base"), str)
                    and isinstance(entry.get("quantization_config"), dict)):
                raise ValueError(f"{models_dir / 'quantized.yaml'}: {model_id}: "
                                 "expected {base: MODEL, quantization_config: {...}}")
            key = str(model_id).lower()
            if key in quantized:
                raise ValueError(f"{models_dir / 'quantized.yaml'}: {model_id} listed twice")
            quantized[key] = QuantizedCheckpoint(base=entry["base"],
                                                 quantization_config=entry["quantization_config"])
        return cls(verbatim_dirs=tuple(verbatim_dirs), reconstructed_dir=models_dir,
                   quantized=quantized)

    @property
    def dirs(self) -> tuple[Path, ...]:
        return (*self.verbatim_dirs, self.reconstructed_dir)


def slug(model_id: str) -> str:
    """File name stem of a model's config: `org/Model-1.5` → `org--model-1-5`."""
    return model_id.lower().replace("/", "--").replace(".", "-")


def base_config(model_id: str, configs: ModelConfigs) -> dict[str, Any]:
    """The config.json of an unquantized model (see ModelConfigs for the search order)."""
    for d in configs.dirs:
        p = d / f"{slug(model_id)}.json"
        if p.exists():
            config = json.loads(p.read_text())
            if not isinstance(config, dict):
                raise ValueError(f"{p}: expected a JSON object")
            return config
    prof = find_profile(model_id)
    if prof is None:
        where = ", ".join(str(d) for d in configs.dirs)
        raise MissingConfigError(f"no config for {model_id}: add {slug(model_id)}.json to one of "
                                 f"{where}")
    return profile_config(prof)


def load_spec(model_id: str, configs: ModelConfigs) -> tuple[ModelSpec, str]:
    """Spec for a sweep model and a tag: '' verbatim config or profile, '(r)' reconstructed."""
    quant = configs.quantized.get(model_id.lower())
    base_id = quant.base if quant else model_id
    config = dict(base_config(base_id, configs))
    if quant:
        config["quantization_config"] = quant.quantization_config
    tag = "(r)" if (configs.reconstructed_dir / f"{slug(base_id)}.json").exists() else ""
    return spec_from_config(config, name=model_id, source=f"bench:{model_id}"), tag


# ---- the runs ------------------------------------------------------------------------------


def read_runs(path: Path, *, status: str | None = "ok") -> list[dict[str, str]]:
    """Rows of a sweep's runs CSV whose `status` is `status` (every row when None)."""
    rows = csv.DictReader(path.read_text().splitlines())
    return [r for r in rows if status is None or r["status"] == status]


def read_reports(path: Path, *, version: str = "0.19") -> list[dict[str, str]]:
    """Rows of vllm-memory-reports.csv from vLLM `version` on an H100 that logged weights,
    KV GiB and KV tokens, in the runs CSV's shape (blank fields take vLLM's defaults)."""
    out = []
    for r in csv.DictReader(path.read_text().splitlines()):
        if version not in r["vllm_version"] or not r["kv_cache_gib"] or not r["weights_gib"] \
                or not r["kv_cache_tokens"] or "H100" not in r["gpu"]:
            continue
        q = r["quantization"]
        out.append({
            "model": r["model"], "gpu": "H100-80GB", "tp": r["tensor_parallel_size"] or "1",
            "pp": r["pipeline_parallel_size"] or "1", "dp": "1",
            "max_model_len": r["max_model_len"] or "8192",
            "dtype": "torch.float16" if r["dtype"].startswith("float16") else "torch.bfloat16",
            "quantization": "fp8" if "online" in q else ("mxfp4" if q == "mxfp4" else "None"),
            "kv_cache_dtype": r["kv_cache_dtype"] or "auto",
            "gpu_memory_utilization": r["gpu_memory_utilization"],
            "init_total_memory_gib": r["gpu_total_gib"] or "79.19",
            "weights_memory_gib": r["weights_gib"], "kv_cache_memory_gib": r["kv_cache_gib"],
            "kv_cache_tokens": r["kv_cache_tokens"],
        })
    return out


def flags_for(row: Row, spec: ModelSpec) -> EngineFlags:
    """The vLLM flags of a run. `--quantization fp8` of a run is online quantization only when
    the checkpoint is not quantized already."""
    dtype = row["dtype"].replace("torch.", "")
    quant = row["quantization"]
    online = quant if quant == "fp8" and spec.quantization is None else None
    return EngineFlags(tensor_parallel_size=int(row["tp"]), pipeline_parallel_size=int(row["pp"]),
                       data_parallel_size=int(row["dp"]), dtype=dtype, quantization=online,
                       kv_cache_dtype=row["kv_cache_dtype"],
                       max_model_len=int(row["max_model_len"]),
                       gpu_memory_utilization=float(row["gpu_memory_utilization"]))


def rel(pred: float, actual: float) -> float:
    """Relative error in percent (0 when the actual value is 0)."""
    return abs(pred - actual) / abs(actual) * 100 if actual else 0.0


# ---- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """The estimator says this run would not start (with vLLM's own error)."""

    model: str
    tag: str
    error: str


@dataclass(frozen=True)
class Compared:
    """Estimate next to what vLLM measured; each pair is (estimated, measured)."""

    model: str
    tag: str
    shape: str  # e.g. "tp2pp1"
    max_model_len: int
    extra: str  # quantization, fp8 KV cache, non-bf16 dtype: what sets the run apart
    weights_gib: tuple[float, float]
    kv_gib: tuple[float, float]
    kv_tokens: tuple[int, int]
    baseline_kv_gib_pct: float  # relative error of the plain U·T − weights calculator
    baseline_kv_tokens_pct: float

    @property
    def weights_pct(self) -> float:
        return rel(*self.weights_gib)

    @property
    def kv_gib_pct(self) -> float:
        return rel(*self.kv_gib)

    @property
    def kv_gib_abs(self) -> float:
        """Absolute error of the KV cache, GiB."""
        return abs(self.kv_gib[0] - self.kv_gib[1])

    @property
    def kv_tokens_pct(self) -> float:
        return rel(*self.kv_tokens)

    @property
    def kv_within_target(self) -> bool:
        return self.kv_gib_pct <= KV_TARGET_PCT or self.kv_gib_abs <= KV_TARGET_GIB


Result: TypeAlias = Compared | Refused


def evaluate(row: Row, cal: EngineCalibration, configs: ModelConfigs) -> Result:
    """Estimate one run with its own flags on simulated idle GPUs and compare."""
    spec, tag = load_spec(row["model"], configs)
    flags = flags_for(row, spec)
    tp, pp = flags.tensor_parallel_size, flags.pipeline_parallel_size
    gpus = list(simulated_inventory(f"{tp * pp}x{row['gpu']}").gpus)
    est = estimate(spec, gpus, flags, cal)
    worst = est.worst
    if not est.starts or worst is None:
        return Refused(model=row["model"], tag=tag, error=est.error or "no estimate")
    first = est.stages[0]
    w_true, kv_true, tok_true = (float(row["weights_memory_gib"]),
                                 float(row["kv_cache_memory_gib"]), int(row["kv_cache_tokens"]))
    # Baseline: KV = U·T − weights; tokens from the naive per-token formula over all layers.
    total = float(row["init_total_memory_gib"]) * GiB
    base_kv = total * float(row["gpu_memory_utilization"]) - first.weights_bytes
    kv_b = 1 if flags.kv_cache_dtype.startswith("fp8") else 2
    naive = kv_bytes_per_token_layer(spec, tp, kv_b) * spec.num_layers / pp
    base_tok = base_kv / naive
    extra = " ".join(x for x in (
        row["quantization"] if row["quantization"] != "None" else "",
        "kv:fp8" if kv_b == 1 else "",
        row["dtype"].replace("torch.", "") if row["dtype"] != "torch.bfloat16" else "") if x)
    return Compared(
        model=row["model"], tag=tag, shape=f"tp{tp}pp{pp}",
        max_model_len=int(row["max_model_len"]), extra=extra,
        weights_gib=(first.weights_bytes / GiB, w_true),
        kv_gib=(first.kv_cache_bytes / GiB, kv_true),
        kv_tokens=(worst.kv_cache_tokens, tok_true),
        baseline_kv_gib_pct=rel(base_kv / GiB, kv_true),
        baseline_kv_tokens_pct=rel(base_tok, tok_true),
    )


def evaluate_all(rows: Iterable[Row], cal: EngineCalibration,
                 configs: ModelConfigs) -> list[Result]:
    return [evaluate(r, cal, configs) for r in rows]


# ---- summary -------------------------------------------------------------------------------


class Stat(TypedDict):
    median: float
    max: float
    mean: float


class Summary(TypedDict):
    runs: int
    estimated: int
    weights_pct: Stat
    kv_gib_pct: Stat
    kv_tokens_pct: Stat
    baseline_kv_gib_pct: Stat
    baseline_kv_tokens_pct: Stat
    kv_within_target: int  # runs within KV_TARGET_PCT or KV_TARGET_GIB


def _stat(values: list[float]) -> Stat:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "mean": round(statistics.fmean(values), 3)}


def summarize(results: list[Result]) -> Summary:
    """Median, mean and max relative errors (%) over the runs the estimator says start.
    Raises ValueError (statistics) when none does."""
    ok = [r for r in results if isinstance(r, Compared)]
    return {
        "runs": len(results), "estimated": len(ok),
        "weights_pct": _stat([r.weights_pct for r in ok]),
        "kv_gib_pct": _stat([r.kv_gib_pct for r in ok]),
        "kv_tokens_pct": _stat([r.kv_tokens_pct for r in ok]),
        "baseline_kv_gib_pct": _stat([r.baseline_kv_gib_pct for r in ok]),
        "baseline_kv_tokens_pct": _stat([r.baseline_kv_tokens_pct for r in ok]),
        "kv_within_target": sum(1 for r in ok if r.kv_within_target),
    }


# ---- text ----------------------------------------------------------------------------------


def format_table(results: list[Result], title: str) -> str:
    """One line per run (after a blank line and the title): estimated/measured and error %."""
    head = (f"{'model':<52} {'shape':<7} {'len':>6} {'weights est/real':>17} {'err%':>6} "
            f"{'KV GiB est/real':>16} {'err%':>6} {'KV tokens est/real':>21} {'err%':>6} "
            f"{'base KV%':>8} {'base tok%':>9}")
    lines = ["", title, head, "-" * len(head)]
    for r in results:
        if isinstance(r, Refused):
            name = (r.model + " " + r.tag).strip()[:52]
            lines.append(f"{name:<52} would not start: {r.error[:80]}")
            continue
        name = (r.model + " " + r.tag + " " + r.extra).strip()[:52]
        w, kv, tok = r.weights_gib, r.kv_gib, r.kv_tokens
        lines.append(
            f"{name:<52} {r.shape:<7} {r.max_model_len:>6} {w[0]:>8.2f}/{w[1]:<8.2f} "
            f"{r.weights_pct:>6.2f} {kv[0]:>7.2f}/{kv[1]:<8.2f} {r.kv_gib_pct:>6.2f} "
            f"{tok[0]:>10}/{tok[1]:<10} {r.kv_tokens_pct:>6.2f} "
            f"{r.baseline_kv_gib_pct:>8.2f} {r.baseline_kv_tokens_pct:>9.2f}")
    return "\n".join(lines)


def format_summary(s: Summary) -> str:
    """A blank line, `runs N, estimated M; KV within target ...`, then the error table."""
    lines = ["", f"runs {s['runs']}, estimated {s['estimated']}; KV within target "
                 f"(≤{KV_TARGET_PCT:g} % or ≤{KV_TARGET_GIB:g} GiB): "
                 f"{s['kv_within_target']}/{s['estimated']}",
             f"{'relative error %':<22} {'median':>8} {'mean':>8} {'max':>8}"]
    for label, v in (("weights", s["weights_pct"]), ("KV cache GiB", s["kv_gib_pct"]),
                     ("KV cache tokens", s["kv_tokens_pct"]),
                     ("baseline KV GiB", s["baseline_kv_gib_pct"]),
                     ("baseline KV tokens", s["baseline_kv_tokens_pct"])):
        lines.append(f"{label:<22} {v['median']:>8.3f} {v['mean']:>8.3f} {v['max']:>8.3f}")
    return "\n".join(lines)
