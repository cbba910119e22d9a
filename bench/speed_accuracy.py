"""The speed model against published serving benchmarks (calibration/speed/points.csv).

    python bench/speed_accuracy.py          # every point, then the error summaries
    python bench/speed_accuracy.py --fit    # also fit the efficiency factors on the fit set
                                            # and print them as YAML for speed.yaml
    python bench/speed_accuracy.py --fit --engines vllm,trtllm   # refit both engines

The fit weighs every source alike (mean squared log error per source, summed) and leaves out
the tok/s of ShareGPT runs sent all at once (`Point.tail`: they end on their longest answers);
the report shows those on a line of their own, next to "steady" (everything else).

A third of the SOURCES (not of the points) is held out of the fit: HOLDOUT below, chosen so
that each engine keeps sources on both sides. For every point: predicted vs measured
aggregate output tok/s and mean ITL; then median and max relative error, split by GPU and by
low (≤ 16 requests in flight) / high concurrency, for the fit set and the hold-out apart, for
the model and for a plain bandwidth roofline; and whether the model orders configurations
(GPU types, TP degrees) of the same source and workload as the measurements do.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher.engines.calibration import calibration_for  # noqa: E402
from launcher.hardware.catalog import lookup_gpu, simulated_inventory  # noqa: E402
from launcher.memory.estimate import EngineFlags, estimate  # noqa: E402
from launcher.models.resolve import resolve_model  # noqa: E402
from launcher.speed import EngineSpeed, ModelCosts, SpeedCalibration, Workload, gpu_speed, predict, roofline  # noqa: E402
from launcher.speed_io import load_speed_calibration  # noqa: E402

POINTS = ROOT / "calibration" / "speed" / "points.csv"
# Chosen before the refit of 2026-12-02 (the vLLM harvest): 6 of 17 sources, each engine on both
# sides, and vLLM tp > 1 points on both sides (A100 tp 2, H100 tp 4/8, H200 tp 8 held out).
HOLDOUT = ("trtllm-llama70b", "gpustack-qwen3-235b-h100", "johnmusgrave-a100",
           "gpustack-gpt-oss-120b-a100", "gpustack-deepseek-r1-h200", "gpustack-glm-4.6-h100")
# trtllm-bench tunes its batch per run and does not print it; assumed (see NOTICE.md).
TRTLLM_BATCH = {"max_num_seqs": 2048, "max_num_batched_tokens": 8192, "util": 0.95}
# The vLLM whose memory rules (batch defaults, KV size) stand in for a point whose release
# is not stated or older than the memory model covers.
VLLM_FALLBACK = "0.19"  # the oldest release the memory model covers
LOW = 16


@dataclass
class Point:
    row: dict[str, str]
    inputs: dict[str, object]
    costs: ModelCosts
    workload: Workload
    thr: float
    itl: float | None
    ttft: float | None

    @property
    def source(self) -> str:
        return self.row["source_id"]

    @property
    def engine(self) -> str:
        return self.row["engine"]

    @property
    def in_flight(self) -> int:
        return self.workload.concurrency or self.workload.prompts

    @property
    def low(self) -> bool:
        return self.in_flight <= LOW

    @property
    def tail(self) -> bool:
        """A ShareGPT run with every prompt sent at once: it ends on its longest answers (a
        tail of a few sequences decoding alone), which mean lengths cannot show, so its
        aggregate tok/s is not a steady-state figure. Its ITL (mean over all tokens) is."""
        return "ShareGPT" in self.row["notes"] and not self.row["concurrency"]


def _bits(weight: str, spec_bits: float | None) -> float:
    return {"bf16": 16.0, "fp16": 16.0, "fp8": 8.0}.get(weight, spec_bits or 16.0)


def load_points() -> list[Point]:
    return [p for row in csv.DictReader(POINTS.open()) if (p := load_point(row)) is not None]


def load_point(row: dict[str, str]) -> Point | None:
    """One row of points.csv (or a sanity case written like one) with what the model needs."""
    spec = resolve_model(row["model"])
    tp, pp, dp = int(row["tp"]), int(row["pp"]), int(row["dp"])
    engine = row["engine"]
    version = row["engine_version"] if engine == "vllm" and row["engine_version"] \
        else VLLM_FALLBACK
    try:
        cal = calibration_for(version)
    except Exception:
        cal = calibration_for(VLLM_FALLBACK)
    quant = "fp8" if row["weight_dtype"] == "fp8" and spec.quantization is None else None
    inp, outl = int(row["input_len"]), int(row["output_len"])
    flags = EngineFlags(tensor_parallel_size=tp, pipeline_parallel_size=pp,
                        quantization=quant,
                        kv_cache_dtype="fp8" if row["kv_dtype"] == "fp8" else "auto")
    flags = replace(flags, **_row_flags(row))
    if engine == "trtllm":
        flags = replace(flags, max_model_len=inp + outl,
                        max_num_seqs=TRTLLM_BATCH["max_num_seqs"],
                        max_num_batched_tokens=TRTLLM_BATCH["max_num_batched_tokens"],
                        gpu_memory_utilization=TRTLLM_BATCH["util"])
    gpus = list(simulated_inventory(f"{tp * pp}x{row['gpu']}").gpus)
    est = estimate(spec, gpus, flags, cal)
    if not est.starts or est.worst is None:
        print(f"skip {row['source_id']} {row['model']} {row['gpu']}: {est.error}")
        return None
    w = est.worst
    conc = int(row["concurrency"]) if row["concurrency"] else None
    rate = math.inf if row["request_rate"] in ("inf", "") else float(row["request_rate"])
    num = int(row["notes"].split("num_prompts=")[1].split(";")[0]) \
        if "num_prompts=" in row["notes"] else None
    if num is None:
        num = _prompts(row)
    inputs = dict(gpu=gpu_speed(lookup_gpu(row["gpu"]), load_speed_calibration()),
                  tp=tp, pp=pp, dp=dp,
                  weight_bits=_bits(row["weight_dtype"],
                                    spec.quantization.weight_bits if spec.quantization
                                    else None),
                  kv_bytes_per_token=max(1, w.kv_cache_bytes // max(1, w.kv_cache_tokens)),
                  max_num_seqs=int(str(est.resolved["max_num_seqs"])),
                  max_num_batched_tokens=int(str(est.resolved["max_num_batched_tokens"])),
                  kv_capacity_tokens=w.kv_cache_tokens, spec=spec)
    return Point(row, inputs, ModelCosts.of(spec), Workload(inp, outl, conc, rate, num),
                 float(row["output_tokens_per_s"]),
                 float(row["itl_ms"]) if row["itl_ms"] else None,
                 float(row["ttft_ms"]) if row["ttft_ms"] else None)


ROW_FLAGS = {"max_model_len": int, "gpu_memory_utilization": float,
             "max_num_batched_tokens": int, "max_num_seqs": int}


def _row_flags(row: dict[str, str]) -> dict[str, object]:
    """Engine settings a run changed from the defaults, as `flags: key=value ...` in notes
    (the part of the serve command the memory model sizes with)."""
    if "flags:" not in row["notes"]:
        return {}
    out: dict[str, object] = {}
    for word in row["notes"].split("flags:")[1].split(";")[0].split():
        key, _, value = word.partition("=")
        if key in ROW_FLAGS and value:
            out[key] = ROW_FLAGS[key](value)
    return out


def _prompts(row: dict[str, str]) -> int | None:
    """The run's prompt count from its notes ("1000 prompts", "300 prompts", …)."""
    words = row["notes"].replace(",", " ").split()
    for a, b in itertools.pairwise(words):
        if b.startswith("prompts") and a.isdigit():
            return int(a)
    return None


