"""The status page at `/`: readable at a glance, rendered on the server (no script needed).

Per device: the plan's stacked bar next to what was measured, with the limit line; then the
speed measured under load at start beside the plan's prediction; then the engine now — output
tokens/s, requests running and waiting, KV cache in use — as charts over the last minutes
(inline SVG drawn here from the monitor's ring buffer: no script, no CDN, works offline; the
page reloads itself every 5 s); then the chosen configuration and the reason for each value.
Every figure also sits in a `data-*` attribute so a test (or a scraper) can read the page
without parsing prose.
"""

from __future__ import annotations

import time
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


CHART_W, CHART_H = 520, 150
PAD_L, PAD_R, PAD_T, PAD_B = 46, 10, 10, 22
# Not a color of the memory bars above, so a screenshot can tell the series apart.
SERIES_COLORS = {"tokens": "#1a4fa0", "running": "#0f8f6f", "waiting": "#e07b00",
                 "kv": "#7a3fb4"}


def _num(v: float) -> str:
    if float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"


def _chart(key: str, title: str, series: list[tuple[str, str, list[tuple[float, float]]]],
           now: float, window: float, refs: list[tuple[str, str, float]],
           ymax: float | None = None, unit: str = "") -> str:
    """One chart: lines over time (x: the last `window` seconds up to `now`) and dashed
    horizontal references (the prediction, the figure measured at start)."""
    pw, ph = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    values = [v for _, _, pts in series for _, v in pts] + [v for _, _, v in refs]
    top = ymax if ymax is not None else max([*values, 0.0]) * 1.15 or 1.0
    t0 = now - window

    def xy(t: float, v: float) -> str:
        x = PAD_L + pw * min(1.0, max(0.0, (t - t0) / window))
        y = PAD_T + ph * (1 - min(1.0, max(0.0, v / top)))
        return f"{x:.1f},{y:.1f}"

    parts = [f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fafafa" '
             f'stroke="#ddd"/>',
             f'<text x="{PAD_L - 4}" y="{PAD_T + 9}" text-anchor="end">{_num(top)}{unit}</text>',
             f'<text x="{PAD_L - 4}" y="{PAD_T + ph}" text-anchor="end">0</text>',
             f'<text x="{PAD_L}" y="{CHART_H - 6}">−{window / 60:.0f} min</text>',
             f'<text x="{PAD_L + pw}" y="{CHART_H - 6}" text-anchor="end">now</text>']
    for name, color, v in refs:
        y = xy(t0, v).split(",")[1]
        parts.append(f'<line class="ref" data-ref="{escape(name)}" data-value="{v:.6g}" '
                     f'x1="{PAD_L}" x2="{PAD_L + pw}" y1="{y}" y2="{y}" stroke="{color}" '
                     f'stroke-dasharray="5,4"/>'
                     f'<text x="{PAD_L + pw - 4}" y="{float(y) - 3:.1f}" text-anchor="end" '
                     f'fill="{color}">{escape(name)} {_num(v)}{unit}</text>')
    drawn = 0
    legend = []
    for name, color, pts in series:
        pts = [(t, v) for t, v in pts if t >= t0]
        drawn = max(drawn, len(pts))
        if pts:
            coords = " ".join(xy(t, v) for t, v in pts)
            parts.append(f'<polyline class="series" data-series="{escape(name)}" '
                         f'data-points="{len(pts)}" points="{coords}" fill="none" '
                         f'stroke="{color}" stroke-width="2"/>')
            if len(pts) == 1:
                x, y = xy(*pts[0]).split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
        last = f"{_num(pts[-1][1])}{unit}" if pts else "–"
        legend.append(f'<span class="key"><i style="background:{color}"></i>{escape(name)}: '
                      f'{last}</span>')
    peak = max((v for _, _, pts in series for t, v in pts if t >= t0), default=0.0)
    return (f'<figure class="chart" data-chart="{key}"><figcaption>{escape(title)} '
            f'{"".join(legend)}</figcaption><svg xmlns="http://www.w3.org/2000/svg" '
            f'class="chart-svg" data-chart="{key}" data-points="{drawn}" '
            f'data-max="{peak:.6g}" width="{CHART_W}" height="{CHART_H}" '
            f'viewBox="0 0 {CHART_W} {CHART_H}" font-size="10" fill="#555">'
            f'{"".join(parts)}</svg></figure>')


