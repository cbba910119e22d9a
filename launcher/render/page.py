"""The status page at `/`: readable at a glance, rendered on the server (no script needed).

Per device: the plan's stacked bar next to what was measured, with the limit line; then the
chosen configuration and the reason for each value. Every figure also sits in a `data-*`
attribute so a test (or a scraper) can read the page without parsing prose.
"""

from __future__ import annotations

from html import escape

from launcher.memory.components import COMPONENTS, LABELS, Component
from launcher.units import fmt_gib

COLORS: dict[Component, str] = {
    Component.OTHER: "#b05fc4", Component.RUNTIME: "#d9a400", Component.WEIGHTS: "#3b6fd8",
    Component.ACTIVATION: "#2bb0c4", Component.CUDA_GRAPHS: "#8a8a8a",
    Component.KV_CACHE: "#3aa655"}
ENGINE_COLOR = "#1f7a3a"  # the engine's measured memory, one segment


def _bar(segments: list[tuple[str, str, float]], total: int, limit: int, kind: str,
         index: int) -> str:
    parts = []
    for name, color, n in segments:
        w = max(0.0, min(100.0, 100 * n / total))
        parts.append(f'<span class="seg" data-component="{name}" data-bytes="{int(n)}" '
                     f'title="{escape(name)}: {fmt_gib(n)}" style="width:{w:.3f}%;'
                     f'background:{color}"></span>')
    lim = 100 * limit / total
    used = int(sum(n for _, _, n in segments))
    return (f'<div class="bar {kind}" data-kind="{kind}" data-device="{index}" '
            f'data-total-bytes="{used}">{"".join(parts)}'
            f'<span class="limit" style="left:{lim:.3f}%" title="limit {fmt_gib(limit)}"></span></div>')


def render_page(s: dict) -> str:
    plan = s.get("plan") or {}
    report = s.get("report") or {}
    attempts = report.get("attempts") or []
    last = attempts[-1] if attempts else {}
    verified = {d["index"]: d for d in (last.get("verification") or {}).get("devices", [])}
    model = (plan.get("model") or {}).get("name", "–")
    status = "ready" if s["ready"] else "not ready"
    rows = []
    for g in plan.get("gpus") or []:
        i = g["index"]
        planned = [(c, COLORS[c], n) for c, n in g["planned"].items()]
        live = s["live"].get(i) or s["live"].get(str(i))
        v = verified.get(i)
        measured_html = '<div class="bar empty">not measured yet</div>'
        m_used = None
        src = live or v
        if src is not None:
            used = src["used_bytes"]
            engine = src.get("engine_bytes", src.get("engine_measured_bytes"))
            other = g["planned"]["other"] if engine is not None else used
            segs = [("other", COLORS[Component.OTHER], max(0, used - engine) if engine is not None
                     else other)]
            if engine is not None:
                segs.append(("engine", ENGINE_COLOR, engine))
            measured_html = _bar(segs, g["total_bytes"], g["limit_bytes"], "measured", i)
            m_used = used
        rows.append(
            f'<section class="gpu" data-index="{i}" data-planned-bytes="'
            f'{sum(g["planned"].values())}" data-limit-bytes="{g["limit_bytes"]}" '
            f'data-total-bytes="{g["total_bytes"]}" data-measured-bytes="{m_used or ""}">'
            f'<h3>Device {i}: {escape(g["name"])} — {fmt_gib(g["total_bytes"])}, limit '
            f'{fmt_gib(g["limit_bytes"])}</h3>'
            f'<div class="row"><span class="lbl">planned</span>'
            f'{_bar(planned, g["total_bytes"], g["limit_bytes"], "planned", i)}'
            f'<span class="val">{fmt_gib(sum(g["planned"].values()))}</span></div>'
            f'<div class="row"><span class="lbl">measured</span>{measured_html}'
            f'<span class="val">{fmt_gib(m_used)}</span></div></section>')
    legend = "".join(f'<span class="key"><i style="background:{COLORS[c]}"></i>{LABELS[c]}</span>'
                     for c in COMPONENTS)
    legend += f'<span class="key"><i style="background:{ENGINE_COLOR}"></i>engine (measured)</span>'
    decisions = "".join(
        f"<tr><th>{escape(str(d['name']))}</th><td>{escape(str(d['value']))}</td>"
        f"<td>{escape(str(d['reason']))}</td></tr>" for d in plan.get("decisions") or [])
    warn = "".join(
        f'<p class="warn">device {i}: {fmt_gib(d["headroom_bytes"])} free, below the target; '
        f'held by {escape(", ".join(h["who"] for h in d["holders"][:3]))}</p>'
        for i, d in s["live"].items() if d["below_target"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>launcher: {escape(model)} ({status})</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}
h1{{font-size:20px}} h3{{font-size:15px;margin:16px 0 6px}}
.badge{{padding:2px 8px;border-radius:4px;color:#fff;background:#999}}
.badge.ready{{background:#2e8b57}} .warn{{color:#b00;font-weight:600}}
.row{{display:flex;align-items:center;gap:8px;margin:3px 0}}
.lbl{{width:80px;color:#555}} .val{{width:100px;text-align:right}}
.bar{{position:relative;flex:1;height:22px;background:#eee;display:flex;border-radius:3px}}
.bar.empty{{color:#888;font-size:12px;align-items:center;padding-left:6px}}
.seg{{height:100%}} .limit{{position:absolute;top:-4px;bottom:-4px;width:2px;background:#c00}}
.key{{margin-right:14px;font-size:12px}} .key i{{display:inline-block;width:10px;height:10px;
margin-right:4px}}
table{{border-collapse:collapse;margin-top:8px}} th,td{{text-align:left;padding:3px 8px;
border-bottom:1px solid #eee;vertical-align:top}} td:last-child{{color:#555}}
</style></head><body>
<h1>{escape(model)} <span class="badge {'ready' if s['ready'] else ''}" id="status"
data-ready="{str(s['ready']).lower()}">{status}</span></h1>
<p id="phase">phase: {escape(s['phase'])} — {escape(s['reason'])}; attempts: {s['attempts']};
weights: {escape(str(plan.get('weights') or '–'))}</p>
{warn}
<div id="gpus">{''.join(rows) or '<p>no plan yet</p>'}</div>
<p>{legend}<span class="key" style="color:#c00">| limit (1 − headroom)</span></p>
<h2>Configuration and why</h2>
<table id="decisions">{decisions}</table>
</body></html>"""