def run(p: Point, cal: SpeedCalibration) -> tuple[float, float, float]:
    i = p.inputs
    pred = predict(i["spec"], i["gpu"], tp=i["tp"], pp=i["pp"], dp=i["dp"],  # type: ignore[arg-type]
                   weight_bits=i["weight_bits"], kv_bytes_per_token=i["kv_bytes_per_token"],  # type: ignore[arg-type]
                   max_num_seqs=i["max_num_seqs"],  # type: ignore[arg-type]
                   max_num_batched_tokens=i["max_num_batched_tokens"],  # type: ignore[arg-type]
                   kv_capacity_tokens=i["kv_capacity_tokens"], workload=p.workload,  # type: ignore[arg-type]
                   cal=cal, engine=p.engine, costs=p.costs)
    return pred.output_tokens_per_s, pred.itl_ms, pred.ttft_ms


def base(p: Point) -> tuple[float, float]:
    i = p.inputs
    return roofline(i["spec"], i["gpu"], tp=i["tp"], pp=i["pp"], dp=i["dp"],  # type: ignore[arg-type]
                    weight_bits=i["weight_bits"], kv_bytes_per_token=i["kv_bytes_per_token"],  # type: ignore[arg-type]
                    max_num_seqs=i["max_num_seqs"], workload=p.workload, costs=p.costs)  # type: ignore[arg-type]


