"""The control API over real HTTP against a real `serve demo`, started by the Docker entry point
script with nothing but environment variables; the status page in real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import ROOT
from engine_helpers import free_port, group_alive, kill_group
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.engine
TOKEN = "tok-planted-9f8e7d6c5b4a"
HF_SECRET = "hf_plantedSecretValue0123456789"
ARTIFACTS = ROOT / "test-artifacts"


class Served:
    def __init__(self, tmp: Path, engine_env: dict[str, str]) -> None:
        self.tmp = tmp
        self.port, self.cport = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.cport}"
        self.fit = tmp / "fit-report.json"
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": os.environ.get("HOME", "/root"), **engine_env,
               "LAUNCHER_MODEL": "demo", "LAUNCHER_PORT": str(self.port),
               "LAUNCHER_CONTROL_PORT": str(self.cport), "LAUNCHER_API_TOKEN": TOKEN,
               "HF_TOKEN": HF_SECRET, "LAUNCHER_LOG_DIR": str(tmp / "logs"),
               "LAUNCHER_FIT_REPORT": str(self.fit), "LAUNCHER_MONITOR_INTERVAL": "1",
               "LAUNCHER_ENFORCE_EAGER": "1", "LAUNCHER_ENGINE_ARGS": "--seed 7"}
        self.proc = subprocess.Popen(["sh", str(ROOT / "docker" / "entrypoint.sh")], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.readiness: list[tuple[float, int, dict]] = []  # /readyz while starting

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def wait_ready(self, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("\n".join(self.lines[-60:]))
            try:
                r = httpx.get(f"{self.api}/readyz", timeout=2)
                self.readiness.append((time.monotonic(), r.status_code, r.json()))
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("not ready:\n" + "\n".join(self.lines[-60:]))


@pytest.fixture(scope="module")
def served(engine_env, tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("served"), engine_env)
    try:
        s.wait_ready()
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
            try:
                s.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(s.proc.pid, signal.SIGKILL)


def test_readiness_flips_to_200_only_after_verification(served: Served) -> None:
    codes = [c for _, c, _ in served.readiness]
    assert codes[-1] == 200 and 503 in codes
    assert all(c == 503 for c in codes[:-1])
    phases = {b["phase"] for _, c, b in served.readiness if c == 503}
    assert phases & {"planning", "starting", "loading", "warming_up", "verifying"}
    report = httpx.get(f"{served.api}/report", headers=served.auth(), timeout=10).json()
    assert report["verdict"] == "serving"
    assert report["attempts"][-1]["verification"]["ok"] is True
    assert httpx.get(f"{served.api}/livez", timeout=5).json() == {"status": "alive"}


def test_metrics_parse_and_equal_the_report(served: Served) -> None:
    h = served.auth()
    text = httpx.get(f"{served.api}/metrics", headers=h, timeout=10).text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    plan = httpx.get(f"{served.api}/plan", headers=h, timeout=10).json()
    report = httpx.get(f"{served.api}/report", headers=h, timeout=10).json()
    planned = {(s.labels["device"], s.labels["component"]): s.value
               for s in fams["launcher_planned_bytes"].samples}
    for g in plan["gpus"]:
        for comp, n in g["planned"].items():
            assert planned[(str(g["index"]), comp)] == n
    verified = {(s.labels["device"], s.labels["what"]): s.value
                for s in fams["launcher_verified_bytes"].samples}
    for d in report["attempts"][-1]["verification"]["devices"]:
        assert verified[(str(d["index"]), "used")] == d["used_bytes"]
        assert verified[(str(d["index"]), "engine")] == d["engine_measured_bytes"]
    ready = next(s.value for s in fams["launcher_ready"].samples)
    assert ready == 1.0
    assert next(s.value for s in fams["launcher_attempts"].samples
                if s.name == "launcher_attempts_total") == len(report["attempts"])
    # the headroom is watched live: samples keep coming while serving
    n0 = next(s.value for s in fams["launcher_monitor_samples"].samples)
    time.sleep(2.5)
    fams2 = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{served.api}/metrics", headers=h, timeout=10).text)}
    assert next(s.value for s in fams2["launcher_monitor_samples"].samples) > n0
    head = next(s for s in fams2["launcher_headroom_fraction"].samples)
    assert 0 < head.value < 1


def test_speed_is_measured_before_ready_and_exported(served: Served) -> None:
    h = served.auth()
    # the load runs between verification and readiness: no user shares it
    seen = [b["phase"] for _, c, b in served.readiness if c == 503]
    assert seen[-1] == "measuring_speed", seen[-5:]
    speed = httpx.get(f"{served.api}/speed", headers=h, timeout=10).json()
    report = httpx.get(f"{served.api}/report", headers=h, timeout=10).json()
    m = speed["measured"]
    assert m == report["attempts"][-1]["speed"]["measured"]
    assert m["ok"] and m["itl_ms"]["mean"] > 0 and m["ttft_ms"]["n"] >= 1
    assert m["output_tokens_per_s"] > 0 and m["output_tokens_per_s_per_user"] > 0
    assert m["load"]["concurrency"] == report["plan"]["decision"]["max_num_seqs"]
    fams = {f.name: f for f in text_string_to_metric_families(
        httpx.get(f"{served.api}/metrics", headers=h, timeout=10).text)}
    itl = {s.labels["stat"]: s.value for s in fams["launcher_measured_itl_seconds"].samples}
    assert itl["mean"] == pytest.approx(m["itl_ms"]["mean"] / 1000)
    assert itl["p50"] <= itl["p90"]
    tps = fams["launcher_measured_output_tokens_per_second"].samples[0].value
    assert tps == pytest.approx(m["output_tokens_per_s"])
    # the engine's own /metrics, sampled live by the monitor since
    live = speed["live"]
    assert live["samples"] >= 3 and live["latest"]["kv_cache_usage"] is not None
    assert max(p["output_tokens_per_s"] or 0 for p in live["series"]) > 0  # the load
    assert fams["launcher_live_requests_running"].samples[0].value >= 0
    assert 0 <= fams["launcher_live_kv_cache_usage_ratio"].samples[0].value <= 1


def test_token_is_enforced_except_on_probes(served: Served) -> None:
    for path in ("/plan", "/report", "/speed", "/gpus", "/metrics", "/"):
        assert httpx.get(served.api + path, timeout=10).status_code == 401, path
        bad = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(served.api + path, headers=bad, timeout=10).status_code == 401, path
        assert httpx.get(served.api + path, headers=served.auth(), timeout=10).status_code == 200
    assert httpx.get(served.api + "/livez", timeout=5).status_code == 200
    assert httpx.get(served.api + "/readyz", timeout=5).status_code == 200


def test_settings_provenance_and_passthrough_in_plan(served: Served) -> None:
    plan = httpx.get(f"{served.api}/plan", headers=served.auth(), timeout=10).json()
    s = plan["settings"]
    assert s["port"] == {"value": served.port, "source": "env:LAUNCHER_PORT"}
    assert s["min_context"] == {"value": 512, "source": "profile:demo"}
    assert s["headroom"] == {"value": 0.2, "source": "default"}
    assert s["engine_args"]["source"] == "env:LAUNCHER_ENGINE_ARGS"
    argv = plan["engine"]["argv"]
    assert argv[argv.index("--seed") + 1] == "7"


def test_status_page_in_headless_chromium(served: Served) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; .ci/run does)"
    report = httpx.get(f"{served.api}/report", headers=served.auth(), timeout=10).json()
    plan = report["plan"]
    # Chromium cannot send a header from the command line: serve it the page as a file
    html = httpx.get(f"{served.api}/", headers=served.auth(), timeout=10).text
    page = served.tmp / "status.html"
    page.write_text(html)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={served.tmp / 'chromium'}",
             "--window-size=1200,1600"]
    out = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True,
                         timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000, out.stderr[-2000:]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    from html.parser import HTMLParser

    found: dict[str, list[dict]] = {"gpu": [], "bar": []}

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            cls = (a.get("class") or "").split()
            if "gpu" in cls:
                found["gpu"].append(a)
            if "bar" in cls and "data-kind" in a:
                found["bar"].append(a)

    P().feed(dom)
    assert len(found["gpu"]) == len(plan["gpus"])
    for g, sec in zip(plan["gpus"], found["gpu"], strict=True):
        assert int(sec["data-planned-bytes"]) == sum(g["planned"].values())
        assert int(sec["data-limit-bytes"]) == g["limit_bytes"]
        kinds = {b["data-kind"] for b in found["bar"] if b["data-device"] == str(g["index"])}
        assert kinds == {"planned", "measured"}
    assert 'data-ready="true"' in dom and "Configuration and why" in dom
    # the speed measured at start and the engine's live series, drawn as charts
    charts = _charts_render_with_data(chromium, flags, dom, served.tmp)
    assert {"output_tokens_per_s", "requests", "kv_cache_usage"} <= set(charts)
    assert float(charts["output_tokens_per_s"]["data-max"]) > 0  # the start-up load's tokens
    assert all(int(c["data-points"]) >= 2 for c in charts.values())
    assert 'id="speed"' in dom and 'data-figure="itl_ms"' in dom


def _charts_render_with_data(chromium: str, flags: list[str], dom: str,
                             tmp: Path) -> dict[str, dict]:
    """The charts as Chromium parsed them, and proof that their lines draw: the charts alone,
    screenshotted with and without their series, differ."""
    import re
    from html.parser import HTMLParser

    charts: dict[str, dict] = {}

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "svg" and "data-chart" in a:
                charts[a["data-chart"]] = a

    P().feed(dom)
    block = re.search(r'<div class="charts">.*?</svg></figure></div>', dom, re.S)
    assert block, "no charts in the page"
    bare = re.sub(r"<polyline[^>]*>(</polyline>)?|<circle[^>]*>(</circle>)?", "", block.group(0))
    shots = []
    for name, body in (("with", block.group(0)), ("without", bare)):
        page = tmp / f"charts-{name}.html"
        page.write_text(f'<!doctype html><html><head><meta charset="utf-8"></head>'
                        f"<body>{body}</body></html>")
        shot = tmp / f"charts-{name}.png"
        out = subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()],
                             capture_output=True, timeout=120)
        assert shot.exists(), out.stderr[-2000:]
        shots.append(shot.read_bytes())
    assert bare != block.group(0) and shots[0] != shots[1], "the chart lines draw nothing"
    return charts


def test_secrets_never_leak(served: Served) -> None:
    h = served.auth()
    texts = ["\n".join(served.lines)]
    for path in ("/plan", "/report", "/gpus", "/metrics", "/"):
        texts.append(httpx.get(served.api + path, headers=h, timeout=10).text)
    texts.append(served.fit.read_text())
    for f in (served.tmp / "logs").rglob("*"):
        if f.is_file():
            texts.append(f.read_text(errors="replace"))
    blob = "\n".join(texts)
    assert len(blob) > 10_000
    assert TOKEN not in blob and HF_SECRET not in blob


def test_sigterm_stops_engine_and_fit_report_has_exit_code(served: Served) -> None:
    report = httpx.get(f"{served.api}/report", headers=served.auth(), timeout=10).json()
    pgid = report["attempts"][-1]["engine_pid"]
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(90) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 15
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.3)
    left = group_alive(pgid)
    kill_group(pgid)
    assert not left
    fit = json.loads(served.fit.read_text())
    assert fit["exit_code"] == 143 and fit["stopped_by"] == "SIGTERM"
    assert fit["attempts"][-1]["verification"]["ok"]
