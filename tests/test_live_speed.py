"""Live speed: the engine's /metrics read over real HTTP (a loopback server serving pages
recorded from the real vLLM 0.32 CPU engine, tests/data/engine-metrics-SOURCES.txt), the ring
buffer the status page draws from, the statistics of a load run, and what the control API and
the status page make of them. The load itself runs against the real engine in
tests/test_serve_engine.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from launcher.api.metrics import render
from launcher.errors import InputError
from launcher.render.page import render_page
from launcher.runtime.live import (
    GENERATION,
    KV_USAGE,
    PROMPT,
    RUNNING,
    WAITING,
    EngineSample,
    SampleRing,
    parse_engine_metrics,
    rate,
    read_engine_sample,
)
from launcher.runtime.loadtest import (
    CONCURRENCY_CAP,
    LoadShape,
    Trace,
    load_shape,
    percentile,
    planned_workload,
    shape_for,
    speed_record,
    summarize,
)
from launcher.runtime.state import ControlState

DATA = ROOT / "tests" / "data"
PAGE = (DATA / "engine-metrics-0.32.txt").read_text()
LATER = (DATA / "engine-metrics-0.32-later.txt").read_text()
# when the two pages were read (tests/data/engine-metrics-SOURCES.txt)
T_PAGE, T_LATER = 1796173607.463785, 1796173610.6753755


# ---- a real HTTP server that serves the recorded pages ---------------------------------------

class Pages:
    """What the loopback server answers on /metrics: the queued pages in turn (the last one
    again once the queue is done)."""

    def __init__(self) -> None:
        self.queue: list[tuple[int, str]] = []
        self.served = 0

    def next(self) -> tuple[int, str]:
        self.served += 1
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]


@pytest.fixture
def engine_metrics() -> Iterator[tuple[str, Pages]]:
    pages = Pages()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            status, text = pages.next()
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def reference(text: str) -> dict[str, list[float]]:
    """Every sample of the page by its name, as prometheus_client's own parser reads it."""
    out: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s.value)
    return out


# ---- parsing the engine's page ---------------------------------------------------------------

def test_recorded_page_over_http_agrees_with_the_prometheus_parser(engine_metrics) -> None:
    url, pages = engine_metrics
    pages.queue = [(200, PAGE)]
    s = read_engine_sample(url)
    ref = reference(PAGE)
    assert s.running == sum(ref[RUNNING]) and s.waiting == sum(ref[WAITING])
    assert s.kv_cache_usage == max(ref[KV_USAGE])
    assert s.generation_tokens == sum(ref[GENERATION])
    assert s.prompt_tokens == sum(ref[PROMPT])
    # recorded under load: the engine ran as many requests as the plan allows, with a queue
    assert s.running == 32 and s.waiting > 0 and 0 < s.kv_cache_usage < 1
    assert pages.served == 1


def test_rate_between_two_recorded_pages(engine_metrics) -> None:
    url, pages = engine_metrics
    pages.queue = [(200, PAGE), (200, LATER)]
    a = parse_engine_metrics(httpx.get(f"{url}/metrics").text, T_PAGE)
    b = parse_engine_metrics(httpx.get(f"{url}/metrics").text, T_LATER)
    want = (sum(reference(LATER)[GENERATION]) - sum(reference(PAGE)[GENERATION])) / \
        (T_LATER - T_PAGE)
    assert rate(a, b) == pytest.approx(want) and want > 100
    assert rate(b, a) is None  # backwards in time
    ring = SampleRing()
    ring.extend([a, b])
    series = ring.series()
    assert series[0]["output_tokens_per_s"] is None
    assert series[1]["output_tokens_per_s"] == pytest.approx(want)
    assert ring.to_json()["latest_output_tokens_per_s"] == pytest.approx(want)


def test_an_unreadable_page_is_an_error_naming_the_series(engine_metrics) -> None:
    url, pages = engine_metrics
    pages.queue = [(200, PAGE.replace(
        'vllm:kv_cache_usage_perc{engine="0",model_name="demo"} 0.124',
        'vllm:kv_cache_usage_perc{engine="0",model_name="demo"} 1.124'))]
    with pytest.raises(InputError, match="vllm:kv_cache_usage_perc"):
        read_engine_sample(url)
    pages.queue = [(200, "# not vLLM\nprocess_cpu_seconds_total 3.0\n")]
    with pytest.raises(InputError, match="not a vLLM metrics page"):
        read_engine_sample(url)
    pages.queue = [(503, "")]
    with pytest.raises(httpx.HTTPStatusError):
        read_engine_sample(url)