def rel(pred: float, meas: float) -> float:
    return abs(pred - meas) / meas


# ---- the fit -------------------------------------------------------------------------------

NAMES = ("bandwidth_efficiency", "compute_efficiency", "step_overhead_ms",
         "per_sequence_overhead_us", "moe_layer_overhead_us")
FRACTION = 2  # the first two are fractions (fitted through a logistic), the rest costs
# Not fitted: the all-reduce latencies (NVLink, PCIe) and the link efficiency come from
# microbenchmarks (profiles/engines/speed.yaml cites them). Fitted, a latency absorbed what MoE
# layers and small kernels cost: 16.7 us per peer, 117 us an all-reduce at tp 8, against the
# 5-20 us measured.


# Upper bound of the fitted bandwidth fraction (--max-bandwidth-efficiency; 1: the datasheet).
BW_CAP = [1.0]


def _to_speed(x: list[float], start: EngineSpeed) -> EngineSpeed:
    sig = [1 / (1 + math.exp(-v)) for v in x[:FRACTION]]
    sig[0] *= BW_CAP[0]
    costs = {n: math.exp(v) for n, v in zip(NAMES[FRACTION:], x[FRACTION:], strict=True)}
    return replace(start, bandwidth_efficiency=sig[0], compute_efficiency=sig[1], **costs)


def _from_speed(s: EngineSpeed) -> list[float]:
    clamp = [min(max(getattr(s, n) / (BW_CAP[0] if i == 0 else 1), 1e-4), 1 - 1e-4)
             for i, n in enumerate(NAMES[:FRACTION])]
    logit = [math.log(v / (1 - v)) for v in clamp]
    # a cost at 0 (not fitted yet) starts from 10 (ms or us), where the simplex can move
    return logit + [math.log(getattr(s, n) if getattr(s, n) > 1e-3 else 10.0)
                    for n in NAMES[FRACTION:]]


def loss(points: list[Point], cal: SpeedCalibration) -> float:
    """Squared log errors of tok/s and ITL (tok/s left out where the run ends on a tail the
    model does not see: `Point.tail`), averaged per source and summed over sources: a source
    with many points (one lab's sweep) weighs as much as one with few."""
    by_source: dict[str, list[float]] = {}
    for p in points:
        thr, itl, _ = run(p, cal)
        errs = by_source.setdefault(p.source, [])
        if not p.tail:
            errs.append(math.log(thr / p.thr) ** 2)
        if p.itl is not None:
            errs.append(math.log(itl / p.itl) ** 2)
    return sum(sum(e) / len(e) for e in by_source.values() if e)


def nelder_mead(f, x0: list[float], steps: float = 0.5, iters: int = 400) -> list[float]:  # type: ignore[no-untyped-def]
    n = len(x0)
    simplex = [x0] + [[x0[j] + (steps if j == i else 0) for j in range(n)] for i in range(n)]
    vals = [f(x) for x in simplex]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda k: vals[k])
        simplex, vals = [simplex[k] for k in order], [vals[k] for k in order]
        centroid = [sum(s[j] for s in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]
        refl = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        fr = f(refl)
        if fr < vals[0]:
            exp = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            fe = f(exp)
            simplex[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            fc = f(con)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = con, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (s - b) for b, s in zip(best, sx, strict=True)]
                                    for sx in simplex[1:]]
                vals = [vals[0]] + [f(s) for s in simplex[1:]]
        if max(vals) - min(vals) < 1e-7:
            break
    return simplex[min(range(n + 1), key=lambda k: vals[k])]


