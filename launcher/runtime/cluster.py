"""Serving one engine across nodes: node 0 coordinates, every other node follows.

    node 0 (Coordinator, inside the serve loop)       node R > 0 (`worker.run_worker`)
    ─────────────────────────────────────────────     ─────────────────────────────────
    control API up; waits for every node to join ◄─── POST /cluster/join (its devices)
    plans over the union of the nodes' devices
    publishes attempt n: each node's command     ───► GET /cluster/directive (heartbeat)
    starts its own engine part (serves the API)       starts its headless engine part
    ready → warm-up → asks every node to measure ───► measures its engine, POST readings
    verifies every device of every node; ready
    watches: a node that dies, leaves, stops     ◄─── POST /cluster/report (engine exited)
    answering or never comes stops the group
    a failed start steps down and re-plans       ───► the next attempt's command
    ends: tells every node to stop               ───► stops, exits with node 0's status

The engine's own rendezvous (torch.distributed) waits forever for a rank that never comes;
every wait here has a deadline (`--node-deadline`), and a node not heard from for
`lost_after` seconds is gone. Whatever ends the run, every node stops its engine group and
removes the shared-memory files it left (`launcher.runtime.shm`).

The layout (`launcher.engines.multinode`): nodes are equal (same device kind and count), a
node's device i is device r·G + i of the union, and the planner chooses TP×PP×DP over it (GPUs
carry their node, so TP stays inside one: `planner/nodes.py`; the CPU backend's one device per
node is one pool, so a forced --tp 2 spans two nodes, as the loopback tests run it).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from launcher.engines.multinode import ENTRY, Layout, node_command
from launcher.errors import EngineStartError, InputError
from launcher.hardware.inventory import GpuInfo, Inventory
from launcher.memory.calibration import Device
from launcher.planner.plan import EngineCommand, Plan
from launcher.runtime.measure import DeviceReading
from launcher.runtime.signals import StopRequest

POLL_SECONDS = 0.5  # how often a worker asks node 0 for its directive (its heartbeat)
LOST_SECONDS = 20.0  # a node not heard from for this long (or --node-deadline) is gone
_HOST = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class ClusterOptions:
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29501
    node_deadline: float = 600.0

    @property
    def multi(self) -> bool:
        return self.nnodes > 1

    @property
    def lost_after(self) -> float:
        return min(self.node_deadline, LOST_SECONDS)


def check_address(addr: str) -> str | None:
    """Why `addr` is not a host name or IP address, or None."""
    try:
        ipaddress.ip_address(addr)
        return None
    except ValueError:
        pass
    if _HOST.fullmatch(addr) and not addr.replace(".", "").isdigit():
        return None
    return "is not a host name or IP address"


def devices_json(device: Device, devices: Sequence[GpuInfo], source: str) -> dict[str, Any]:
    """A node's devices as it sends them to node 0 (the inventory snapshot format)."""
    inv = Inventory(gpus=tuple(devices), host=None, source=source, driver_version=None,
                    cuda_driver_version=None, captured_at=None)
    return {"device": str(device), "inventory": inv.to_dict()}


@dataclass(frozen=True)
class PeerFailure:
    """Why the group cannot go on: a node that never came, left, died or went silent."""

    rank: int
    message: str
    lines: tuple[str, ...] = ()  # its engine's last lines, when its engine exited
    status: int | None = None
    phase: str | None = None


@dataclass
class Node:
    rank: int
    host: str
    pid: int
    device: Device
    devices: tuple[GpuInfo, ...]  # re-indexed: node r's device i is r·G + i
    joined_at: float
    last_seen: float
    started: dict[int, int] = field(default_factory=dict)  # attempt → engine pid
    exited: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt → report
    readings: dict[int, list[DeviceReading]] = field(default_factory=dict)
    left: str | None = None
    acked_stop: bool = False

    def to_json(self, now: float) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "pid": self.pid, "device": self.device,
                "devices": [{"index": g.index, "name": g.name, "uuid": g.uuid,
                             "total_bytes": g.total_bytes, "free_bytes": g.free_bytes,
                             "used_bytes": g.used_bytes} for g in self.devices],
                "last_seen_seconds_ago": round(now - self.last_seen, 1),
                "engine_pids": {str(k): v for k, v in self.started.items()},
                "exited": {str(k): {"status": v.get("status")} for k, v in self.exited.items()},
                "measured": {str(k): [r.to_json() for r in v] for k, v in self.readings.items()},
                "left": self.left}