def test_older_name_of_kv_usage_and_data_parallel_engines_sum() -> None:
    two = ("vllm:num_requests_running{engine=\"0\"} 3\nvllm:num_requests_running{engine=\"1\"} 4\n"
           "vllm:gpu_cache_usage_perc{engine=\"0\"} 0.25\nvllm:gpu_cache_usage_perc{engine=\"1\"} "
           "0.5\nvllm:generation_tokens_total{engine=\"0\"} 10\n"
           "vllm:generation_tokens_total{engine=\"1\"} 5 1700000000000\n")
    s = parse_engine_metrics(two, 1.0)
    assert (s.running, s.kv_cache_usage, s.generation_tokens) == (7, 0.5, 15)
    assert s.waiting is None and s.prompt_tokens is None


NAMES = st.sampled_from([RUNNING, WAITING, KV_USAGE, GENERATION, PROMPT])
LABELS = st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                         st.text(st.characters(exclude_characters='"\\\n'), max_size=12),
                         max_size=3)


def _line(name: str, labels: dict[str, str], value: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}" if labels else f"{name} {value}"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_sample_or_an_input_error(text: str) -> None:
    try:
        parse_engine_metrics(text, 0.0)
    except InputError as e:
        assert "engine /metrics" in e.message and e.fix


@settings(max_examples=300, deadline=None)
@given(NAMES, LABELS, st.one_of(st.sampled_from(["NaN", "+Inf", "-1", "abc", "", "1e400"]),
                                st.floats(max_value=-1e-9)))
def test_a_value_vllm_cannot_mean_names_its_series(name: str, labels: dict[str, str],
                                                   bad: str | float) -> None:
    page = PAGE + _line(name, labels, str(bad)) + "\n"
    with pytest.raises(InputError) as e:
        parse_engine_metrics(page, 0.0)
    assert name in e.value.message or "cannot read" in e.value.message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(NAMES, LABELS, st.floats(0, 1, allow_nan=False)), min_size=1,
                max_size=12))
def test_valid_pages_sum_like_the_reference_parser(rows: list) -> None:
    page = "\n".join(_line(n, lb, repr(v)) for n, lb, v in rows) + "\n"
    s = parse_engine_metrics(page, 0.0)
    for name, got, how in ((RUNNING, s.running, sum), (WAITING, s.waiting, sum),
                           (GENERATION, s.generation_tokens, sum),
                           (PROMPT, s.prompt_tokens, sum), (KV_USAGE, s.kv_cache_usage, max)):
        values = [v for n, _, v in rows if n == name]
        assert got == (how(values) if values else None)


# ---- the ring buffer -------------------------------------------------------------------------

def sample(at: float, tokens: float | None = 0.0, running: float = 1.0) -> EngineSample:
    return EngineSample(at, running, 0.0, 0.1, tokens, 0.0)


def test_ring_keeps_the_newest_within_capacity_and_window() -> None:
    ring = SampleRing(capacity=5, window=100.0)
    ring.extend(sample(t, 10.0 * t) for t in range(10))
    assert [s.at for s in ring.samples()] == [5, 6, 7, 8, 9]
    ring.add(sample(300, 3000.0))  # everything else is older than the window now
    assert [s.at for s in ring.samples()] == [300]
    ring.add(sample(250))  # late: dropped, the series stays in time order
    assert len(ring) == 1
    with pytest.raises(ValueError):
        SampleRing(capacity=1)


def test_ring_rates_skip_a_restarted_counter_and_a_missing_one() -> None:
    ring = SampleRing()
    ring.extend([sample(0, 100), sample(2, 300), sample(4, 50), sample(5, None), sample(6, 80)])
    rates = [p["output_tokens_per_s"] for p in ring.series()]
    assert rates == [None, 100.0, None, None, None]
    assert ring.to_json()["latest_output_tokens_per_s"] == 100.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 1e9)), max_size=40),
       st.integers(2, 20), st.floats(1, 1e4))
def test_ring_is_ordered_bounded_and_windowed(points: list, cap: int, window: float) -> None:
    ring = SampleRing(capacity=cap, window=window)
    for at, n in points:
        ring.add(sample(at, n))
    got = [s.at for s in ring.samples()]
    assert got == sorted(got) and len(got) <= cap
    if got:
        assert got[0] >= got[-1] - window