def fit(points: list[Point], cal: SpeedCalibration, engines: tuple[str, ...]) -> SpeedCalibration:
    """Per engine. The MoE layer cost is fitted only where the engine's fit points include a
    MoE model; elsewhere nothing constrains it and it keeps the file's value. The all-reduce
    latencies are never fitted (see NAMES)."""
    for engine in sorted({p.engine for p in points} & set(engines)):
        mine = [p for p in points if p.engine == engine]
        start = cal.factors(engine)
        fixed = {n for n, has in (("moe_layer_overhead_us",
                                   any(p.costs.num_experts for p in mine)),)
                 if not has}
        free = [i for i, n in enumerate(NAMES) if n not in fixed]
        x0 = _from_speed(start)

        def full(x: list[float], x0: list[float] = x0, free: list[int] = free) -> list[float]:
            v = list(x0)
            for i, xi in zip(free, x, strict=True):
                v[i] = xi
            return v

        def f(x: list[float], engine: str = engine, mine: list[Point] = mine,
              start: EngineSpeed = start, base: SpeedCalibration = cal) -> float:
            return loss(mine, base.with_factors(engine, _to_speed(full(x), start)))

        x = nelder_mead(f, [x0[i] for i in free])
        x = nelder_mead(f, x, steps=0.2)
        best = _to_speed(full(x), start)
        cal = cal.with_factors(engine, best)
        print(f"# fit {engine}: {len(mine)} points, loss {f(x):.3f}"
              + (f"; kept {', '.join(sorted(fixed))} (nothing in the fit set constrains it)"
                 if fixed else ""))
        print(f"  {engine}:")
        for n in NAMES:
            print(f"    {n}: {getattr(best, n):.4g}")
    return cal


# ---- the report ----------------------------------------------------------------------------

def summary(label: str, rows: list[tuple[Point, float, float, float, float]]) -> None:
    """rows: (point, model thr, model itl, roofline thr, roofline itl)."""
    def line(name: str, sel: list[tuple[Point, float, float, float, float]]) -> str:
        if not sel:
            return ""
        thr = [rel(r[1], r[0].thr) for r in sel]
        itl = [rel(r[2], r[0].itl) for r in sel if r[0].itl is not None]
        bthr = [rel(r[3], r[0].thr) for r in sel]
        bitl = [rel(r[4], r[0].itl) for r in sel if r[0].itl is not None]

        def mm(v: list[float]) -> str:
            return f"{statistics.median(v):6.0%} {max(v):6.0%}" if v else f"{'–':>6} {'–':>6}"
        return (f"  {name:<22} {len(sel):>3}  {mm(thr)}  {mm(itl)}   |  {mm(bthr)}  {mm(bitl)}")

    print(f"\n{label}: relative error, median / max   (model  |  bandwidth roofline)")
    print(f"  {'':<22} {'n':>3}  {'tok/s med':>6} {'max':>6}  {'ITL med':>6} {'max':>6}   |  "
          f"{'tok/s med':>6} {'max':>6}  {'ITL med':>6} {'max':>6}")
    print(line("all", rows))
    print(line("steady (no ShareGPT-all)", [r for r in rows if not r[0].tail]))
    print(line("ShareGPT all at once", [r for r in rows if r[0].tail]))
    print(line("vllm steady", [r for r in rows if r[0].engine == "vllm" and not r[0].tail]))
    print(line("vllm tp > 1", [r for r in rows if r[0].engine == "vllm"
                               and int(r[0].row["tp"]) * int(r[0].row["pp"]) > 1]))
    for gpu in sorted({r[0].row["gpu"] for r in rows}):
        print(line(f"gpu {gpu}", [r for r in rows if r[0].row["gpu"] == gpu]))
    print(line(f"low (≤{LOW} in flight)", [r for r in rows if r[0].low]))
    print(line(f"high (>{LOW} in flight)", [r for r in rows if not r[0].low]))
    for engine in sorted({r[0].engine for r in rows}):
        print(line(f"engine {engine}", [r for r in rows if r[0].engine == engine]))


