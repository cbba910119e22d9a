"""Accuracy of `launcher estimate` against real vLLM start-ups.

Runs the estimator (the same code path as `launcher estimate`) with each successful run's own
flags from ../shared/calibration/vllm-0.19-h100-runs.csv and prints, per run and in summary,
the relative error of weights, KV-cache GiB and KV-cache tokens, next to a plain baseline
(KV = U·T − weights, tokens = KV / naive bytes-per-token, as most calculators compute).
Then the same for the rows of vllm-memory-reports.csv whose version is calibrated.

    python bench/accuracy.py [--calibration DIR] [--json]

KV GiB is compared with rank 0 (what the logs report); tokens with the pipeline minimum.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.hardware.catalog import simulated_inventory  # noqa: E402
from launcher.memory.estimate import EngineFlags, estimate  # noqa: E402
from launcher.memory.kv import kv_bytes_per_token_layer  # noqa: E402
from launcher.memory.overheads import calibration_for  # noqa: E402
from launcher.models.config import spec_from_config  # noqa: E402
from launcher.models.profiles import profile_config  # noqa: E402
from launcher.models.spec import ModelSpec  # noqa: E402
from launcher.units import GiB  # noqa: E402

CONFIG_DIRS = (ROOT / "tests" / "data" / "configs", ROOT / "bench" / "models")
QUANTIZED = yaml.safe_load((ROOT / "bench" / "models" / "quantized.yaml").read_text())


def slug(model_id: str) -> str:
    return model_id.lower().replace("/", "--").replace(".", "-")


def load_spec(model_id: str) -> tuple[ModelSpec, str]:
    """Spec for a sweep model and a tag: '' verbatim config, '(r)' reconstructed."""
    key = next((k for k in QUANTIZED if k.lower() == model_id.lower()), None)
    base_id = QUANTIZED[key]["base"] if key else model_id
    config = dict(base_config(base_id))
    if key:
        config["quantization_config"] = QUANTIZED[key]["quantization_config"]
    tag = "(r)" if (ROOT / "bench" / "models" / f"{slug(base_id)}.json").exists() else ""
    return spec_from_config(config, name=model_id, source=f"bench:{model_id}"), tag


def base_config(model_id: str) -> dict:
    for d in CONFIG_DIRS:
        p = d / f"{slug(model_id)}.json"
        if p.exists():
            return json.loads(p.read_text())
    from launcher.models.profiles import find_profile

    prof = find_profile(model_id)
    if prof is None:
        raise SystemExit(f"no config for {model_id}: add tests/data/configs/{slug(model_id)}.json")
    return profile_config(prof)


def flags_for(row: dict, spec: ModelSpec) -> EngineFlags:
    dtype = row["dtype"].replace("torch.", "")
    quant = row["quantization"]
    online = quant if quant == "fp8" and spec.quantization is None else None
    return EngineFlags(tensor_parallel_size=int(row["tp"]), pipeline_parallel_size=int(row["pp"]),
                       data_parallel_size=int(row["dp"]), dtype=dtype, quantization=online,
                       kv_cache_dtype=row["kv_cache_dtype"],
                       max_model_len=int(row["max_model_len"]),
                       gpu_memory_utilization=float(row["gpu_memory_utilization"]))


def rel(pred: float, actual: float) -> float:
    return abs(pred - actual) / actual * 100 if actual else 0.0


def evaluate(row: dict, cal) -> dict:
    spec, tag = load_spec(row["model"])
    flags = flags_for(row, spec)
    gpus = list(simulated_inventory(f"{flags.tensor_parallel_size * flags.pipeline_parallel_size}"
                                    f"x{row['gpu']}").gpus)
    est = estimate(spec, gpus, flags, cal)
    if not est.starts:
        return {"model": row["model"], "tag": tag, "error": est.error}
    first, worst = est.stages[0], est.worst
    w_true, kv_true, tok_true = (float(row["weights_memory_gib"]),
                                 float(row["kv_cache_memory_gib"]), int(row["kv_cache_tokens"]))
    # Baseline: KV = U·T − weights; tokens from the naive per-token formula over all layers.
    total = float(row["init_total_memory_gib"]) * GiB
    base_kv = total * flags.gpu_memory_utilization - first.weights_bytes
    kv_b = 1 if flags.kv_cache_dtype.startswith("fp8") else 2
    naive = kv_bytes_per_token_layer(spec, flags.tensor_parallel_size, kv_b) * \
        spec.num_layers / flags.pipeline_parallel_size
    base_tok = base_kv / naive
    w = first.weights_bytes / GiB
    kv = first.kv_cache_bytes / GiB
    return {
        "model": row["model"], "tag": tag,
        "shape": f"tp{flags.tensor_parallel_size}pp{flags.pipeline_parallel_size}",
        "len": flags.max_model_len, "extra": " ".join(
            x for x in (row["quantization"] if row["quantization"] != "None" else "",
                        "kv:fp8" if kv_b == 1 else "", row["dtype"].replace("torch.", "")
                        if row["dtype"] != "torch.bfloat16" else "") if x),
        "weights": (w, w_true, rel(w, w_true)),
        "kv_gib": (kv, kv_true, rel(kv, kv_true), abs(kv - kv_true)),
        "kv_tokens": (worst.kv_cache_tokens, tok_true, rel(worst.kv_cache_tokens, tok_true)),
        "baseline_kv_gib": rel(base_kv / GiB, kv_true),
        "baseline_kv_tokens": rel(base_tok, tok_true),
    }


def summarize(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]

    def stat(values: list[float]) -> dict:
        return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
                "mean": round(statistics.fmean(values), 3)}

    return {
        "runs": len(results), "estimated": len(ok),
        "weights_pct": stat([r["weights"][2] for r in ok]),
        "kv_gib_pct": stat([r["kv_gib"][2] for r in ok]),
        "kv_tokens_pct": stat([r["kv_tokens"][2] for r in ok]),
        "baseline_kv_gib_pct": stat([r["baseline_kv_gib"] for r in ok]),
        "baseline_kv_tokens_pct": stat([r["baseline_kv_tokens"] for r in ok]),
        # The target: none worse than 5 %, or 0.3 GiB where the KV cache is only a few GiB.
        "kv_within_target": sum(1 for r in ok if r["kv_gib"][2] <= 5 or r["kv_gib"][3] <= 0.3),
    }


def print_table(results: list[dict], title: str) -> None:
    print(f"\n{title}")
    head = (f"{'model':<52} {'shape':<7} {'len':>6} {'weights est/real':>17} {'err%':>6} "
            f"{'KV GiB est/real':>16} {'err%':>6} {'KV tokens est/real':>21} {'err%':>6} "
            f"{'base KV%':>8} {'base tok%':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        name = (r["model"] + " " + r["tag"] + " " + r.get("extra", "")).strip()[:52]
        if "error" in r:
            print(f"{name:<52} would not start: {r['error'][:80]}")
            continue
        w, kv, tok = r["weights"], r["kv_gib"], r["kv_tokens"]
        print(f"{name:<52} {r['shape']:<7} {r['len']:>6} {w[0]:>8.2f}/{w[1]:<8.2f} {w[2]:>6.2f} "
              f"{kv[0]:>7.2f}/{kv[1]:<8.2f} {kv[2]:>6.2f} {tok[0]:>10}/{tok[1]:<10} {tok[2]:>6.2f} "
              f"{r['baseline_kv_gib']:>8.2f} {r['baseline_kv_tokens']:>9.2f}")


def print_summary(s: dict) -> None:
    print(f"\nruns {s['runs']}, estimated {s['estimated']}; KV within target "
          f"(≤5 % or ≤0.3 GiB): {s['kv_within_target']}/{s['estimated']}")
    print(f"{'relative error %':<22} {'median':>8} {'mean':>8} {'max':>8}")
    for label, key in (("weights", "weights_pct"), ("KV cache GiB", "kv_gib_pct"),
                       ("KV cache tokens", "kv_tokens_pct"),
                       ("baseline KV GiB", "baseline_kv_gib_pct"),
                       ("baseline KV tokens", "baseline_kv_tokens_pct")):
        v = s[key]
        print(f"{label:<22} {v['median']:>8.3f} {v['mean']:>8.3f} {v['max']:>8.3f}")


def reports_rows(path: Path) -> list[dict]:
    """vllm-memory-reports.csv rows of calibrated versions, in the runs CSV's shape."""
    out = []
    for r in csv.DictReader(path.read_text().splitlines()):
        version = r["vllm_version"]
        if "0.19" not in version or not r["kv_cache_gib"] or not r["weights_gib"] \
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calibration", type=Path, default=ROOT.parent / "shared" / "calibration")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()
    cal = calibration_for("0.19")
    runs = [r for r in csv.DictReader((args.calibration / "vllm-0.19-h100-runs.csv").read_text().splitlines())
            if r["status"] == "ok"]
    results = [evaluate(r, cal) for r in runs]
    summary = summarize(results)
    reports = [evaluate(r, cal) for r in reports_rows(args.calibration /
                                                      "vllm-memory-reports.csv")]
    rsummary = summarize(reports) if reports else None
    if args.json:
        print(json.dumps({"runs": summary, "memory_reports_0.19": rsummary}, indent=2))
        return 0
    print_table(results, "vLLM 0.19.0 on H100-80GB: every successful run of the calibration sweep "
                         "((r) = reconstructed config)")
    print_summary(summary)
    if reports:
        print_table(reports, "vllm-memory-reports.csv rows of calibrated versions (0.19)")
        print_summary(rsummary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
