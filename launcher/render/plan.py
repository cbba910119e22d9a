"""A plan for people: decisions with reasons, a budget bar per GPU, capacity, the command,
and every candidate that lost with why. Works from `Plan.to_json()` so the screen and the
JSON can never disagree."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from launcher.memory.components import COMPONENTS, SHORT_LABELS, Component
from launcher.units import fmt_gib

COLORS: dict[Component, str] = {
    Component.OTHER: "magenta", Component.RUNTIME: "yellow", Component.WEIGHTS: "blue",
    Component.ACTIVATION: "cyan", Component.CUDA_GRAPHS: "bright_black",
    Component.KV_CACHE: "green"}


def budget_bar(gpu: dict, width: int = 30) -> Text:
    """One GPU as a stacked bar; `│` marks the limit (1 − headroom), `·` is free memory."""
    total = gpu["total_bytes"]
    bar = Text()
    used_cells = 0
    for comp, n in gpu["planned"].items():
        cells = round(n / total * width)
        if n and cells == 0:
            cells = 1
        cells = min(cells, width - used_cells)
        bar.append("█" * cells, style=COLORS[comp])
        used_cells += cells
    limit_cell = round(gpu["limit_bytes"] / total * width)
    rest = width - used_cells
    free = ["·"] * rest
    if used_cells <= limit_cell < width:
        free[limit_cell - used_cells] = "│"
    bar.append("".join(free), style="dim")
    return bar


def legend() -> Text:
    t = Text("  ")
    for comp in COMPONENTS:
        t.append("█ ", style=COLORS[comp])
        t.append(SHORT_LABELS[comp] + "  ")
    t.append("│ limit  · free", style="dim")
    return t


def _nodes_text(p: dict) -> Text:
    """The layout per node: which GPUs run which replica and pipeline stage."""
    d = p["decision"]
    t = Text(f"nodes: {d['nnodes']} × {d['gpus_per_node']} GPUs "
             f"(TP{d['tensor_parallel_size']} inside a node, PP{d['pipeline_parallel_size']} "
             f"× DP{d['data_parallel_size']} over the nodes)\n", style="bold")
    for n in p["nodes"]:
        stages = ", ".join(str(s) for s in n["pipeline_stages"])
        replicas = ", ".join(str(r) for r in n["replicas"])
        t.append(f"  node {n['node']}: GPUs {_span(n['gpus'])} (local "
                 f"{_span(n['local_gpus'])}) · replica{'s' if len(n['replicas']) > 1 else ''} "
                 f"{replicas} · stage{'s' if len(n['pipeline_stages']) > 1 else ''} "
                 f"{stages}\n")
    return t


def _span(ix: list[int]) -> str:
    if len(ix) > 1 and ix == list(range(ix[0], ix[-1] + 1)):
        return f"{ix[0]}-{ix[-1]}"
    return ",".join(str(i) for i in ix)


def plan_view(p: dict) -> Group:
    parts: list[RenderableType] = []
    m = p["model"]
    head = Text()
    head.append(f"{m['name']}", style="bold")
    head.append(f"  {m['source']} · vLLM {p['engine_version_source']}", style="dim")
    parts.append(head)
    if p["feasible"]:
        parts.append(_decision_table(p))
        parts.append(_budget_table(p))
        parts.append(_bars(p))
        if len(p.get("nodes") or []) > 1:
            parts.append(_nodes_text(p))
        c = p["capacity"]
        if c.get("concurrent_sequences_per_replica") is not None:
            parts.append(Text(
                f"capacity: {c['concurrent_sequences_per_replica']} concurrent sequences at "
                f"{c['max_model_len']:,} tokens per replica "
                f"({c['concurrent_sequences_per_replica'] * c['replicas']} in total); each "
                f"keeps {c['state_bytes_per_sequence'] / 2**20:,.1f} MiB of recurrent state "
                f"per GPU, KV blocks of {c['block_size']} tokens"))
        else:
            parts.append(Text(
                f"capacity: {c['kv_tokens_per_replica']:,} KV tokens per replica "
                f"({c['kv_tokens_total']:,} in total) = "
                f"{c['full_length_sequences_per_replica']} sequences of "
                f"{c['max_model_len']:,} tokens at once per replica, "
                f"{c['full_length_sequences_total']} in total over {c['replicas']} "
                f"replica{'s' if c['replicas'] > 1 else ''}"))
        if p.get("predicted"):
            parts.append(Text(predicted_line(p)))
        if p.get("engine"):
            parts.append(Text("command:", style="bold"))
            parts.append(Text("  " + p["engine"]["shell"], overflow="fold"))
    else:
        parts.append(Text(f"does not fit: {p['reason']}", style="bold red"))
        for s in p["suggestions"]:
            parts.append(Text(f"  {s}", style="yellow"))
    parts.append(_candidates_table(p))
    if p["unavailable"]:
        parts.append(Text("not tried: " + "; ".join(f"{u['label']}: {u['reason']}"
                                                    for u in p["unavailable"]), style="dim"))
    for n in p["notes"]:
        parts.append(Text(f"note: {n}", style="dim"))
    return Group(*parts)


def predicted_line(p: dict) -> str:
    """The speed model's figures for the chosen configuration (and its cost, when priced)."""
    s, w = p["predicted"], p["request"]["workload"]
    line = (f"predicted for {w['input_len']:,} → {w['output_len']:,} tokens per request: "
            f"{s['output_tokens_per_s']:,.0f} output tok/s, TTFT {s['ttft_ms']:,.0f} ms, "
            f"ITL {s['itl_ms']:.1f} ms (limited by {s['bound']}); one request "
            f"{s['request_latency_ms'] / 1000:.2f} s ({s['latency_basis']})")
    cost = p.get("cost")
    if cost:
        line += (f"; ${cost['usd_per_hour']:,.2f}/h for {cost['gpus']} GPUs"
                 + ("" if cost["usd_per_million_tokens"] is None else
                    f", ${cost['usd_per_million_tokens']:,.3f} per million output tokens")
                 + f" (price of {cost['price_date']})")
    return line


