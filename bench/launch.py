"""Time to ready: `serve demo` against the same vLLM command started directly.

    python bench/launch.py [--runs 3]

Both are started as fresh processes with identical engine flags (the launcher's own plan,
`launcher plan demo --json`), alternately, and timed from process start until `/health`
answers 200. The launcher's overhead is the difference of the medians; its warm-up and
verification (after the engine is ready) come from its report and are shown separately.
Needs the CPU engine (scripts/install).
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until_healthy(port: int, proc: subprocess.Popen, t0: float, timeout: float = 900) -> float:
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before /health")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("no /health within the timeout")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def direct(argv: list[str], env: dict[str, str], port: int) -> float:
    argv = list(argv)
    argv[argv.index("--port") + 1] = str(port)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return until_healthy(port, proc, t0)
    finally:
        stop(proc)


def launcher(env: dict[str, str], port: int, tmp: Path, n: int) -> tuple[float, dict]:
    report = tmp / f"report-{n}.json"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "from launcher.cli import serve_main; "
                             "serve_main()", "demo", "--port", str(port), "--report", str(report),
                             "--control-port", str(free_port()),
                             "--log-dir", str(tmp / f"logs-{n}")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        ready = until_healthy(port, proc, t0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # the report says "serving" once verified
            if report.exists() and json.loads(report.read_text())["verdict"] == "serving":
                break
            time.sleep(0.2)
        return ready, json.loads(report.read_text())
    finally:
        stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    runs = ap.parse_args().runs
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env = {**os.environ, "LAUNCHER_CACHE_DIR": str(tmp / "cache")}
        plan = json.loads(subprocess.run(
            [sys.executable, "-c", "from launcher.cli import main; main()", "plan", "demo",
             "--json"], env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout)
        argv = plan["engine"]["argv"]
        engine_env = {k: v for k, v in env.items() if k not in plan["engine"]["unset"]}
        engine_env.update(plan["engine"]["env"])
        print("engine command:", " ".join(argv[1:]))
        # one start of each first, not counted: it fills torch.compile's and the OS's caches
        direct(argv, engine_env, free_port())
        launcher(env, free_port(), tmp, -1)
        d_times, l_times, reports = [], [], []
        for i in range(runs):
            d_times.append(direct(argv, engine_env, free_port()))
            t, rep = launcher(env, free_port(), tmp, i)
            l_times.append(t)
            reports.append(rep)
            print(f"run {i + 1}: vLLM direct {d_times[-1]:.1f} s, serve demo {t:.1f} s",
                  flush=True)
    a = [r["attempts"][-1] for r in reports]
    warm = [x["warmup_seconds"] for x in a]
    ver = [x["verification_seconds"] for x in a]
    dm, lm = statistics.median(d_times), statistics.median(l_times)
    print()
    title = f"measure (median of {runs})"
    print(f"{title:<44} {'seconds':>8}  target")
    print(f"{'time to /health, vLLM started directly':<44} {dm:>8.2f}")
    print(f"{'time to /health, serve demo':<44} {lm:>8.2f}")
    print(f"{'launcher overhead before ready':<44} {lm - dm:>8.2f}  "
          f"{(lm - dm) / dm:+.1%} (≤ 10 %: {'ok' if lm - dm <= 0.1 * dm else 'MISSED'})")
    print(f"{'warm-up (after ready)':<44} {statistics.median(warm):>8.2f}")
    print(f"{'verification (after warm-up)':<44} {statistics.median(ver):>8.2f}")
    total = statistics.median([w + v for w, v in zip(warm, ver, strict=True)])
    print(f"{'warm-up + verification':<44} {total:>8.2f}  ≤ 10 s: "
          f"{'ok' if total <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