class Coordinator:
    """Node 0's view of the group: joins, directives, reports. The control API calls the
    `join`/`directive`/`report` side from its threads, the serve loop the rest."""

    def __init__(self, opts: ClusterOptions, model: str) -> None:
        self.opts = opts
        self.model = model
        self._lock = threading.Lock()
        self.nodes: dict[int, Node] = {}
        self.attempt = 0
        self.action = "wait"  # wait | launch | verify | serve | stop
        self.commands: dict[int, dict[str, Any]] = {}  # rank → published command JSON
        self.launched_at = 0.0
        self.stop_code: int | None = None
        self.stop_message = ""
        self.layout: Layout | None = None
        self.local: tuple[GpuInfo, ...] = ()

    # ---- the API side (requests from other nodes) -------------------------------------
    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        """A node joins (or joins again after a restart). ValueError: refused, and why."""
        rank = _int_field(body, "rank")
        if not 1 <= rank < self.opts.nnodes:
            raise ValueError(f"rank {rank} is not a worker rank of this group "
                             f"(1..{self.opts.nnodes - 1})")
        nnodes = _int_field(body, "nnodes")
        if nnodes != self.opts.nnodes:
            raise ValueError(f"the node says --nnodes {nnodes}; node 0 has --nnodes "
                             f"{self.opts.nnodes}")
        if body.get("model") != self.model:
            raise ValueError(f"the node serves {str(body.get('model'))[:200]!r}; node 0 "
                             f"serves {self.model!r}")
        device = Device(str(body.get("device")))
        inv = Inventory.from_dict(body.get("inventory"), origin=f"node {rank} inventory")
        now = time.monotonic()
        with self._lock:
            old = self.nodes.get(rank)
            if old is not None and self.attempt and old.left is None \
                    and now - old.last_seen < self.opts.lost_after:
                raise ValueError(f"rank {rank} is already in the group (pid {old.pid} on "
                                 f"{old.host})")
            self.nodes[rank] = Node(rank, str(body.get("host"))[:200], _int_field(body, "pid"),
                                    device, inv.gpus, now, now)
        return {"ok": True, "nnodes": self.opts.nnodes}

    def directive(self, rank: int) -> dict[str, Any]:
        """What node `rank` should be doing now (and a heartbeat from it)."""
        with self._lock:
            node = self.nodes.get(rank)
            if node is None:
                raise KeyError(rank)
            node.last_seen = time.monotonic()
            if self.action == "stop":
                node.acked_stop = True
            offset = rank * len(self.local)
            return {"attempt": self.attempt, "action": self.action,
                    "command": self.commands.get(rank), "device_offset": offset,
                    "exit_code": self.stop_code, "message": self.stop_message}

    def report(self, body: dict[str, Any]) -> dict[str, Any]:
        rank, attempt = _int_field(body, "rank"), _int_field(body, "attempt")
        event = str(body.get("event"))
        with self._lock:
            node = self.nodes.get(rank)
            if node is None:
                raise KeyError(rank)
            node.last_seen = time.monotonic()
            if event == "started":
                node.started[attempt] = _int_field(body, "pid")
            elif event == "exited":
                node.exited[attempt] = {
                    "status": body.get("status"), "phase": body.get("phase"),
                    "lines": [str(x)[:2000] for x in (body.get("lines") or [])][-200:]}
            elif event == "readings":
                node.readings[attempt] = [_reading(r) for r in body.get("readings") or []]
            elif event == "left":
                node.left = str(body.get("reason"))[:500]
            else:
                raise ValueError(f"unknown event {event[:40]!r}")
        return {"ok": True}

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            lay = self.layout
            return {"nnodes": self.opts.nnodes, "master_addr": self.opts.master_addr,
                    "master_port": self.opts.master_port, "attempt": self.attempt,
                    "action": self.action,
                    "layout": None if lay is None else {
                        "tp": lay.tp, "pp": lay.pp, "dp": lay.dp,
                        "devices_per_node": lay.gpus_per_node,
                        "spans_nodes": lay.spans_nodes},
                    "node0_devices": [{"index": g.index, "name": g.name,
                                       "total_bytes": g.total_bytes} for g in self.local],
                    "nodes": [n.to_json(now) for _, n in sorted(self.nodes.items())]}

    # ---- the loop side ---------------------------------------------------------------
    def wait_for_nodes(self, stop: StopRequest, device: Device,
                       local: Sequence[GpuInfo]) -> list[GpuInfo]:
        """Every node joined, within --node-deadline: the union of their devices (node r's
        device i as index r·G + i), node 0's first. EngineStartError past the deadline,
        InputError for nodes that differ."""
        self.local = tuple(local)
        deadline = time.monotonic() + self.opts.node_deadline
        missing = self._missing()
        while missing:
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"node(s) {', '.join(map(str, missing))} of {self.opts.nnodes} did not "
                    f"join node 0 within --node-deadline {self.opts.node_deadline:g} s",
                    fix=f"Start `serve {self.model} --nnodes {self.opts.nnodes} --node-rank "
                        f"R --master-addr {self.opts.master_addr}` on every other node (same "
                        "--control-port and LAUNCHER_API_TOKEN), or raise --node-deadline.",
                    hint=f"curl http://{self.opts.master_addr}:<control-port>/livez")
            time.sleep(0.2)  # signal handlers only record: checked right after
            stop.check()
            missing = self._missing()
        g = len(local)
        # GPUs carry their node, so the planner keeps TP groups inside one (planner/nodes.py);
        # the CPU backend's one device per node is planned as one pool, so TP may span nodes.
        cuda = device == Device.CUDA
        union = [replace(d, index=i, node=0) for i, d in enumerate(local)]
        with self._lock:
            for r in range(1, self.opts.nnodes):
                node = self.nodes[r]
                if node.device != device or len(node.devices) != g:
                    raise InputError(
                        f"node {r} has {len(node.devices)} {node.device} device(s); node 0 "
                        f"has {g} {device}: the nodes of one engine must be equal",
                        fix="Run every node on the same kind and number of devices (set "
                            "CUDA_VISIBLE_DEVICES or --device the same everywhere).")
                node.devices = tuple(replace(d, index=r * g + i, node=r if cuda else 0)
                                     for i, d in enumerate(node.devices))
                union += node.devices
        return union

    def _missing(self) -> list[int]:
        with self._lock:
            return [r for r in range(1, self.opts.nnodes) if r not in self.nodes]

    def layout_of(self, plan: Plan) -> Layout:
        d = plan.decision
        assert d is not None
        return Layout(self.opts.nnodes, d.tensor_parallel_size, d.pipeline_parallel_size,
                      d.data_parallel_size, len(self.local))

    def publish(self, n: int, plan: Plan, cmd: EngineCommand) -> EngineCommand:
        """Attempt `n`: every node's command published; returns node 0's. EngineStartError
        when the plan cannot run on these nodes."""
        layout = self.layout_of(plan)
        problem = layout.problem()
        if problem:
            raise InputError(f"the plan cannot run on {self.opts.nnodes} nodes: {problem}",
                             fix="Force a layout that uses every device of every node, e.g. "
                                 f"--tp {len(self.local)} --pp {self.opts.nnodes}.")
        chosen = {g.index for g in plan.chosen.gpus} if plan.chosen else set()
        commands = {}
        for r in range(self.opts.nnodes):
            c = node_command(cmd, nnodes=self.opts.nnodes, node_rank=r,
                             master_addr=self.opts.master_addr,
                             master_port=self.opts.master_port, tp=layout.tp, pp=layout.pp,
                             dp=layout.dp, gpus_per_node=layout.gpus_per_node,
                             host_ip=None)
            if plan.device == Device.CUDA:
                mine = self.local if r == 0 else self.nodes[r].devices
                visible = [d for d in mine if d.index in chosen]
                local_ids = [d.uuid or str(d.index - r * len(self.local)) for d in visible]
                c = replace(c, env={**c.env, "CUDA_VISIBLE_DEVICES": ",".join(local_ids)})
            commands[r] = c
        with self._lock:
            self.layout = layout
            self.attempt = n
            self.action = "launch"
            self.commands = {r: c.to_json() for r, c in commands.items() if r}
            self.launched_at = time.monotonic()
        return commands[0]

    def set_action(self, action: str) -> None:
        with self._lock:
            self.action = action

    def failure(self) -> PeerFailure | None:
        """The first reason the group cannot go on, or None."""
        now = time.monotonic()
        with self._lock:
            for r, node in sorted(self.nodes.items()):
                if node.left:
                    return PeerFailure(r, f"node {r} left the group: {node.left}")
                ex = node.exited.get(self.attempt)
                if ex is not None:
                    return PeerFailure(r, f"node {r}'s engine exited (status "
                                          f"{ex.get('status')})", tuple(ex["lines"]),
                                       ex.get("status"), ex.get("phase"))
                if now - node.last_seen > self.opts.lost_after:
                    return PeerFailure(r, f"node {r} ({node.host}) stopped answering "
                                          f"{now - node.last_seen:.0f} s ago")
                if self.action == "launch" and self.attempt not in node.started and \
                        now - self.launched_at > self.opts.node_deadline:
                    return PeerFailure(r, f"node {r} did not start its engine part within "
                                          f"--node-deadline {self.opts.node_deadline:g} s")
        return None

    def wait_failure(self, seconds: float) -> PeerFailure | None:
        """A failure reported within `seconds` (a peer's report may trail its death)."""
        deadline = time.monotonic() + seconds
        while True:
            f = self.failure()
            if f is not None or time.monotonic() > deadline:
                return f
            time.sleep(0.1)

    def readings(self, n: int, local: list[DeviceReading], stop: StopRequest,
                 timeout: float = 120.0) -> list[DeviceReading]:
        """Every node's measured devices for attempt `n` (node 0's own first)."""
        self.set_action("verify")
        deadline = time.monotonic() + min(timeout, self.opts.node_deadline)
        while True:
            with self._lock:
                missing = [r for r, node in self.nodes.items() if n not in node.readings]
                if not missing:
                    out = list(local)
                    for _, node in sorted(self.nodes.items()):
                        out += node.readings[n]
                    self.action = "serve"
                    return out
            f = self.failure()
            if f is not None:
                raise OSError(f.message)
            if time.monotonic() > deadline:
                raise TimeoutError(f"node(s) {', '.join(map(str, missing))} did not report "
                                   "their memory in time")
            time.sleep(0.2)
            stop.check()

    def finish(self, code: int, message: str) -> None:
        """Tell every node to stop (with node 0's exit status) and wait until each has seen
        it or is gone."""
        with self._lock:
            self.action, self.stop_code, self.stop_message = "stop", code, message[:2000]
            self.commands = {}
        deadline = time.monotonic() + min(self.opts.lost_after, 10.0)
        while time.monotonic() < deadline:
            with self._lock:
                waiting = [n for n in self.nodes.values() if not n.acked_stop and n.left is None]
            if not waiting:
                return
            time.sleep(0.1)