def _decision_table(p: dict) -> Table:
    t = Table(title="Plan", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("setting", style="bold", no_wrap=True)
    t.add_column("value", max_width=24, overflow="fold")
    t.add_column("why", overflow="fold", ratio=1, style="dim")
    for d in p["decisions"]:
        v = d["value"]
        if d["name"] == "kv_cache_memory_bytes":
            v = fmt_gib(v)
        t.add_row(d["name"], "–" if v is None else str(v), d["reason"])
    return t


def _budget_table(p: dict) -> Table:
    names = sorted({g["name"] for g in p["gpus"]})
    totals = sorted({fmt_gib(g["total_bytes"], unit=False) for g in p["gpus"]})
    t = Table(title=f"Per-GPU budget in GiB ({', '.join(names)}, {'/'.join(totals)} GiB; "
              f"limit = {1 - p['headroom']:.0%})", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False)
    for col in ("GPU", "limit", *[SHORT_LABELS[c] for c in COMPONENTS], "free"):
        t.add_column(col, justify="left" if col == "GPU" else "right", no_wrap=True)
    for g in p["gpus"]:
        pl = g["planned"]
        t.add_row(str(g["index"]), fmt_gib(g["limit_bytes"], unit=False),
                  *[fmt_gib(pl[c], unit=False) for c in COMPONENTS],
                  f"{g['headroom_fraction']:.0%}")
    return t


def _bars(p: dict) -> Group:
    lines = []
    for g in p["gpus"]:
        line = Text(f"GPU {g['index']:<3}")
        line.append_text(budget_bar(g, width=50))
        line.append(f" {g['planned_total_bytes'] / g['total_bytes']:.0%} used")
        lines.append(line)
    lines.append(legend())
    return Group(*lines)


def _candidates_table(p: dict) -> Table:
    t = Table(title="Candidates considered (✔ chosen, ○ fits, ✘ rejected)", title_justify="left",
              box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("", no_wrap=True)
    t.add_column("weights · KV · context", max_width=30, overflow="fold")
    t.add_column("TP×PP×DP", no_wrap=True)
    t.add_column("max len", justify="right", no_wrap=True)
    t.add_column("seqs", justify="right", no_wrap=True)
    t.add_column("tok/s", justify="right", no_wrap=True)
    t.add_column("result", overflow="fold", ratio=1)
    for c in p["candidates"]:
        mark = {"chosen": "✔", "fits": "○"}.get(c["status"], "✘")
        t.add_row(mark, c["rung"], f"{c['tensor_parallel_size']}×{c['pipeline_parallel_size']}"
                  f"×{c['data_parallel_size']}", f"{c['max_model_len']:,}",
                  "–" if c["concurrency"] is None else f"{c['concurrency']:.1f}",
                  "–" if not c.get("predicted") else
                  f"{c['predicted']['output_tokens_per_s']:,.0f}",
                  c["reason"], style="bold green" if c["status"] == "chosen" else None)
    return t
