"""Multi-node without an engine: each node's exact command per layout and rank, the options
(bad rank, address, port → exit 2 naming the option), the peer deadlines, and node 0's
coordinator refusing malformed joins."""

from __future__ import annotations

import contextlib
import time

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.engines.multinode import ENTRY, Layout, node_command
from launcher.errors import InputError
from launcher.options import cluster_options, settle_command, values
from launcher.planner.plan import EngineCommand
from launcher.runtime.cluster import (
    ClusterOptions,
    Coordinator,
    check_address,
    devices_json,
    worker_command,
)

BASE = EngineCommand(
    ("/py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--host", "0.0.0.0",
     "--port", "8000", "--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
     "--data-parallel-size", "2", "--max-model-len", "4096"),
    {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"})


def _flag(argv: tuple[str, ...], name: str) -> str | None:
    i = argv.index(name) if name in argv else -1
    return argv[i + 1] if 0 <= i < len(argv) - 1 else None


def _args(cmd: EngineCommand) -> dict[str, str | None]:
    names = [a for a in cmd.argv if a.startswith("--")]
    assert len(names) == len(set(names)), f"a flag repeats: {cmd.argv}"
    return {n: _flag(cmd.argv, n) for n in names}


@pytest.mark.parametrize("rank", [0, 1])
def test_tp_pp_across_nodes(rank: int) -> None:
    cmd = node_command(BASE, nnodes=2, node_rank=rank, master_addr="10.0.0.1",
                       master_port=29501, tp=8, pp=2, dp=1, gpus_per_node=8,
                       host_ip="10.0.0.2", socket_ifname="eth0")
    a = _args(cmd)
    assert (a["--tensor-parallel-size"], a["--pipeline-parallel-size"],
            a["--data-parallel-size"]) == ("8", "2", "1")
    assert (a["--nnodes"], a["--node-rank"], a["--master-addr"], a["--master-port"]) == \
        ("2", str(rank), "10.0.0.1", "29501")
    assert a["--distributed-executor-backend"] == "mp"
    assert "--data-parallel-size-local" not in a and "--data-parallel-address" not in a
    assert a["--model"] == "/m" and a["--max-model-len"] == "4096"
    if rank == 0:  # node 0 serves the API with the plan's entry point
        assert cmd.argv[:3] == BASE.argv[:3] and "--headless" not in cmd.argv
    else:
        assert cmd.argv[:4] == ("/py", "-m", ENTRY, "serve") and "--headless" in cmd.argv
    # the plan's device list names every node's GPUs: each node sets its own
    assert cmd.env == {"VLLM_HOST_IP": "10.0.0.2", "GLOO_SOCKET_IFNAME": "eth0"}


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_dp_across_nodes(rank: int) -> None:
    cmd = node_command(BASE, nnodes=4, node_rank=rank, master_addr="$(LWS_LEADER_ADDRESS)",
                       master_port=29501, tp=2, pp=1, dp=16, gpus_per_node=8,
                       dp_rpc_port=13345, expert_parallel=True)
    a = _args(cmd)
    assert (a["--data-parallel-size"], a["--data-parallel-size-local"],
            a.get("--data-parallel-start-rank")) == ("16", "4", str(4 * rank) if rank else None)
    assert a["--data-parallel-address"] == "$(LWS_LEADER_ADDRESS)"  # placeholders pass
    assert a["--data-parallel-rpc-port"] == "13345" and "--enable-expert-parallel" in a
    assert "--nnodes" not in a and "--master-addr" not in a
    assert ("--headless" in cmd.argv) == (rank > 0)
    assert "VLLM_HOST_IP" not in cmd.env and "CUDA_VISIBLE_DEVICES" not in cmd.env


def test_one_node_keeps_the_plan_command() -> None:
    cmd = node_command(BASE, nnodes=1, node_rank=0, master_addr="x", master_port=1, tp=1,
                       pp=1, dp=2, gpus_per_node=2)
    assert sorted(cmd.argv) == sorted(BASE.argv) and cmd.env == BASE.env


def test_a_rerun_replaces_earlier_multinode_flags() -> None:
    once = node_command(BASE, nnodes=2, node_rank=1, master_addr="a", master_port=1, tp=2,
                        pp=1, dp=1, gpus_per_node=1)
    twice = node_command(replace_entry(once), nnodes=2, node_rank=1, master_addr="b",
                         master_port=2, tp=1, pp=2, dp=1, gpus_per_node=1)
    a = _args(twice)
    assert (a["--master-addr"], a["--pipeline-parallel-size"], a["--tensor-parallel-size"]) \
        == ("b", "2", "1")
    assert twice.argv.count("--headless") == 1


def replace_entry(cmd: EngineCommand) -> EngineCommand:
    from dataclasses import replace

    return replace(cmd, argv=("/py", "-m", ENTRY, *cmd.argv[4:]))


@pytest.mark.parametrize(("kw", "words"), [
    ({"tp": 2, "pp": 1, "dp": 1, "gpus_per_node": 2}, "= 2 ranks, but 2 nodes × 2 devices"),
    ({"tp": 4, "pp": 1, "dp": 2, "gpus_per_node": 2}, "= 8 ranks, but 2 nodes × 2 devices"),
    ({"tp": 1, "pp": 1, "dp": 3, "gpus_per_node": 1}, "3 ranks"),
    ({"tp": 0, "pp": 1, "dp": 2, "gpus_per_node": 1}, "TP 0 is below 1"),
])
def test_layouts_vllm_cannot_run_are_refused(kw: dict[str, int], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("×", ".")):
        node_command(BASE, nnodes=2, node_rank=0, master_addr="a", master_port=1, **kw)


def test_a_rank_outside_the_group_is_refused() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        node_command(BASE, nnodes=2, node_rank=2, master_addr="a", master_port=1, tp=2, pp=1,
                     dp=1, gpus_per_node=1)


@given(st.integers(1, 8), st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=200, deadline=None)
def test_every_runnable_layout_gives_every_node_a_consistent_command(
        nnodes: int, g: int, tp: int, pp: int) -> None:
    """Any layout: refused with a reason, or every node's command is what vLLM checks
    (world size divisible by --nnodes, node ranks in range, start ranks disjoint)."""
    total = nnodes * g
    dp = max(1, total // (tp * pp))
    layout = Layout(nnodes, tp, pp, dp, g)
    if layout.problem():
        with pytest.raises(ValueError):
            node_command(BASE, nnodes=nnodes, node_rank=0, master_addr="a", master_port=1,
                         tp=tp, pp=pp, dp=dp, gpus_per_node=g)
        return
    starts = set()
    for r in range(nnodes):
        a = _args(node_command(BASE, nnodes=nnodes, node_rank=r, master_addr="a",
                               master_port=1, tp=tp, pp=pp, dp=dp, gpus_per_node=g))
        world = int(a["--tensor-parallel-size"]) * int(a["--pipeline-parallel-size"]) * \
            int(a["--data-parallel-size"])
        assert world == total and world % nnodes == 0
        if nnodes > 1 and layout.spans_nodes:
            assert a["--node-rank"] == str(r)
        elif nnodes > 1:
            starts.add(int(a.get("--data-parallel-start-rank") or 0))
    assert not starts or len(starts) == nnodes


# ---- the options -----------------------------------------------------------------------------

def _cluster(given: dict[str, object], env: dict[str, str] | None = None) -> ClusterOptions:
    names = ("nnodes", "node_rank", "master_addr", "master_port", "node_deadline")
    return cluster_options(values(settle_command("serve", {n: given.get(n) for n in names},
                                                 environ=env or {})))


def test_cluster_options_from_flags_and_variables() -> None:
    c = _cluster({"nnodes": "3", "node_rank": "2"}, {"LAUNCHER_MASTER_ADDR": "node0.local",
                                                     "LAUNCHER_NODE_DEADLINE": "30"})
    assert c == ClusterOptions(3, 2, "node0.local", 29501, 30.0) and c.multi
    assert _cluster({}) == ClusterOptions()


@given(nnodes=st.integers(1, 50), rank=st.integers(0, 100))
@settings(max_examples=100, deadline=None)
def test_a_rank_at_or_past_nnodes_is_exit_2_naming_it(nnodes: int, rank: int) -> None:
    if rank < nnodes:
        assert _cluster({"nnodes": str(nnodes), "node_rank": str(rank)}).node_rank == rank
        return
    with pytest.raises(InputError) as e:
        _cluster({"nnodes": str(nnodes), "node_rank": str(rank)})
    assert e.value.exit_code == 2 and "--node-rank" in e.value.message


@given(st.one_of(st.text(max_size=30), st.integers(-10**6, 10**6).map(str)))
@settings(max_examples=200, deadline=None)
def test_broken_numbers_are_exit_2_naming_the_option(raw: str) -> None:
    for name, flag in (("nnodes", "--nnodes"), ("node_rank", "--node-rank"),
                       ("master_port", "--master-port"), ("node_deadline", "--node-deadline")):
        try:
            c = _cluster({name: raw} if name != "node_rank" else
                         {"nnodes": "1024", name: raw})
        except InputError as e:
            assert e.exit_code == 2 and flag in e.message
            continue
        value = getattr(c, name)
        if name == "master_port":
            assert 1 <= value <= 65535
        elif name == "node_deadline":
            assert value > 0
        else:
            assert value >= (1 if name == "nnodes" else 0)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_master_addr_is_a_host_name_or_ip_or_exit_2(addr: str) -> None:
    try:
        c = _cluster({"master_addr": addr})
    except InputError as e:
        assert e.exit_code == 2 and "--master-addr" in e.message
        return
    assert check_address(c.master_addr) is None
    assert " " not in c.master_addr and "/" not in c.master_addr


@pytest.mark.parametrize("addr", ["10.0.0.1", "::1", "node-0.cluster.local", "localhost"])
def test_real_addresses_pass(addr: str) -> None:
    assert check_address(addr) is None


@pytest.mark.parametrize("addr", ["a b", "http://x", "-x", "x..y", "999.1.1.1", "$(LWS)"])
def test_broken_addresses_fail(addr: str) -> None:
    assert check_address(addr) is not None


def test_cli_reports_bad_options_with_exit_2() -> None:
    p = run_cli("demo", "--nnodes", "2", "--node-rank", "5", prog="serve")
    assert p.returncode == 2 and "--node-rank 5 is not below --nnodes 2" in p.stdout + p.stderr
    p = run_cli("demo", "--nnodes", "2", "--master-port", "70000", prog="serve")
    assert p.returncode == 2 and "--master-port" in p.stdout + p.stderr


# ---- the deadlines, without an engine -----------------------------------------------------

def test_node0_alone_stops_at_the_deadline_with_exit_4(tmp_path) -> None:
    from engine_helpers import free_port

    t = time.monotonic()
    p = run_cli("demo", "--nnodes", "2", "--node-deadline", "2", "--control-port",
                str(free_port()), "--port", str(free_port()), "--log-dir", str(tmp_path),
                env={"LAUNCHER_CACHE_DIR": str(tmp_path)}, prog="serve")
    out = p.stdout + p.stderr
    assert p.returncode == 4, out
    assert "node(s) 1 of 2 did not join node 0 within --node-deadline 2 s" in out
    assert "engine starting" not in out and time.monotonic() - t < 60


def test_a_worker_without_node0_stops_at_the_deadline_with_exit_4(tmp_path) -> None:
    from engine_helpers import free_port

    port = free_port()
    p = run_cli("demo", "--nnodes", "2", "--node-rank", "1", "--node-deadline", "2",
                "--control-port", str(port), env={"LAUNCHER_CACHE_DIR": str(tmp_path)},
                prog="serve")
    out = p.stdout + p.stderr
    assert p.returncode == 4, out
    assert f"node 0 at http://127.0.0.1:{port} did not answer within --node-deadline 2 s" in out


# ---- node 0's coordinator --------------------------------------------------------------------

def _join_body(rank: int = 1, **over: object) -> dict[str, object]:
    from launcher.hardware.cpu import NodeMemory, cpu_device
    from launcher.memory.calibration import Device

    dev = cpu_device(NodeMemory(0, 8 << 30, 6 << 30, "test"))
    return {"rank": rank, "nnodes": 2, "model": "demo", "host": "h", "pid": 7,
            **devices_json(Device.CPU, [dev], "host:test"), **over}


def test_coordinator_accepts_a_join_and_refuses_broken_ones() -> None:
    c = Coordinator(ClusterOptions(nnodes=2, node_deadline=5), "demo")
    assert c.join(_join_body())["ok"]
    assert c.snapshot()["nodes"][0]["devices"][0]["total_bytes"] == 8 << 30
    for body, words in ((_join_body(rank=2), "not a worker rank"),
                        (_join_body(nnodes=3), "--nnodes 3"),
                        (_join_body(model="other"), "serves 'other'"),
                        (_join_body(rank="1"), "rank must be a whole number")):
        with pytest.raises(ValueError, match=words):
            c.join(body)
    with pytest.raises(InputError):
        c.join(_join_body(inventory={"format": "nope"}))


@given(st.dictionaries(st.sampled_from(["rank", "attempt", "event", "pid", "readings",
                                        "status", "lines"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=2))))
@settings(max_examples=200, deadline=None)
def test_reports_from_nodes_never_crash_node0(body: dict[str, object]) -> None:
    c = Coordinator(ClusterOptions(nnodes=2), "demo")
    c.join(_join_body())
    with contextlib.suppress(ValueError, KeyError):
        c.report(body)


def test_a_silent_node_is_a_failure_after_the_deadline() -> None:
    c = Coordinator(ClusterOptions(nnodes=2, node_deadline=0.3), "demo")
    c.join(_join_body())
    assert c.failure() is None
    time.sleep(0.4)
    f = c.failure()
    assert f is not None and f.rank == 1 and "stopped answering" in f.message


def test_worker_runs_only_the_launcher_entry_point() -> None:
    good = {"argv": ["/other/python", "-m", ENTRY, "serve", "--model", "m"], "env": {"A": "1"}}
    cmd = worker_command(good, "/my/python")
    assert cmd.argv[0] == "/my/python" and cmd.argv[1:4] == ("-m", ENTRY, "serve")
    for bad in ({"argv": ["/bin/sh", "-c", "rm -rf /"]}, None, {"argv": "x"}):
        with pytest.raises(ValueError):
            worker_command(bad, "/my/python")


def test_attempts_flow_from_node0_to_the_worker_and_a_step_down_clears_the_failure() -> None:
    """Node 0 publishes attempt n (the worker's headless command), the worker's engine exit
    fails that attempt only, attempt n + 1 carries a fresh command, and the stop carries node
    0's exit status."""
    from dataclasses import replace

    from launcher.hardware.cpu import NodeMemory, cpu_device
    from launcher.planner import PlanRequest
    from launcher.prepare import Target, build_plan
    from launcher.runtime.signals import StopRequest

    c = Coordinator(ClusterOptions(nnodes=2, node_deadline=30), "demo")
    c.join(_join_body())
    local = cpu_device(NodeMemory(0, 8 << 30, 6 << 30, "test"))
    from launcher.memory.calibration import Device

    union = c.wait_for_nodes(StopRequest(), Device.CPU, [local])
    assert [d.index for d in union] == [0, 1]
    plan = build_plan("demo", PlanRequest(tp=2, max_model_len=1024), Target(device="cpu"),
                      devices=union)
    assert plan.feasible and plan.engine is not None
    mine = c.publish(1, plan, plan.engine)
    assert "--headless" not in mine.argv and _flag(mine.argv, "--node-rank") == "0"
    d = c.directive(1)
    assert (d["attempt"], d["action"]) == (1, "launch")
    theirs = worker_command(d["command"], "/py")
    assert "--headless" in theirs.argv and _flag(theirs.argv, "--node-rank") == "1"
    assert _flag(theirs.argv, "--master-port") == "29501"
    c.report({"rank": 1, "attempt": 1, "event": "started", "pid": 11})
    assert c.failure() is None
    c.report({"rank": 1, "attempt": 1, "event": "exited", "status": 1, "phase": "loading",
              "lines": ["torch.OutOfMemoryError: CUDA out of memory."]})
    f = c.failure()
    assert f is not None and "node 1's engine exited (status 1)" in f.message and f.lines
    c.publish(2, replace(plan), plan.engine)
    assert c.failure() is None and c.directive(1)["attempt"] == 2
    c.finish(4, "why")
    d = c.directive(1)
    assert (d["action"], d["exit_code"], d["message"], d["command"]) == ("stop", 4, "why", None)


# ---- review fixes: aliases, the worker's environment, refusals, shm ownership ---------------

@pytest.mark.parametrize(("alias", "value"), [
    ("-tp", "2"), ("-pp", "2"), ("-dp", "4"), ("-dpl", "1"), ("-dpr", "3"),
    ("-dpa", "10.9.9.9"), ("-dpp", "1234"), ("-n", "5"), ("-r", "3"),
    ("--tensor_parallel_size", "2"), ("--node_rank=3", None)])
def test_vllm_short_and_underscore_spellings_are_replaced_not_repeated(
        alias: str, value: str | None) -> None:
    extra = (alias,) if value is None else (alias, value)
    cmd = replace_argv(BASE, (*BASE.argv, *extra, "-ep"))
    out = node_command(cmd, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501,
                       tp=8, pp=2, dp=1, gpus_per_node=8)
    assert alias not in out.argv and "-ep" not in out.argv, out.argv
    assert not any(a.startswith(alias.split("=")[0] + "=") for a in out.argv)
    assert (_flag(out.argv, "--tensor-parallel-size"), _flag(out.argv, "--node-rank")) == \
        ("8", "1")
    _args(out)  # no long flag repeats


def replace_argv(cmd: EngineCommand, argv: tuple[str, ...]) -> EngineCommand:
    from dataclasses import replace

    return replace(cmd, argv=argv)


def test_the_aliases_are_the_ones_vllm_declares() -> None:
    """Each alias is declared together with its long flag in vLLM's own parser (read from
    the installed engine/arg_utils.py's `add_argument` calls, without importing vLLM)."""
    import ast
    import importlib.util
    from pathlib import Path

    from launcher.engines.multinode import ALIASES

    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vLLM is not installed")
    source = (Path(spec.origin).parent / "engine" / "arg_utils.py").read_text()
    declared: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = {a.value for a in node.args if isinstance(a, ast.Constant)
                     and isinstance(a.value, str)}
            for n in names:
                declared.setdefault(n, set()).update(names)
    for short, long in ALIASES.items():
        assert long in declared.get(short, set()), (short, declared.get(short))


def test_worker_keeps_only_the_variables_a_node_command_sets() -> None:
    notes: list[str] = []
    raw = {"argv": ["/p", "-m", ENTRY, "serve"], "env": {
        "CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d", "GLOO_SOCKET_IFNAME": "eth0",
        "LD_PRELOAD": "/tmp/evil.so", "PYTHONPATH": "/tmp", "VLLM_LOGGING_CONFIG_PATH": "/x"},
        "unset": ["VLLM_CPU_KVCACHE_SPACE"]}
    cmd = worker_command(raw, "/my/python", note=notes.append)
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d", "GLOO_SOCKET_IFNAME": "eth0"}
    assert cmd.unset == ("VLLM_CPU_KVCACHE_SPACE",)
    assert len(notes) == 1 and all(
        k in notes[0] for k in ("LD_PRELOAD", "PYTHONPATH", "VLLM_LOGGING_CONFIG_PATH"))
    for bad in ({"CUDA_VISIBLE_DEVICES": "0;touch /tmp/x"}, {"VLLM_HOST_IP": "a b"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            worker_command({**raw, "env": bad}, "/my/python")
    with pytest.raises(ValueError):
        worker_command({**raw, "unset": ["A=B"]}, "/my/python")


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6))
@settings(max_examples=60, deadline=None)
def test_any_published_environment_keeps_only_allowed_names(env: dict[str, str]) -> None:
    from launcher.runtime.cluster import WORKER_ENV

    raw = {"argv": ["/p", "-m", ENTRY, "serve"], "env": env}
    try:
        cmd = worker_command(raw, "/p", note=lambda _: None)
    except ValueError:
        return
    assert set(cmd.env) <= set(WORKER_ENV)


class _Node0:
    """A loopback HTTP server standing in for node 0: /cluster/join and /cluster/directive
    answer (status, content type, body) as configured; /cluster/report posts are kept."""

    def __init__(self, join: tuple[int, str, bytes], directive: tuple[int, str, bytes]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.reports: list[dict[str, object]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def _answer(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                if self.path == "/cluster/report":
                    outer.reports.append(json.loads(data))
                    self._answer(200, "application/json", b"{}")
                else:
                    self._answer(*join)

            def do_GET(self) -> None:
                self._answer(*directive)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Node0:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


OK = (200, "application/json", b'{"action": "wait", "attempt": 0}')


@pytest.mark.parametrize(("join", "directive", "words"), [
    ((409, "application/json", b'{"detail": "node 1 already joined"}'), OK,
     "refused the join: node 1 already joined"),
    ((409, "text/html", b"<html><body>Conflict</body></html>"), OK,
     "refused the join: <html><body>Conflict</body></html>"),
    ((409, "application/json", b'["not", "an", "object"]'), OK, 'refused the join: ["not"'),
    ((401, "application/json", b'{"detail": "no"}'), OK, "LAUNCHER_API_TOKEN"),
    ((200, "application/json", b"{}"), (401, "text/plain", b"unauthorized"),
     "refused the directive: wrong or missing LAUNCHER_API_TOKEN"),
    ((200, "application/json", b"{}"), (409, "text/plain", b"stale attempt"),
     "refused the directive: stale attempt"),
])
def test_a_refusal_is_exit_2_with_its_reason_and_node0_hears_the_node_left(
        tmp_path, join: tuple[int, str, bytes], directive: tuple[int, str, bytes],
        words: str) -> None:
    from rich.console import Console

    from launcher.prepare import Target
    from launcher.runtime.worker import run_worker

    with _Node0(join, directive) as node0, open(tmp_path / "out", "w") as out, \
            pytest.raises(InputError) as e:
        run_worker("demo", Target(device="cpu"),
                   ClusterOptions(nnodes=2, node_rank=1, node_deadline=5), node0.port,
                   tmp_path, Console(file=out), grace=1.0)
    assert e.value.exit_code == 2 and words in e.value.message, e.value.message
    assert [r["event"] for r in node0.reports] == ["left"]
    assert node0.reports[0]["rank"] == 1 and words in str(node0.reports[0]["reason"])


# ---- shm: only this engine's own files are removed ----------------------------------------

_HOLDER = """
import mmap, os, sys, time
d, mode = sys.argv[1], sys.argv[2]
name = os.path.join(d, sys.argv[3])
if mode == "map":
    with open(name, "wb") as f:
        f.write(b"\\0" * 4096)
    f = open(name, "r+b")
    m = mmap.mmap(f.fileno(), 4096)
    f.close()  # held by the mapping only, as sem_open holds /dev/shm/sem.*
else:
    f = open(name, "ab")  # held by a descriptor
print("ready", flush=True)
sys.stdin.readline()  # hold until told to stop, then exit without removing the file
"""


def _holder(d, mode: str, name: str):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(d), mode, name],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _release(p) -> None:
    p.communicate("\n", timeout=10)  # closes its pipes too


def test_shm_cleanup_removes_only_files_this_group_was_seen_holding(tmp_path) -> None:
    """Three processes in a directory standing in for /dev/shm: ours (a mapped semaphore-like
    file and an open store-like file), another engine's that exits (its file looks just as
    abandoned), and another engine's that keeps its file. Only ours go."""
    from launcher.runtime import shm

    d = [tmp_path]
    ours_map, ours_fd = _holder(tmp_path, "map", "sem.mp-ours"), \
        _holder(tmp_path, "fd", "vllm_dist_ours")
    theirs_gone = _holder(tmp_path, "fd", "vllm_dist_theirs")
    theirs_live = _holder(tmp_path, "map", "sem.mp-theirs")
    (tmp_path / "vllm_dist_never_open").write_bytes(b"")  # a file store between operations
    (tmp_path / "unrelated").write_bytes(b"")
    try:
        seen = shm.held_by([ours_map.pid, ours_fd.pid], d)
        assert seen == {tmp_path / "sem.mp-ours", tmp_path / "vllm_dist_ours"}
        # while ours still run, nothing is removed even when asked
        assert shm.remove_left(seen, d) == []
        for p in (ours_map, ours_fd, theirs_gone):
            _release(p)
        # a recorded path outside the directories or not engine-made is never touched
        removed = shm.remove_left(seen | {tmp_path / "unrelated"}, d)
        assert sorted(removed) == sorted(seen)
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {"vllm_dist_theirs", "sem.mp-theirs", "vllm_dist_never_open",
                        "unrelated"}
    finally:
        for p in (ours_map, ours_fd, theirs_gone, theirs_live):
            if p.poll() is None:
                _release(p)


def test_shm_a_recorded_file_another_process_now_holds_stays(tmp_path) -> None:
    from launcher.runtime import shm

    first = _holder(tmp_path, "fd", "vllm_dist_x")
    seen = shm.held_by([first.pid], [tmp_path])
    second = _holder(tmp_path, "map", "vllm_dist_x")  # same path, another holder
    try:
        _release(first)
        assert shm.remove_left(seen, [tmp_path]) == []
        assert (tmp_path / "vllm_dist_x").exists()
    finally:
        _release(second)