def ranking(rows: list[tuple[Point, float, float, float, float]]) -> None:
    """Pairs of points of one source and one workload that differ in GPU type or TP degree."""
    def key(p: Point) -> tuple[str, ...]:
        r = p.row
        # ShareGPT runs' mean lengths differ by a token or two between configurations
        return (r["source_id"], r["model"], str(round(int(r["input_len"]), -1)),
                str(round(int(r["output_len"]), -1)), r["concurrency"], r["request_rate"])
    groups: dict[tuple[str, ...], list[tuple[Point, float, float, float, float]]] = {}
    for r in rows:
        groups.setdefault(key(r[0]), []).append(r)
    agree = base_agree = total = 0
    print("\nordering of configurations (same source and workload; tok/s)")
    for g in groups.values():
        for a, b in itertools.combinations(g, 2):
            pa, pb = a[0], b[0]
            what = (f"{pa.row['gpu']} {_par(pa)} vs {pb.row['gpu']} {_par(pb)}")
            meas, model, roof = pa.thr > pb.thr, a[1] > b[1], a[3] > b[3]
            total += 1
            agree += meas == model
            base_agree += meas == roof
            print(f"  {pa.source:<26} {pa.row['model']:<16} {pa.row['input_len']:>5}/"
                  f"{pa.row['output_len']:<5} {what:<32} measured {pa.thr / pb.thr:5.2f}×  "
                  f"model {a[1] / b[1]:5.2f}× {'ok' if meas == model else 'WRONG'}  "
                  f"roofline {a[3] / b[3]:5.2f}× {'ok' if meas == roof else 'WRONG'}")
    if total:
        print(f"  model orders {agree}/{total} pairs as measured; roofline {base_agree}/{total}")


# Sanity cases (no measurement): one request at a time, 1000 in / 200 out, 4k context.
# (model, GPU, tp, pp, weight dtype)
SANITY = (("llama-3.1-70b", "H100-80GB", 2, 1, "bf16"), ("llama-3.1-70b", "H100-80GB", 4, 1, "bf16"),
          ("llama-3.1-70b", "H100-80GB", 8, 1, "bf16"), ("deepseek-67b", "H100-80GB", 4, 1, "bf16"),
          ("deepseek-67b", "H100-80GB", 8, 1, "bf16"), ("deepseek-r1", "H200", 8, 1, "fp8"),
          ("deepseek-r1", "H200", 4, 2, "fp8"))


def sanity(cal: SpeedCalibration) -> None:
    """What the physics must show whatever the fit: at one request, ITL falls as tp grows
    (Llama-3.1-70B on H100: published vLLM runs have tp 8 ahead of tp 4 at low concurrency),
    and the all-reduces stay a minority of a decode step (vLLM's one-shot all-reduce takes
    5-20 us on NVSwitch, profiles/engines/speed.yaml)."""
    print("\nsanity: one request at a time, 1000 in / 200 out (no measurement; physics checks)")
    print(f"  {'model':<15} {'gpu':<10} {'shape':<7} {'ITL ms':>7} {'weights':>8} {'comm':>6} "
          f"{'moe':>6} {'host':>6}  all-reduce share")
    itl_by: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for model, gpu, tp, pp, wd in SANITY:
        row = {"source_id": "sanity", "model": model, "gpu": gpu, "tp": str(tp), "pp": str(pp),
               "dp": "1", "engine": "vllm", "engine_version": "", "weight_dtype": wd,
               "kv_dtype": "bf16", "concurrency": "1", "request_rate": "inf",
               "input_len": "1000", "output_len": "200", "output_tokens_per_s": "1",
               "itl_ms": "", "ttft_ms": "", "notes": "num_prompts=50; flags: max_model_len=4096"}
        p = load_point(row)
        if p is None:
            continue
        i = p.inputs
        pred = predict(i["spec"], i["gpu"], tp=tp, pp=pp, dp=1,  # type: ignore[arg-type]
                       weight_bits=i["weight_bits"],  # type: ignore[arg-type]
                       kv_bytes_per_token=i["kv_bytes_per_token"],  # type: ignore[arg-type]
                       max_num_seqs=i["max_num_seqs"],  # type: ignore[arg-type]
                       max_num_batched_tokens=i["max_num_batched_tokens"],  # type: ignore[arg-type]
                       kv_capacity_tokens=i["kv_capacity_tokens"],  # type: ignore[arg-type]
                       workload=p.workload, cal=cal, engine="vllm", costs=p.costs)
        t = {x.name: x.value for x in pred.breakdown}
        share = t["interconnect_ms"] / pred.itl_ms
        itl_by.setdefault((model, gpu), []).append((tp * 10 + pp, pred.itl_ms))
        print(f"  {model:<15} {gpu:<10} {'tp' + str(tp) + ('pp' + str(pp) if pp > 1 else ''):<7} "
              f"{pred.itl_ms:7.2f} {t['weights_read_ms']:8.2f} {t['interconnect_ms']:6.2f} "
              f"{t['moe_kernels_ms']:6.2f} {t['host_ms']:6.2f}  {share:5.1%}"
              f"{'' if share < 0.5 else '  CHECK: all-reduces dominate'}")
    itl70 = [itl for _, itl in sorted(itl_by.get(("llama-3.1-70b", "H100-80GB"), []))]
    if itl70:
        falls = all(a > b for a, b in itertools.pairwise(itl70))
        print(f"  llama-3.1-70b on H100, ITL by tp 2/4/8: "
              f"{' > '.join(f'{x:.2f}' for x in itl70)} ms: {'ok' if falls else 'CHECK: not falling'}")


