"""Time to ready of a two-node engine: `serve --nnodes 2` on two loopback nodes against the
same two vLLM commands started by hand.

    python bench/multinode.py [--layout tp|pp|dp] [--runs 1]

Both are fresh processes on this machine's CPU backend, one core per node
(VLLM_CPU_OMP_THREADS_BIND=0 / =1, VLLM_HOST_IP=127.0.0.1, GLOO_SOCKET_IFNAME=lo), timed from
process start until node 0's `/health` answers 200. The by-hand commands are the launcher's
own: node 0's from its report, node 1's from `launcher.engines.multinode.node_command`, so
the engine flags are identical. A first launcher start is not counted (it warms vLLM's
compile cache for both sides); then the two alternate which starts first. The launcher's
overhead is the difference (planning, the join, publishing the plan); its warm-up,
verification on both nodes and speed measurement come after the engine is ready and are
shown separately. The direct engines run at the launcher's CPU-engine niceness
(`policy.CPU_ENGINE_NICE`), so both compete alike with whatever else the machine runs.
Needs the CPU engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from launch import ROOT, free_port, stop, until_healthy

from launcher.engines.multinode import node_command
from launcher.planner.plan import EngineCommand
from launcher.policy import CPU_ENGINE_NICE

LAYOUTS = {"tp": ("--tp", "2", "--enforce-eager"), "pp": ("--pp", "2"),
           "dp": ("--enforce-eager",)}
SIZES = {"tp": (2, 1, 1), "pp": (1, 2, 1), "dp": (1, 1, 2)}


def node_env(cache: Path, rank: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAUNCHER_")}
    return {**env, "LAUNCHER_CACHE_DIR": str(cache), "VLLM_HOST_IP": "127.0.0.1",
            "GLOO_SOCKET_IFNAME": "lo", "VLLM_CPU_OMP_THREADS_BIND": str(rank)}


def launcher_run(cache: Path, layout: str, work: Path) -> tuple[float, dict, float]:
    """(seconds to node 0's /health, node 0's report, seconds to verified and serving)."""
    port, control, master = free_port(), free_port(), free_port()
    common = ["demo", "--nnodes", "2", "--master-port", str(master), "--control-port",
              str(control), "--measure-seconds", "2", *LAYOUTS[layout]]
    code = "from launcher.cli import serve_main; serve_main()"
    t0 = time.monotonic()
    n0 = subprocess.Popen([sys.executable, "-c", code, *common, "--port", str(port),
                           "--report", str(work / "report.json"), "--log-dir",
                           str(work / "n0")], env=node_env(cache, 0), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    n1 = subprocess.Popen([sys.executable, "-c", code, *common, "--node-rank", "1",
                           "--log-dir", str(work / "n1")], env=node_env(cache, 1), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        healthy = until_healthy(port, n0, t0)
        report: dict = {}
        while time.monotonic() - t0 < 900:
            path = work / "report.json"
            report = json.loads(path.read_text()) if path.exists() else {}
            if report.get("verdict") == "serving":
                break
            if n0.poll() is not None:
                raise SystemExit(f"node 0 exited with {n0.returncode}")
            time.sleep(0.5)
        serving = time.monotonic() - t0
        return healthy, report, serving
    finally:
        stop(n0)
        stop(n1)


def by_hand(report: dict, layout: str, cache: Path) -> float:
    """The same two engine commands, started directly: seconds to node 0's /health."""
    cmd = report["attempts"][-1]["command"]
    base = EngineCommand(tuple(cmd["argv"]), cmd["env"], tuple(cmd["unset"]))
    tp, pp, dp = SIZES[layout]
    master = free_port()
    port = int(base.flag("--port") or 0)
    procs = []
    t0 = time.monotonic()
    for rank in (0, 1):
        c = node_command(base, nnodes=2, node_rank=rank, master_addr="127.0.0.1",
                         master_port=master, tp=tp, pp=pp, dp=dp, gpus_per_node=1)
        procs.append(subprocess.Popen(c.argv, env=c.environment(node_env(cache, rank)),
                                      cwd=ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        # the launcher starts CPU engines at this niceness (its control API must answer):
        # the same here, or a machine shared with other work favours the direct run
        os.setpriority(os.PRIO_PROCESS, procs[-1].pid, CPU_ENGINE_NICE)
    try:
        return until_healthy(port, procs[0], t0)
    finally:
        for p in procs:
            stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="tp")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    from launcher.models.demo import build_demo_model

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        build_demo_model(cache / "demo-model")
        # One launcher start first, not counted: it gives the commands started by hand and
        # warms vLLM's compile cache for both, so neither side pays it alone. Then the two
        # alternate which goes first.
        _, report, _ = launcher_run(cache, args.layout, cache / "prime")
        launched, direct, serving = [], [], []
        for i in range(args.runs):
            if i % 2:
                direct.append(by_hand(report, args.layout, cache))
            healthy, report, ready = launcher_run(cache, args.layout, cache / f"run{i}")
            launched.append(healthy)
            serving.append(ready)
            if not i % 2:
                direct.append(by_hand(report, args.layout, cache))
        a, b = statistics.median(launched), statistics.median(direct)
        print("| layout | runs | by hand: /health | launcher: /health | overhead | "
              "launcher: verified on both nodes |")
        print("|---|---|---|---|---|---|")
        print(f"| {args.layout.upper()}2 over 2 nodes | {args.runs} | {b:.1f} s | {a:.1f} s | "
              f"{a - b:+.1f} s ({(a - b) / b:+.0%}) | {statistics.median(serving):.1f} s |")


if __name__ == "__main__":
    main()