def _int_field(body: dict[str, Any], name: str) -> int:
    v = body.get(name) if isinstance(body, dict) else None
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"{name} must be a whole number")
    return v


def _reading(raw: Any) -> DeviceReading:
    if not isinstance(raw, dict):
        raise ValueError("a reading must be an object")
    engine = raw.get("engine_bytes")
    if engine is not None and not isinstance(engine, int):
        raise ValueError("engine_bytes must be a whole number or null")
    return DeviceReading(_int_field(raw, "index"), _int_field(raw, "total_bytes"),
                         _int_field(raw, "used_bytes"), engine, str(raw.get("source"))[:200])


# The variables node 0 may set in a worker's engine environment: exactly those a node's
# command can carry (engines/vllm.py: CUDA_VISIBLE_DEVICES; engines/multinode.py
# `node_command`: VLLM_HOST_IP, GLOO_SOCKET_IFNAME; deploy's NCCL_SOCKET_IFNAME), each with
# the characters its value can have. Anything else (LD_PRELOAD, PYTHONPATH, PYTHONSTARTUP,
# VLLM_LOGGING_CONFIG_PATH, NCCL_NET_PLUGIN, …) could make this node load code node 0 chose.
WORKER_ENV = {
    "CUDA_VISIBLE_DEVICES": re.compile(r"[A-Za-z0-9,:_-]{0,4000}"),  # indices or GPU UUIDs
    "VLLM_HOST_IP": re.compile(r"[0-9A-Fa-f.:]{1,45}"),
    # interface names (deploy/__init__.py IFNAME), a list of them, NCCL's ^/= prefixes
    "GLOO_SOCKET_IFNAME": re.compile(r"[A-Za-z0-9_.:@,^=-]{1,255}"),
    "NCCL_SOCKET_IFNAME": re.compile(r"[A-Za-z0-9_.:@,^=-]{1,255}"),
}
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def worker_command(raw: Any, python: str,
                   note: Callable[[str], None] | None = None) -> EngineCommand:
    """The command node 0 published for this node, run with this node's interpreter; only
    the launcher's vLLM entry point is accepted (node 0 is trusted with flags, not with
    programs). Of its environment only `WORKER_ENV`'s variables are kept; others are
    dropped and named through `note`. A kept variable with a value it cannot have, or a
    malformed name to unset, is a ValueError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("argv"), list):
        raise ValueError("node 0 published no command")
    argv = [str(a) for a in raw["argv"]]
    if argv[1:4] != ["-m", ENTRY, "serve"]:
        raise ValueError(f"node 0 published a command that is not `-m {ENTRY} serve`")
    env, unset = raw.get("env") or {}, raw.get("unset") or []
    if not isinstance(env, dict) or not isinstance(unset, list):
        raise ValueError("node 0 published a malformed environment")
    kept: dict[str, str] = {}
    dropped = []
    for k, v in env.items():
        k, v = str(k), str(v)
        pattern = WORKER_ENV.get(k)
        if pattern is None:
            dropped.append(k)
        elif not pattern.fullmatch(v):
            raise ValueError(f"node 0 published {k}={v[:60]!r}, not a value it can have")
        else:
            kept[k] = v
    if dropped and note:
        note("ignored variables node 0 published for the engine (not ones a node's command "
             f"sets): {', '.join(sorted(dropped))}")
    names = tuple(str(u) for u in unset)
    if bad := [u for u in names if not _VAR.fullmatch(u)]:
        raise ValueError(f"node 0 published a variable name to unset that is none: {bad[0]!r}")
    return EngineCommand((python, *argv[1:]), kept, names)


def cluster_metrics(snapshot: dict[str, Any] | None) -> str:
    """Prometheus lines for the nodes of a multi-node engine (empty for one node)."""
    if not snapshot:
        return ""
    out = ["# HELP launcher_cluster_nodes Nodes the engine spans.",
           "# TYPE launcher_cluster_nodes gauge",
           f"launcher_cluster_nodes {snapshot['nnodes']}",
           "# HELP launcher_cluster_node_seen_seconds Seconds since node 0 heard from a node.",
           "# TYPE launcher_cluster_node_seen_seconds gauge"]
    for n in snapshot["nodes"]:
        out.append(f'launcher_cluster_node_seen_seconds{{rank="{n["rank"]}"}} '
                   f'{n["last_seen_seconds_ago"]}')
    out += ["# HELP launcher_cluster_device_engine_bytes Memory a node's engine part held "
            "when it was verified.", "# TYPE launcher_cluster_device_engine_bytes gauge"]
    for n in snapshot["nodes"]:
        measured = n["measured"]
        if not measured:
            continue
        last = measured[max(measured, key=int)]
        for r in last:
            if r["engine_bytes"] is not None:
                out.append(f'launcher_cluster_device_engine_bytes{{rank="{n["rank"]}",'
                           f'device="{r["index"]}"}} {r["engine_bytes"]}')
    return "\n".join(out) + "\n"


Say = Callable[[str], None]
