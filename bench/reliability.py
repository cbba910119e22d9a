"""Reliability under load: the control plane must stay responsive while the engine is busy.

    python bench/reliability.py [--concurrency 50] [--seconds 60]

Starts `serve demo` (CPU engine), waits for /readyz, then keeps `--concurrency` chat requests
in flight against the engine for `--seconds`, while probing the control API's /readyz and
/metrics every 100 ms. Prints requests done/failed, probe latency p50/p99, and the memory
headroom the live monitor measured (minimum over the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def load(base: str, concurrency: int, seconds: float) -> tuple[int, int, list[str]]:
    ok = failed = 0
    errors: list[str] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(
            max_connections=concurrency + 4)) as c:
        async def worker(i: int) -> None:
            nonlocal ok, failed
            n = 0
            while time.monotonic() < stop:
                n += 1
                try:
                    r = await c.post(f"{base}/v1/chat/completions", json={
                        "model": "demo", "max_tokens": 32, "messages": [
                            {"role": "user", "content": f"client {i} request {n}: hello"}]})
                    if r.status_code == 200:
                        ok += 1
                    else:
                        failed += 1
                        errors.append(f"HTTP {r.status_code}")
                except httpx.HTTPError as e:
                    failed += 1
                    errors.append(type(e).__name__)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, failed, errors


async def probe(api: str, seconds: float) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {"/readyz": [], "/metrics": [], "headroom": [], "bad": []}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=10) as c:
        while time.monotonic() < stop:
            for path in ("/readyz", "/metrics"):
                t = time.perf_counter()
                r = await c.get(api + path)
                lat[path].append(time.perf_counter() - t)
                if r.status_code != 200:
                    lat["bad"].append(1.0)
                if path == "/metrics":
                    for f in text_string_to_metric_families(r.text):
                        if f.name == "launcher_headroom_fraction":
                            lat["headroom"].extend(s.value for s in f.samples)
            await asyncio.sleep(0.1)
    return lat


def probe_in_own_process(api: str, seconds: float) -> subprocess.Popen:
    """The probe runs in its own process, so the load generator's event loop does not delay
    it and its latencies are the control plane's."""
    return subprocess.Popen([sys.executable, __file__, "--probe", api, str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        print(json.dumps(asyncio.run(probe(sys.argv[2], float(sys.argv[3])))))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    port, cport = free_port(), free_port()
    with tempfile.TemporaryDirectory() as t:
        env = {**os.environ, "LAUNCHER_CACHE_DIR": str(Path(t) / "cache")}
        proc = subprocess.Popen(
            [sys.executable, "-c", "from launcher.cli import serve_main; serve_main()", "demo",
             "--port", str(port), "--control-port", str(cport), "--monitor-interval", "2",
             "--log-dir", str(Path(t) / "logs")], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        api, base = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited with {proc.returncode}")
                time.sleep(0.5)
            prober = probe_in_own_process(api, a.seconds)
            # Real clients are on other machines: the generator here yields the CPU to the
            # launcher's control plane and the prober rather than stealing their time slices.
            os.nice(10)
            ok, failed, errors = asyncio.run(load(base, a.concurrency, a.seconds))
            lat = json.loads(prober.communicate(timeout=120)[0])
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(90)
    ms = 1000
    print(f"load: {a.concurrency} concurrent chat requests for {a.seconds:.0f} s (demo model, "
          "CPU engine, loopback)")
    print(f"{'measure':<40} {'value':>12}")
    print(f"{'requests completed':<40} {ok:>12}")
    print(f"{'requests failed':<40} {failed:>12}" + (f"  ({sorted(set(errors))[:3]})"
                                                     if errors else ""))
    for path in ("/readyz", "/metrics"):
        xs = lat[path]
        print(f"{path + ' latency p50 / p99 (ms)':<40} {pct(xs, .5) * ms:>5.1f} / "
              f"{pct(xs, .99) * ms:<5.1f} (n={len(xs)})")
    for path in ("/readyz", "/metrics"):
        slow = sum(1 for x in lat[path] if x > 0.1)
        print(f"{path + ' answers slower than 100 ms':<40} {slow:>12}  (max "
              f"{max(lat[path]) * ms:.0f} ms)")
    print(f"{'control-plane non-200 answers':<40} {len(lat['bad']):>12}")
    if lat["headroom"]:
        print(f"{'headroom kept, min / median (measured)':<40} {min(lat['headroom']):>6.1%} / "
              f"{statistics.median(lat['headroom']):.1%}")
    return 1 if failed or lat["bad"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
