"""Two loopback "nodes" of one engine on this machine's CPU backend (vLLM's native multi-node,
mp executor): TP2, DP2 and PP2 each start, warm up, verify on both nodes and answer a chat;
a worker's engine killed mid-serve ends both sides cleanly (exit 4, no orphan, no leaked
shared-memory file).

Each node is a real `serve` process with its own core (VLLM_CPU_OMP_THREADS_BIND=0 / =1);
the cross-node transport is real: the CPU communicator falls back to gloo between nodes
(shared/notes/vllm-multinode-on-cpu.md §3). One start per layout, shared by its assertions.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from engine_helpers import Launcher, free_port, group_alive, kill_group

from launcher.runtime import shm

pytestmark = pytest.mark.engine

START = 600.0  # two engines on 2 shared cores: loading alone can take minutes
TOKEN = "multinode-test-token"


@dataclass
class Pair:
    node0: Launcher
    node1: Launcher
    port: int
    control: int
    report: Path
    shm_before: set[Path]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def api(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.control}{path}", headers=self.headers,
                         timeout=10)

    def engine_pids(self) -> tuple[int, int]:
        p0 = int(self.node0.wait_for(r"engine starting \(pid (\d+)\)", 60).group(1))
        p1 = int(self.node1.wait_for(r"engine starting \(pid (\d+)\)", 60).group(1))
        return p0, p1


def _start(tmp: Path, engine_env: dict[str, str], *flags: str) -> Pair:
    port, control, master = free_port(), free_port(), free_port()
    report = tmp / "report.json"
    common = ("demo", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port",
              str(master), "--control-port", str(control), "--node-deadline", "120",
              "--measure-seconds", "2", *flags)
    env = {**engine_env, "VLLM_HOST_IP": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
           "LAUNCHER_API_TOKEN": TOKEN}
    before = shm.listing()
    node0 = Launcher(*common, "--port", str(port), "--report", str(report), "--log-dir",
                     str(tmp / "n0"), env={**env, "VLLM_CPU_OMP_THREADS_BIND": "0"})
    node1 = Launcher(*common, "--node-rank", "1", "--log-dir", str(tmp / "n1"),
                     env={**env, "VLLM_CPU_OMP_THREADS_BIND": "1"})
    return Pair(node0, node1, port, control, report, before)


def _serving(pair: Pair) -> None:
    pair.node0.wait_for(r"serving demo at", START)
    pair.node1.wait_for(r"measured device 1", 30)


def _stop(pair: Pair, pgids: tuple[int, ...]) -> None:
    for launcher in (pair.node0, pair.node1):
        launcher.kill()
    for pgid in pgids:
        kill_group(pgid)


def _check_served(pair: Pair, layout: tuple[int, int, int]) -> None:
    """Ready on node 0 only after both nodes verified; every node's devices reported."""
    ready = httpx.get(f"http://127.0.0.1:{pair.control}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    rep = json.loads(pair.report.read_text())
    final = rep["attempts"][-1]
    d = final["plan"]["decision"]
    assert (d["tensor_parallel_size"], d["pipeline_parallel_size"],
            d["data_parallel_size"]) == layout
    assert final["verification"]["ok"], final["verification"]
    devices = {dev["index"]: dev for dev in final["verification"]["devices"]}
    assert set(devices) == {0, 1}  # node 0's device and node 1's, both measured
    for dev in devices.values():
        assert dev["engine_measured_bytes"] > 256 << 20  # a real engine part on each node
    argv = final["command"]["argv"]
    assert "--headless" not in argv and "--node-rank" not in argv[:3]
    cluster = pair.api("/cluster").json()
    [worker] = cluster["nodes"]
    assert worker["rank"] == 1 and worker["measured"][str(len(rep["attempts"]))]
    metrics = pair.api("/metrics").text
    assert 'launcher_cluster_device_engine_bytes{rank="1",device="1"}' in metrics
    # the token guards the nodes' own endpoints too
    assert httpx.get(f"http://127.0.0.1:{pair.control}/cluster/directive?rank=1",
                     timeout=10).status_code == 401
    chat = httpx.post(f"http://127.0.0.1:{pair.port}/v1/chat/completions", timeout=120, json={
        "model": "demo", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hello"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] \
        is not None


def _no_orphans(pgids: tuple[int, ...], launchers: tuple[Launcher, ...]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(group_alive(g) for g in pgids):
        time.sleep(0.5)
    assert not [p.pid for g in pgids for p in group_alive(g)], "engine processes outlived"
    for launcher in launchers:
        assert not psutil.pid_exists(launcher.proc.pid) or \
            psutil.Process(launcher.proc.pid).status() == psutil.STATUS_ZOMBIE


def _no_leaked_shm(pair: Pair) -> None:
    left = shm.listing() - pair.shm_before
    assert not (left - shm.in_use(left)), f"left behind: {sorted(map(str, left))}"


@pytest.fixture
def tp2(tmp_path: Path, engine_env: dict[str, str]) -> Iterator[Pair]:
    pair = _start(tmp_path, engine_env, "--tp", "2", "--enforce-eager")
    pgids: tuple[int, ...] = ()
    try:
        pgids = pair.engine_pids()
        yield pair
    finally:
        _stop(pair, pgids)


def test_tp2_serves_then_a_killed_worker_engine_stops_both_nodes(tp2: Pair) -> None:
    pgids = tp2.engine_pids()
    _serving(tp2)
    _check_served(tp2, (2, 1, 1))
    # the worker node's engine dies mid-serve: both launchers end, exit 4, with the reason
    kill_group(pgids[1])
    assert tp2.node0.wait(120) == 4, tp2.node0.output[-3000:]
    assert tp2.node1.wait(60) == 4, tp2.node1.output[-3000:]
    assert "node 1's engine exited" in tp2.node0.output
    assert "the whole group stopped" in tp2.node0.output
    assert "node 0 stopped the group" in tp2.node1.output
    rep = json.loads(tp2.report.read_text())
    assert rep["exit_code"] == 4 and "node 1's engine exited" in rep["error"]["message"]
    _no_orphans(pgids, (tp2.node0, tp2.node1))
    _no_leaked_shm(tp2)


def test_dp2_serves_on_both_nodes_and_stops_on_sigterm(tmp_path: Path,
                                                       engine_env: dict[str, str]) -> None:
    pair = _start(tmp_path, engine_env, "--enforce-eager")  # auto: one replica per node
    pgids: tuple[int, ...] = ()
    try:
        pgids = pair.engine_pids()
        _serving(pair)
        _check_served(pair, (1, 1, 2))
        # node 1 runs the headless half: `vllm serve` through the launcher's entry module
        argv = psutil.Process(pgids[1]).cmdline()
        assert argv[1:4] == ["-m", "launcher.engines.vllm_entry", "serve"]
        assert "--headless" in argv and argv[argv.index("--data-parallel-start-rank") + 1] == "1"
        pair.node0.signal(signal.SIGTERM)
        assert pair.node0.wait(90) == 128 + signal.SIGTERM
        assert pair.node1.wait(60) == 0, pair.node1.output[-2000:]
        _no_orphans(pgids, (pair.node0, pair.node1))
        _no_leaked_shm(pair)
    finally:
        _stop(pair, pgids)


def test_pp2_serves_across_nodes(tmp_path: Path, engine_env: dict[str, str]) -> None:
    # not --enforce-eager: the CPU runner's warm-up allocates the PP receive buffer
    # (shared/notes/vllm-multinode-on-cpu.md §3)
    pair = _start(tmp_path, engine_env, "--pp", "2")
    pgids: tuple[int, ...] = ()
    try:
        pgids = pair.engine_pids()
        _serving(pair)
        _check_served(pair, (1, 2, 1))
        pair.node0.signal(signal.SIGTERM)
        assert pair.node0.wait(90) == 128 + signal.SIGTERM
        assert pair.node1.wait(60) == 0
        _no_orphans(pgids, (pair.node0, pair.node1))
    finally:
        _stop(pair, pgids)
