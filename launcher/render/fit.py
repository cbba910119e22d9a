"""`launcher fit MODEL`: one row per catalog GPU type and count, sorted by the objective.

A row is the plan `launcher plan MODEL --gpus NxTYPE` would make (same planner, same
options), reduced to what a buyer compares: fits or not, precision and parallelism, capacity
(sequences of the context held at once), predicted throughput and latency for the workload,
and with a price file the cost per hour and per million output tokens. `FitRow.to_json` is
the `--json` contract; the table is drawn from the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

from launcher.planner import search
from launcher.planner.plan import Plan
from launcher.speed.price import Price

JSON_KEYS = ("gpu", "count", "fits", "weights", "quantization", "kv_cache_dtype",
             "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
             "max_model_len", "sequences", "output_tokens_per_s", "ttft_ms", "itl_ms",
             "request_latency_ms", "gpu_hours_per_million_tokens", "usd_per_gpu_hour",
             "usd_per_hour", "usd_per_million_tokens", "price_date", "price_source", "reason")


@dataclass(frozen=True)
class FitRow:
    gpu: str  # catalog name
    count: int
    plan: Plan
    price: Price | None = None

    @property
    def fits(self) -> bool:
        return self.plan.feasible

    @property
    def gpus_used(self) -> int:
        c = self.plan.chosen
        return 0 if c is None else c.tp * c.pp * c.dp

    @property
    def usd_per_hour(self) -> float | None:
        """What the GPUs the plan uses cost per hour (idle spare GPUs are not counted)."""
        if self.price is None or not self.fits:
            return None
        return self.price.usd_per_gpu_hour * self.gpus_used

    @property
    def usd_per_million_tokens(self) -> float | None:
        c = self.plan.chosen
        if self.price is None or c is None or c.predicted is None:
            return None
        return c.predicted.usd_per_million_tokens(self.price.usd_per_gpu_hour)

    def figure(self, objective: str) -> float | None:
        """The number rows are sorted by (None: not comparable, sorted last): the planner's
        own, except that across GPU types cost is in dollars, not GPU-hours."""
        c = self.plan.chosen
        if c is None or c.predicted is None:
            return None
        if objective == "cost":
            return self.usd_per_million_tokens
        return search.figure(c, objective)

    def to_json(self) -> dict[str, Any]:
        c = self.plan.chosen
        p = None if c is None else c.predicted
        d = self.plan.decision
        usd_h, usd_m = self.usd_per_hour, self.usd_per_million_tokens
        return {
            "gpu": self.gpu, "count": self.count, "fits": self.fits,
            "weights": c.option.label if c else None,
            "quantization": d.quantization if d else None,
            "kv_cache_dtype": d.kv_cache_dtype if d else None,
            "tensor_parallel_size": c.tp if c else None,
            "pipeline_parallel_size": c.pp if c else None,
            "data_parallel_size": c.dp if c else None,
            "max_model_len": c.max_model_len if c else None,
            "sequences": int(c.concurrency) * c.dp if c else None,
            "output_tokens_per_s": round(p.output_tokens_per_s, 1) if p else None,
            "ttft_ms": round(p.ttft_ms, 1) if p else None,
            "itl_ms": round(p.itl_ms, 2) if p else None,
            "request_latency_ms": round(p.request_latency_ms, 1) if p else None,
            "gpu_hours_per_million_tokens": round(p.gpu_hours_per_million_tokens, 4)
            if p else None,
            "usd_per_gpu_hour": self.price.usd_per_gpu_hour if self.price else None,
            "usd_per_hour": None if usd_h is None else round(usd_h, 4),
            "usd_per_million_tokens": None if usd_m is None else round(usd_m, 4),
            "price_date": self.price.date if self.price else None,
            "price_source": self.price.source if self.price else None,
            "reason": None if self.fits else self.plan.reason,
        }


def sort_rows(rows: Sequence[FitRow], objective: str) -> list[FitRow]:
    """Fitting rows with a figure first, best first by the objective; then fitting rows
    without one (no speed figures, or no price for `cost`); then what does not fit."""
    def key(r: FitRow) -> tuple[int, float, int, str]:
        f = r.figure(objective)
        if not r.fits:
            return (2, 0.0, r.count, r.gpu)
        if f is None or math.isnan(f):
            return (1, 0.0, r.count, r.gpu)
        return (0, -f if objective == "throughput" else f, r.count, r.gpu)
    return sorted(rows, key=key)


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def fit_table(rows: Sequence[FitRow], *, model: str, objective: str, workload: str,
              priced: bool) -> Table:
    t = Table(title=f"{model} on the GPU catalog, best {objective} first ({workload})",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["GPUs", "fits", "weights · KV", "TP×PP×DP", "context", "seqs", "out tok/s",
            "TTFT ms", "ITL ms"]
    if priced:
        cols += ["$/h", "$/M tok"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("GPUs", "fits", "weights · KV") else "right",
                     no_wrap=col != "weights · KV")
    for r in rows:
        j = r.to_json()
        if not r.fits:
            cells = [f"{r.count}× {r.gpu}", "✘", "–", "–", "–", "–", "–", "–", "–"]
            if priced:
                cells += ["–", "–"]
            t.add_row(*cells, style="dim")
            continue
        cells = [f"{r.count}× {r.gpu}", "✔",
                 f"{j['weights']} · KV {j['kv_cache_dtype']}",
                 f"{j['tensor_parallel_size']}×{j['pipeline_parallel_size']}×"
                 f"{j['data_parallel_size']}", f"{j['max_model_len']:,}", str(j["sequences"]),
                 _num(j["output_tokens_per_s"], ",.0f"), _num(j["ttft_ms"], ",.0f"),
                 _num(j["itl_ms"], ".1f")]
        if priced:
            cells += [_num(j["usd_per_hour"], ",.2f"), _num(j["usd_per_million_tokens"], ",.3f")]
        t.add_row(*cells)
    return t