# ---- statistics of a load run ----------------------------------------------------------------

SHAPE = LoadShape(concurrency=2, prompt_tokens=16, output_tokens=8, seconds=2.0)


def test_summarize_a_known_run() -> None:
    a = Trace(sent=0.0, chunks=[(0.5, 1), (0.6, 2), (0.7, 1)], done=True)
    # b was sent when an earlier request ended; its last chunk is past the end
    b = Trace(sent=0.1, chunks=[(0.4, 1), (0.5, 1), (2.5, 1)], first_wave=False)
    c = Trace(sent=1.0, error="HTTP 500: boom", first_wave=False)
    m = summarize([a, b, c], SHAPE, 0.0, 2.0)
    assert m.ttft_ms is not None and m.itl_ms is not None and m.tpot_ms is not None
    assert m.ttft_ms.n == 2 and m.ttft_ms.mean == pytest.approx((500 + 300) / 2)
    assert m.ttft_after_first_wave_ms is not None and m.ttft_after_first_wave_ms.n == 1
    assert m.ttft_after_first_wave_ms.mean == pytest.approx(300)
    # ITL samples: a: 0.1 s shared by the 2 tokens of its second chunk (50, 50), then 100;
    # b: 100 (its third chunk is past the end) → [50, 50, 100, 100]
    assert m.itl_ms.n == 4 and m.itl_ms.mean == pytest.approx(75)
    assert m.itl_ms.p50 == pytest.approx(75) and m.itl_ms.p90 == pytest.approx(100)
    assert m.output_tokens == 6 and m.output_tokens_per_s == pytest.approx(3.0)
    assert m.output_tokens_per_s_per_user == pytest.approx(4 / 0.3)
    assert m.tpot_ms.mean == pytest.approx((200 / 3 + 100) / 2)
    assert (m.requests_sent, m.requests_completed, m.requests_failed) == (3, 1, 1)
    assert m.requests_per_s == pytest.approx(0.5) and m.errors == ("HTTP 500: boom",)
    assert m.ok and m.to_json()["ttft_ms"]["n"] == 2


def test_nothing_measured_is_not_ok() -> None:
    m = summarize([Trace(sent=0.0)], SHAPE, 0.0, 1.0)
    assert not m.ok and m.ttft_ms is None and m.output_tokens_per_s == 0
    with pytest.raises(ValueError):
        summarize([], SHAPE, 1.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_numpys_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6,
                                                  rel=1e-9)


TRACES = st.lists(st.builds(
    lambda sent, gaps, sizes: Trace(sent=sent, chunks=[
        (sent + sum(gaps[:i + 1]), n) for i, n in enumerate(sizes[:len(gaps)])]),
    st.floats(0, 5), st.lists(st.floats(0.001, 1), max_size=12),
    st.lists(st.integers(1, 4), min_size=12, max_size=12)), max_size=10)


@settings(max_examples=200, deadline=None)
@given(TRACES, st.floats(0.5, 20))
def test_summary_invariants(traces: list[Trace], window: float) -> None:
    m = summarize(traces, SHAPE, 0.0, window)
    inside = [[c for c in t.chunks if c[0] <= window] for t in traces]
    assert m.output_tokens == sum(n for cs in inside for _, n in cs)
    assert m.output_tokens_per_s == pytest.approx(m.output_tokens / window)
    assert (m.ttft_ms.n if m.ttft_ms else 0) == sum(1 for cs in inside if cs)
    later = sum(n for cs in inside for _, n in cs[1:])
    assert (m.itl_ms.n if m.itl_ms else 0) == later
    if m.itl_ms and m.output_tokens_per_s_per_user:
        assert m.output_tokens_per_s_per_user == pytest.approx(1000 / m.itl_ms.mean, rel=1e-6)
        assert m.itl_ms.p50 <= m.itl_ms.p90


@settings(max_examples=200, deadline=None)
@given(st.integers(4, 1_000_000), st.integers(1, 4096), st.floats(0.1, 300),
       st.one_of(st.none(), st.integers(1, 10**6)), st.one_of(st.none(), st.integers(1, 10**6)),
       st.one_of(st.none(), st.integers(1, 10**6)))
def test_load_shape_fits_the_context(max_len, seqs, seconds, prompt, out, users) -> None:
    shape = load_shape(max_len, seqs, seconds, prompt, out, users)
    assert shape.prompt_tokens + shape.output_tokens < max_len
    assert shape.prompt_tokens >= 1 and shape.output_tokens >= 2
    assert 1 <= shape.concurrency <= min(users or seqs, CONCURRENCY_CAP)