def _par(p: Point) -> str:
    return f"tp{p.row['tp']}" + (f"pp{p.row['pp']}" if p.row["pp"] != "1" else "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--engines", default="vllm",
                    help="engines to refit, comma-separated (default: vllm)")
    ap.add_argument("--max-bandwidth-efficiency", type=float, default=1.0,
                    help="bound of the fitted bandwidth fraction (default 1: the datasheet)")
    args = ap.parse_args()
    BW_CAP[0] = args.max_bandwidth_efficiency
    cal = load_speed_calibration()
    points = load_points()
    fit_set = [p for p in points if p.source not in HOLDOUT]
    hold = [p for p in points if p.source in HOLDOUT]
    sources = sorted({p.source for p in points})
    print(f"{len(points)} points from {len(sources)} sources; hold-out sources "
          f"({len({p.source for p in hold})} of {len(sources)}): {', '.join(HOLDOUT)}")
    if args.fit:
        cal = fit(fit_set, cal, tuple(args.engines.split(",")))
    rows = []
    print(f"\n{'set':<4} {'source':<26} {'model':<16} {'gpu':<10} {'tp':>2} {'w':<5} "
          f"{'in/out':>11} {'conc':>5} {'tok/s meas':>10} {'pred':>8} {'roof':>8} "
          f"{'ITL meas':>8} {'pred':>7} {'TTFT meas':>9} {'pred':>8}  bound")
    for p in points:
        thr, itl, ttft = run(p, cal)
        bthr, bitl = base(p)
        rows.append((p, thr, itl, bthr, bitl))
        i = p.inputs
        pred = predict(i["spec"], i["gpu"], tp=i["tp"], pp=i["pp"], dp=i["dp"],  # type: ignore[arg-type]
                       weight_bits=i["weight_bits"],  # type: ignore[arg-type]
                       kv_bytes_per_token=i["kv_bytes_per_token"],  # type: ignore[arg-type]
                       max_num_seqs=i["max_num_seqs"],  # type: ignore[arg-type]
                       max_num_batched_tokens=i["max_num_batched_tokens"],  # type: ignore[arg-type]
                       kv_capacity_tokens=i["kv_capacity_tokens"],  # type: ignore[arg-type]
                       workload=p.workload, cal=cal, engine=p.engine, costs=p.costs)
        print(f"{'hold' if p.source in HOLDOUT else 'fit':<4} {p.source:<26} "
              f"{p.row['model']:<16} {p.row['gpu']:<10} {p.row['tp']:>2} "
              f"{p.row['weight_dtype']:<5} {p.row['input_len'] + '/' + p.row['output_len']:>11} "
              f"{p.row['concurrency'] or 'all':>5} {p.thr:>10.0f} {thr:>8.0f} {bthr:>8.0f} "
              f"{p.itl if p.itl is not None else '–':>8} {itl:>7.1f} "
              f"{p.ttft if p.ttft is not None else '–':>9} {ttft:>8.0f}  {pred.bound}")
    summary("FIT SET", [r for r in rows if r[0].source not in HOLDOUT])
    summary("HOLD-OUT", [r for r in rows if r[0].source in HOLDOUT])
    ranking(rows)
    sanity(cal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
