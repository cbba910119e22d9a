"""Prometheus metrics, built from the control state at each scrape (no second bookkeeping).

Planned bytes per device and component come from the plan; verified bytes from the report's
verification (so they equal the report); live bytes and headroom from the monitor's last sample.
Speed: `launcher_measured_*` from the report's speed measurement (the load run before ready),
`launcher_predicted_*` from the plan's prediction beside it, `launcher_live_*` from the
engine's own /metrics as the monitor last read it (tokens/s: between its last two readings).
Latencies are in seconds, as Prometheus names them; the report keeps milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from launcher.runtime.state import ControlState, ServePhase


class StateCollector(Collector):
    def __init__(self, state: ControlState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state.snapshot()
        plan = s["plan"] or {}
        report = s["report"] or {}
        planned = GaugeMetricFamily("launcher_planned_bytes", "Planned bytes per device and "
                                    "component", labels=["device", "component"])
        total = GaugeMetricFamily("launcher_device_total_bytes", "Device memory (CUDA-visible "
                                  "or NUMA node)", labels=["device"])
        limit = GaugeMetricFamily("launcher_device_limit_bytes", "(1 - headroom) x total",
                                  labels=["device"])
        for g in plan.get("gpus") or []:
            dev = str(g["index"])
            total.add_metric([dev], g["total_bytes"])
            limit.add_metric([dev], g["limit_bytes"])
            for comp, n in g["planned"].items():
                planned.add_metric([dev, comp], n)
        yield planned
        yield total
        yield limit
        verified = GaugeMetricFamily("launcher_verified_bytes", "Measured at verification "
                                     "(as in the report)", labels=["device", "what"])
        attempts = report.get("attempts") or []
        last = attempts[-1] if attempts else {}
        for d in (last.get("verification") or {}).get("devices", []):
            dev = str(d["index"])
            verified.add_metric([dev, "used"], d["used_bytes"])
            if d.get("engine_measured_bytes") is not None:
                verified.add_metric([dev, "engine"], d["engine_measured_bytes"])
        yield verified
        live_used = GaugeMetricFamily("launcher_live_used_bytes", "Device memory in use, last "
                                      "sample", labels=["device"])
        live_engine = GaugeMetricFamily("launcher_live_engine_bytes", "This engine's memory, "
                                        "last sample", labels=["device"])
        headroom = GaugeMetricFamily("launcher_headroom_bytes", "Free memory left on the device, "
                                     "last sample", labels=["device"])
        headroom_f = GaugeMetricFamily("launcher_headroom_fraction", "Free fraction of the "
                                       "device, last sample", labels=["device"])
        below = GaugeMetricFamily("launcher_headroom_below_target", "1 when free memory is below "
                                  "the headroom target now", labels=["device"])
        for i, d in s["live"].items():
            dev = str(i)
            live_used.add_metric([dev], d["used_bytes"])
            if d["engine_bytes"] is not None:
                live_engine.add_metric([dev], d["engine_bytes"])
            headroom.add_metric([dev], d["headroom_bytes"])
            headroom_f.add_metric([dev], d["headroom_fraction"])
            below.add_metric([dev], 1 if d["below_target"] else 0)
        yield from (live_used, live_engine, headroom, headroom_f, below)
        viol = CounterMetricFamily("launcher_headroom_violations", "Samples with free memory "
                                   "below the headroom target", labels=["device"])
        counts = {str(g["index"]): 0 for g in plan.get("gpus") or []}
        counts.update({str(i): n for i, n in s["violations"].items()})
        for dev, n in counts.items():
            viol.add_metric([dev], n)
        yield viol
        state = GaugeMetricFamily("launcher_engine_state", "1 for the current phase",
                                  labels=["phase"])
        for ph in ServePhase:
            state.add_metric([ph], 1 if s["phase"] == ph else 0)
        yield state
        yield GaugeMetricFamily("launcher_ready", "1 when the engine is up and verified",
                                value=1 if s["ready"] else 0)
        yield CounterMetricFamily("launcher_attempts", "Engine launches so far",
                                  value=s["attempts"])
        yield CounterMetricFamily("launcher_restarts", "Relaunches after a failed attempt",
                                  value=max(0, s["attempts"] - 1))
        yield GaugeMetricFamily("launcher_monitor_samples", "Live memory samples taken",
                                value=s["samples"])
        yield from speed_metrics((last.get("speed") or {}), s.get("engine_live") or {})


def _latency(name: str, doc: str, figures: dict | None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["stat"])
    for stat in ("mean", "p50", "p90"):
        if figures and isinstance(figures.get(stat), int | float):
            g.add_metric([stat], figures[stat] / 1000)
    return g


def _gauge(name: str, doc: str, value: object) -> Iterator[Metric]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield GaugeMetricFamily(name, doc, value=value)


def speed_metrics(speed: dict, live: dict) -> Iterator[Metric]:
    """Measured speed (the load before ready), the prediction beside it, and the engine now."""
    m = speed.get("measured") or {}
    p = speed.get("predicted") or {}
    yield _latency("launcher_measured_ttft_seconds", "Time to first token measured under "
                   "the start-up load", m.get("ttft_ms"))
    yield _latency("launcher_measured_itl_seconds", "Inter-token latency measured under the "
                   "start-up load", m.get("itl_ms"))
    yield from _gauge("launcher_measured_output_tokens_per_second", "Output tokens per second "
                      "of all streams together, start-up load", m.get("output_tokens_per_s"))
    yield from _gauge("launcher_measured_output_tokens_per_second_per_user", "Output tokens "
                      "per second one stream saw, start-up load",
                      m.get("output_tokens_per_s_per_user"))
    yield from _gauge("launcher_measured_requests_per_second", "Requests completed per second, "
                      "start-up load", m.get("requests_per_s"))
    yield from _gauge("launcher_measured_load_concurrency", "Concurrent streams of the "
                      "start-up load", (m.get("load") or {}).get("concurrency"))
    for key, name, doc in (("ttft_ms", "ttft_seconds", "Time to first token"),
                           ("itl_ms", "itl_seconds", "Inter-token latency")):
        v = p.get(key)
        yield from _gauge(f"launcher_predicted_{name}", f"{doc} the plan predicts",
                          v / 1000 if isinstance(v, int | float) else None)
    yield from _gauge("launcher_predicted_output_tokens_per_second", "Output tokens per second "
                      "of all streams the plan predicts", p.get("output_tokens_per_s"))
    yield from _gauge("launcher_predicted_output_tokens_per_second_per_user", "Output tokens "
                      "per second per stream the plan predicts",
                      p.get("output_tokens_per_s_per_user"))
    yield from _gauge("launcher_predicted_requests_per_second", "Requests per second the plan "
                      "predicts", p.get("requests_per_s"))
    latest = live.get("latest") or {}
    yield from _gauge("launcher_live_output_tokens_per_second", "Output tokens per second the "
                      "engine generated between its last two readings",
                      live.get("latest_output_tokens_per_s"))
    yield from _gauge("launcher_live_requests_running", "Requests the engine runs now",
                      latest.get("running"))
    yield from _gauge("launcher_live_requests_waiting", "Requests waiting in the engine's "
                      "queue now", latest.get("waiting"))
    yield from _gauge("launcher_live_kv_cache_usage_ratio", "Fraction of the engine's KV cache "
                      "in use now (0-1)", latest.get("kv_cache_usage"))


def render(state: ControlState) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    return generate_latest(registry)