def test_shape_follows_the_planned_workload() -> None:
    plan = {"request": {"workload": {"input_len": 1024, "output_len": 256, "concurrency": None}}}
    shape = shape_for(4096, 32, 5.0, planned_workload(plan))
    assert (shape.prompt_tokens, shape.output_tokens, shape.concurrency) == (1024, 256, 32)
    shape = shape_for(4096, 32, 5.0, {"input_len": 100, "output_len": 10, "concurrency": 4})
    assert (shape.prompt_tokens, shape.output_tokens, shape.concurrency) == (100, 10, 4)
    assert planned_workload({}) == {} and planned_workload(None) == {}


# ---- beside the prediction: report record, control API metrics, status page ------------------

def test_prediction_is_for_the_load_that_runs() -> None:
    """The speed model predicts exactly the load's lengths and concurrency (a GPU plan; the
    CPU backend has no speed model)."""
    from dataclasses import replace

    from launcher.planner import PlanRequest
    from launcher.prepare import Target, build_plan
    from launcher.runtime.loadtest import load_prediction

    plan = build_plan("qwen3-8b", PlanRequest(), Target(gpus="1xH100-80GB"))
    assert plan.decision is not None and plan.chosen is not None
    shape = shape_for(plan.decision.max_model_len, plan.decision.max_num_seqs, 5.0,
                      planned_workload(plan.to_json()))
    pred = load_prediction(plan, shape)
    assert pred is not None
    assert (pred["workload"]["input_len"], pred["workload"]["output_len"],
            pred["workload"]["concurrency"]) == (shape.prompt_tokens, shape.output_tokens,
                                                 shape.concurrency)
    assert pred["itl_ms"] > 0 and pred["output_tokens_per_s"] > 0
    unpredicted = replace(plan, chosen=replace(plan.chosen, predicted=None))
    assert load_prediction(unpredicted, shape) is None


PREDICTED = {"ttft_ms": 200.0, "itl_ms": 50.0, "output_tokens_per_s": 4.0,
             "output_tokens_per_s_per_user": 10.0, "requests_per_s": 1.0, "bound": "memory",
             "workload": {"input_len": 16, "output_len": 8, "concurrency": 2}}


def known_run():
    a = Trace(sent=0.0, chunks=[(0.5, 1), (0.6, 2), (0.7, 1)], done=True)
    b = Trace(sent=0.1, chunks=[(0.4, 1), (0.5, 1)], done=True)
    return summarize([a, b], SHAPE, 0.0, 2.0)


def test_record_puts_measured_over_predicted() -> None:
    m = known_run()
    rec = speed_record(m, PREDICTED)
    r = rec["measured_over_predicted"]
    assert r["ttft_ms"] == pytest.approx(m.ttft_ms.mean / 200, abs=1e-3)
    assert r["itl_ms"] == pytest.approx(m.itl_ms.mean / 50, abs=1e-3)
    assert r["output_tokens_per_s"] == pytest.approx(m.output_tokens_per_s / 4, abs=1e-3)
    assert r["requests_per_s"] == pytest.approx(m.requests_per_s / 1, abs=1e-3)
    alone = speed_record(m, None)
    assert alone["predicted"] is None and alone["measured_over_predicted"] is None
    skipped = speed_record(None, PREDICTED, skipped="--no-measure-speed")
    assert skipped["measured"] is None and skipped["skipped"] == "--no-measure-speed"


def state_with_live(url: str, pages: Pages, record: dict | None) -> ControlState:
    pages.queue = [(200, PAGE), (200, LATER), (200, PAGE.replace(
        "vllm:generation_tokens_total{engine=\"0\",model_name=\"demo\"} 14531.0",
        "vllm:generation_tokens_total{engine=\"0\",model_name=\"demo\"} 20000.0"))]
    state = ControlState()
    texts = [httpx.get(f"{url}/metrics").text for _ in range(3)]
    state.record_engine([parse_engine_metrics(t, 1000.0 + 2 * i) for i, t in enumerate(texts)])
    if record is not None:
        state.set_report({"attempts": [{"speed": record}]})
    return state