def _live_charts(live: dict, speed: dict, now: float) -> str:
    points = live.get("series") or []
    if not points:
        return '<p id="live-empty">no reading of the engine\'s /metrics yet</p>'
    window = max(60.0, min(float(live.get("window_seconds") or 900),
                           now - points[0]["at"] + 5))

    def line(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(p["at"], p[key] * scale) for p in points if p.get(key) is not None]

    pred = (speed.get("predicted") or {}).get("output_tokens_per_s")
    meas = (speed.get("measured") or {}).get("output_tokens_per_s")
    refs = [(n, c, float(v)) for n, c, v in (("predicted", "#c00", pred),
                                             ("measured at start", "#555", meas))
            if isinstance(v, int | float)]
    latest = live.get("latest") or {}
    rate = live.get("latest_output_tokens_per_s")

    def fig(v: float | None, unit: str = "", scale: float = 1.0) -> str:
        return "–" if v is None else f"{_num(v * scale)}{unit}"

    def count(v: float | None) -> str:
        return "–" if v is None else f"{v:,.0f}"
    now_line = (f'<p id="live-now" data-output-tokens-per-s="{"" if rate is None else rate}" '
                f'data-running="{latest.get("running", "")}" '
                f'data-waiting="{latest.get("waiting", "")}" '
                f'data-kv-cache-usage="{latest.get("kv_cache_usage", "")}">now: '
                f'{fig(rate)} tokens/s · {count(latest.get("running"))} running · '
                f'{count(latest.get("waiting"))} waiting · KV cache '
                f'{fig(latest.get("kv_cache_usage"), " %", 100)} in use</p>')
    return now_line + '<div class="charts">' + "".join((
        _chart("output_tokens_per_s", "Output tokens/s",
               [("tokens/s", SERIES_COLORS["tokens"], line("output_tokens_per_s"))],
               now, window, refs),
        _chart("requests", "Requests",
               [("running", SERIES_COLORS["running"], line("running")),
                ("waiting", SERIES_COLORS["waiting"], line("waiting"))], now, window, []),
        _chart("kv_cache_usage", "KV cache in use",
               [("KV cache", SERIES_COLORS["kv"], line("kv_cache_usage", 100))], now, window,
               [], ymax=100.0, unit=" %"))) + "</div>"


FIGURES = (("ttft_ms", "time to first token", " ms"), ("itl_ms", "inter-token latency", " ms"),
           ("tpot_ms", "time per output token, per request", " ms"),
           ("output_tokens_per_s", "output tokens/s, all streams", ""),
           ("output_tokens_per_s_per_user", "output tokens/s per stream", ""),
           ("requests_per_s", "requests/s", ""))


def _engine_count(v: float | None) -> str:
    return "–" if v is None else _num(v)


def _speed_table(speed: dict) -> str:
    if not speed:
        return '<p id="speed-none">not measured yet</p>'
    if speed.get("skipped"):
        return f'<p id="speed-none">not measured ({escape(str(speed["skipped"]))})</p>'
    m = speed.get("measured") or {}
    p = speed.get("predicted")
    ratios = speed.get("measured_over_predicted") or {}
    rows = []
    for key, label, unit in FIGURES:
        v = m.get(key)
        if isinstance(v, dict):
            shown = (f"{_num(v['mean'])}{unit} <small>(p50 {_num(v['p50'])}, p90 "
                     f"{_num(v['p90'])})</small>")
            value = v["mean"]
        else:
            shown = "–" if v is None else f"{_num(v)}{unit}"
            value = v
        pv = (p or {}).get(key)
        pred = f"{_num(pv)}{unit}" if isinstance(pv, int | float) else "–"
        r = ratios.get(key)
        rows.append(f'<tr data-figure="{key}" data-measured="{"" if value is None else value}" '
                    f'data-predicted="{pv if isinstance(pv, int | float) else ""}"><th>{label}'
                    f'</th><td>{shown}</td><td>{pred}</td>'
                    f'<td>{"–" if r is None else f"{r:.2f}×"}</td></tr>')
    load = m.get("load") or {}
    note = "" if p else ('<p class="note">The plan carries no speed prediction; the measured '
                         'figures stand alone.</p>')
    later = m.get("ttft_after_first_wave_ms")
    note += ('<p class="note" id="ttft-wave">Time to first token of requests sent as earlier '
             f'ones ended: {_num(later["mean"])} ms (p50 {_num(later["p50"])}, p90 '
             f'{_num(later["p90"])}; {later["n"]} requests).</p>' if later else
             '<p class="note" id="ttft-wave">Every TTFT above is of the first wave, whose '
             'prompts all queued at once (no request ended within the window).</p>')
    errors = "".join(f'<p class="warn">{escape(str(e))}</p>' for e in m.get("errors") or [])
    return (f'<p>{load.get("concurrency")} streams for {load.get("seconds")} s, '
            f'{load.get("prompt_tokens")} prompt + {load.get("output_tokens")} output tokens '
            f'each: {m.get("requests_sent")} requests, {m.get("output_tokens")} tokens '
            f'(the engine counted {_engine_count(m.get("engine_generation_tokens"))})</p>'
            f'<table id="speed" data-ok="{str(bool(m.get("ok"))).lower()}"><tr><th></th>'
            f'<th>measured (mean)</th><th>predicted</th><th>measured ÷ predicted</th></tr>'
            f'{"".join(rows)}</table>{note}{errors}')


def render_page(s: dict, now: float | None = None) -> str:
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
    speed = (last.get("speed") or {}) if last else {}
    speed_html = _speed_table(speed)
    live_html = _live_charts(s.get("engine_live") or {}, speed,
                             time.time() if now is None else now)
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
.charts{{display:flex;flex-wrap:wrap;gap:12px}} figure.chart{{margin:0}}
figcaption{{font-size:13px;margin-bottom:2px}} figcaption .key{{margin-left:10px}}
.note{{color:#555}} small{{color:#777}}
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
<h2>Speed measured at start</h2>
{speed_html}
<h2>Engine now</h2>
{live_html}
<h2>Configuration and why</h2>
<table id="decisions">{decisions}</table>
</body></html>"""
