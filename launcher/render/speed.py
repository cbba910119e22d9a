"""`launcher speed` for people: the prediction, the shape it is for, and why (a Rich table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def speed_view(out: Mapping[str, Any]) -> Group:
    w, c = out["workload"], out["configuration"]
    load = (f"{w['concurrency']} in flight" if w["concurrency"] is not None else
            "all prompts at once" if w["request_rate"] in (None, "inf") else
            f"{w['request_rate']} req/s")
    head = Text(f"{out['model']} on {out['gpu']} (vLLM {out['engine_version']}): "
                f"tp {c['tp']} × pp {c['pp']} × dp {c['dp']}, {c['weights']}, KV "
                f"{c['kv_cache_dtype']}, max_num_seqs {c['max_num_seqs']}, "
                f"{c['kv_capacity_tokens']:,} KV tokens per replica"
                + (f", recurrent state {c['state_bytes_per_sequence'] / 2**20:,.1f} MiB per "
                   "sequence per GPU" if c.get("state_bytes_per_sequence") else "") + "\n"
                f"workload: {w['input_len']} → {w['output_len']} tokens, {load}")
    t = Table(title="Predicted speed", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("time to first token", f"{out['ttft_ms']:,.0f} ms")
    t.add_row("inter-token latency", f"{out['itl_ms']:.1f} ms")
    t.add_row("output tokens/s (all replicas)", f"{out['output_tokens_per_s']:,.0f}")
    t.add_row("output tokens/s per user", f"{out['output_tokens_per_s_per_user']:.1f}")
    t.add_row("requests/s", f"{out['requests_per_s']:.3g}")
    t.add_row("bound by", str(out["bound"]))
    b = Table(title="Why: one decode step", title_justify="left")
    for col in ("term", "value", "what"):
        b.add_column(col, justify="right" if col == "value" else "left")
    for term in out["breakdown"]:
        b.add_row(term["name"], f"{term['value']:,.3g} {term['unit']}", term["note"])
    notes = Text("\n".join(f"note: {n}" for n in out["notes"]))
    return Group(head, t, b, notes)