def test_metrics_export_measured_predicted_and_live(engine_metrics) -> None:
    url, pages = engine_metrics
    m = known_run()
    state = state_with_live(url, pages, speed_record(m, PREDICTED))
    fams = reference(render(state).decode())
    assert fams["launcher_measured_itl_seconds"][0] == pytest.approx(m.itl_ms.mean / 1000,
                                                                     abs=1e-6)
    assert fams["launcher_measured_ttft_seconds"][0] == pytest.approx(m.ttft_ms.mean / 1000,
                                                                      abs=1e-6)
    assert fams["launcher_measured_output_tokens_per_second"] == [m.output_tokens_per_s]
    assert fams["launcher_predicted_itl_seconds"] == [0.05]
    assert fams["launcher_predicted_output_tokens_per_second"] == [4.0]
    live = state.snapshot()["engine_live"]
    ref = reference(PAGE)
    assert fams["launcher_live_requests_running"] == [sum(ref[RUNNING])]
    assert fams["launcher_live_kv_cache_usage_ratio"] == [max(ref[KV_USAGE])]
    assert fams["launcher_live_output_tokens_per_second"] == [
        pytest.approx(live["latest_output_tokens_per_s"])]
    # without a measurement or a prediction, no measured or predicted figure is made up
    bare = reference(render(ControlState()).decode())
    assert not any(k.startswith(("launcher_measured_", "launcher_predicted_", "launcher_live_"))
                   and v for k, v in bare.items())


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def having(self, tag: str, attr: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.found if t == tag and attr in a]


def test_status_page_draws_the_live_series_beside_the_prediction(engine_metrics) -> None:
    url, pages = engine_metrics
    m = known_run()
    state = state_with_live(url, pages, speed_record(m, PREDICTED))
    html = render_page(state.snapshot(), now=1010.0)
    p = Elements()
    p.feed(html)
    charts = {a["data-chart"]: a for a in p.having("svg", "data-chart")}
    assert set(charts) == {"output_tokens_per_s", "requests", "kv_cache_usage"}
    lines = {a["data-series"]: a for a in p.having("polyline", "data-series")}
    assert int(lines["tokens/s"]["data-points"]) == 2  # two rates between three readings
    assert int(lines["running"]["data-points"]) == 3
    for line in lines.values():  # every point inside the drawing
        for xy in line["points"].split():
            x, y = map(float, xy.split(","))
            assert 0 <= x <= 520 and 0 <= y <= 150
    rates = [pt["output_tokens_per_s"] for pt in state.snapshot()["engine_live"]["series"][1:]]
    assert float(charts["output_tokens_per_s"]["data-max"]) == pytest.approx(max(rates), rel=1e-5)
    refs = {a["data-ref"]: float(a["data-value"]) for a in p.having("line", "data-ref")}
    assert refs == {"predicted": 4.0, "measured at start": pytest.approx(m.output_tokens_per_s)}
    rows = {a["data-figure"]: a for a in p.having("tr", "data-figure")}
    assert float(rows["itl_ms"]["data-measured"]) == m.to_json()["itl_ms"]["mean"]
    assert float(rows["itl_ms"]["data-predicted"]) == 50.0
    assert rows["tpot_ms"]["data-predicted"] == ""
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_status_page_without_readings_or_prediction_says_so() -> None:
    html = render_page(ControlState().snapshot())
    assert 'id="live-empty"' in html and 'id="speed-none"' in html
    state = ControlState()
    state.set_report({"attempts": [{"speed": speed_record(known_run(), None)}]})
    html = render_page(state.snapshot())
    assert "carries no speed prediction" in html


# ---- the options ---------------------------------------------------------------------------

def test_measure_options_reach_serve_and_bad_values_name_the_variable() -> None:
    from launcher import options

    def opts(env: dict[str, str], given: dict[str, object] | None = None):
        return options.serve_options(options.values(options.settle_command(
            "serve", given or {}, env)))

    default = opts({})
    assert default.measure_speed is True and default.measure_seconds == 5.0
    off = opts({"LAUNCHER_MEASURE_SPEED": "0", "LAUNCHER_MEASURE_SECONDS": "2.5"})
    assert off.measure_speed is False and off.measure_seconds == 2.5
    assert opts({"LAUNCHER_MEASURE_SPEED": "0"}, {"measure_speed": True}).measure_speed
    for raw in ("0", "-1", "301", "soon"):
        with pytest.raises(InputError, match="LAUNCHER_MEASURE_SECONDS"):
            opts({"LAUNCHER_MEASURE_SECONDS": raw})
    with pytest.raises(InputError, match="LAUNCHER_MEASURE_SPEED"):
        opts({"LAUNCHER_MEASURE_SPEED": "maybe"})
