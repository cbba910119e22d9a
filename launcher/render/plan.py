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
        c = p["capacity"]
        parts.append(Text(
            f"capacity: {c['kv_tokens_per_replica']:,} KV tokens per replica "
            f"({c['kv_tokens_total']:,} in total) = {c['full_length_sequences_per_replica']} "
            f"sequences of {c['max_model_len']:,} tokens at once per replica, "
            f"{c['full_length_sequences_total']} in total over {c['replicas']} "
            f"replica{'s' if c['replicas'] > 1 else ''}"))
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
    t.add_column("result", overflow="fold", ratio=1)
    for c in p["candidates"]:
        mark = {"chosen": "✔", "fits": "○"}.get(c["status"], "✘")
        t.add_row(mark, c["rung"], f"{c['tensor_parallel_size']}×{c['pipeline_parallel_size']}"
                  f"×{c['data_parallel_size']}", f"{c['max_model_len']:,}",
                  "–" if c["concurrency"] is None else f"{c['concurrency']:.1f}",
                  c["reason"], style="bold green" if c["status"] == "chosen" else None)
    return t
