"""The host lease (launcher/runtime/lease.py) with real processes: leases taken by real
subprocesses that die by SIGKILL, concurrent writers, corrupt ledgers, and `serve` budgeting
around another launcher; one engine test starts two demo servers at once on the CPU engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT
from engine_helpers import Launcher, engine_pid, free_port, group_alive, kill_group
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.errors import InputError
from launcher.hardware.cpu import NodeMemory, cpu_device, read_node_memory
from launcher.runtime.lease import (
    ALIVE,
    LEDGER,
    Entry,
    HostLease,
    Ledger,
    Pending,
    State,
    adjust,
    around_for,
    device_key,
    open_lease,
    parse_ledger,
    pending_of,
    resolve_dir,
)
from launcher.units import GiB

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from launcher.runtime.lease import HostLease, State
    lease = HostLease(Path(sys.argv[1]), model="holder")
    lease.record(State.LOADING, planned={"cpu:0": int(sys.argv[2])})
    print("ready", lease.entry.id, flush=True)
    time.sleep(600)
""")


def _holder(lease_dir: Path, planned: int) -> tuple[subprocess.Popen[str], str]:
    """A real process holding a lease with `planned` bytes on cpu:0; returns it and its id."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(lease_dir), str(planned)],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout is not None
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", line
    return p, line[1]


def _stop(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait(10)
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()


def _entries(lease_dir: Path) -> list[dict]:
    return json.loads((lease_dir / LEDGER).read_text())["entries"]


def _cpu(total: int = 64 * GiB, free: int = 48 * GiB):
    return cpu_device(NodeMemory(0, total, free, "numa-node"))


# ---- real processes -------------------------------------------------------------------------

def test_sigkilled_holders_are_removed_at_the_next_read(tmp_path: Path) -> None:
    procs = [_holder(tmp_path, (i + 1) * GiB) for i in range(3)]
    try:
        assert len(_entries(tmp_path)) == 3
        reader = HostLease(tmp_path)
        assert sorted(e.planned["cpu:0"] for e in reader.others()) == [GiB, 2 * GiB, 3 * GiB]
        for p, _ in procs[:2]:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        left = reader.others()
        assert [e.id for e in left] == [procs[2][1]] and left[0].pid == procs[2][0].pid
        # the file itself no longer lists them, and their alive-files are gone
        assert [e["id"] for e in _entries(tmp_path)] == [procs[2][1]]
        assert sorted(p.name for p in (tmp_path / ALIVE).iterdir()) == sorted(
            [f"{procs[2][1]}.lock", f"{reader.entry.id}.lock"])
        reader.release()
    finally:
        for p, _ in procs:
            _stop(p)


def test_a_reused_pid_does_not_keep_an_entry_alive(tmp_path: Path) -> None:
    """An entry whose pid now belongs to a process started at another time is dead, even
    while something holds its alive-file (here: this process, whose pid it names)."""
    lease = HostLease(tmp_path)
    lease.record(State.SERVING, planned={"cpu:0": GiB})
    doc = json.loads((tmp_path / LEDGER).read_text())
    doc["entries"][0]["start_time"] -= 3600
    (tmp_path / LEDGER).write_text(json.dumps(doc))
    assert Ledger(tmp_path).read() == []
    lease.release()


def test_a_dry_run_reads_the_ledger_without_changing_it(tmp_path: Path) -> None:
    """`plan` / `serve --dry-run` (around_for) skip a SIGKILLed holder's entry but leave the
    ledger and its alive-file as they were: only a launcher that takes a lease prunes."""
    live, _ = _holder(tmp_path, 2 * GiB)
    dead, dead_id = _holder(tmp_path, 5 * GiB)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        before = (tmp_path / LEDGER).read_bytes()
        files = sorted(p.name for p in tmp_path.rglob("*"))
        peek = around_for(str(tmp_path))
        assert peek is not None
        devices, notes = peek([_cpu()])
        assert devices[0].free_bytes == _cpu().free_bytes - 2 * GiB  # the live one only
        assert len(notes) == 1 and f"(pid {live.pid}," in notes[0], notes
        assert (tmp_path / LEDGER).read_bytes() == before
        assert sorted(p.name for p in tmp_path.rglob("*")) == files
        assert (tmp_path / ALIVE / f"{dead_id}.lock").exists()
        # a broken ledger is read as empty, with a note, and left where it is
        (tmp_path / LEDGER).write_bytes(b"{not json")
        devices, notes = peek([_cpu()])
        assert devices == [_cpu()] and len(notes) == 1 and "unreadable" in notes[0], notes
        assert (tmp_path / LEDGER).read_bytes() == b"{not json"
        assert not list(tmp_path.glob(f"{LEDGER}.corrupt-*"))
    finally:
        _stop(live)
        _stop(dead)


def test_release_removes_the_entry_and_is_idempotent(tmp_path: Path) -> None:
    lease = HostLease(tmp_path)
    lease.record(State.PLANNING, planned={"cpu:0": GiB})
    other = HostLease(tmp_path)
    assert [e.id for e in other.others()] == [lease.entry.id]
    lease.release()
    lease.release()
    assert other.others() == [] and _entries(tmp_path) == []
    lease.record(State.SERVING)  # after release: nothing is written again
    assert _entries(tmp_path) == []
    other.release()


WRITER = textwrap.dedent("""
    import random, sys, time
    from pathlib import Path
    from launcher.runtime.lease import HostLease, State
    from launcher.hardware.cpu import NodeMemory, cpu_device
    d, rounds = Path(sys.argv[1]), int(sys.argv[2])
    dev = [cpu_device(NodeMemory(0, 1 << 40, 1 << 39, "numa-node"))]
    for i in range(rounds):
        lease = HostLease(d)
        with lease.planning():
            lease.budget_around(dev)
            lease.record(State.PLANNING, planned={"cpu:0": random.randrange(1 << 30)})
        lease.record(State.LOADING, engine_pids=[])
        lease.record(State.SERVING, in_use={"cpu:0": 1})
        if i == rounds - 1 and sys.argv[3] == "kill":
            print("last", lease.entry.id, flush=True)
            time.sleep(600)
        lease.release()
    print("done", flush=True)
""")


def test_concurrent_writers_never_corrupt_the_ledger(tmp_path: Path) -> None:
    """Six processes take, update and release leases as fast as they can (two die by SIGKILL
    holding one); a seventh reads the file without the lock the whole time: every read is a
    whole ledger, and at the end only the dead are left, and the next read drops them."""
    rounds = 15
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(rounds),
                                 "kill" if i < 2 else "release"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT) for i in range(6)]
    reads = 0
    try:
        killed = []
        while any(w.poll() is None for w in writers[2:]) or len(killed) < 2:
            if (tmp_path / LEDGER).exists():
                parse_ledger((tmp_path / LEDGER).read_text())  # never half a file
                reads += 1
            for w in writers[:2]:
                if w not in killed and w.stdout is not None:
                    os.set_blocking(w.stdout.fileno(), False)
                    if (w.stdout.readline() or "").startswith("last"):
                        w.send_signal(signal.SIGKILL)
                        w.wait(10)
                        killed.append(w)
            time.sleep(0.01)
        for w in writers[2:]:
            out, err = w.communicate(30)
            assert w.returncode == 0 and out.strip() == "done", err
    finally:
        for w in writers:
            _stop(w)
    assert reads > 10
    assert len(_entries(tmp_path)) <= 2  # the SIGKILLed ones, until somebody reads
    assert Ledger(tmp_path).read() == [] and _entries(tmp_path) == []
    assert not list(tmp_path.glob(f".{LEDGER}.*.tmp"))


# ---- a ledger that is not one -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                              lambda c: st.lists(c) | st.dictionaries(st.text(), c))
                 .map(json.dumps),
                 st.lists(st.dictionaries(st.sampled_from(
                     ["id", "pid", "start_time", "host", "state", "planned", "in_use",
                      "engine_pids", "around"]),
                     st.none() | st.integers() | st.text() | st.lists(st.integers())
                     | st.dictionaries(st.text(), st.integers())))
                 .map(lambda es: json.dumps({"format": "launcher-lease/1", "entries": es}))))
def test_parse_ledger_reads_or_says_why(text: str) -> None:
    try:
        entries = parse_ledger(text)
    except ValueError as e:
        assert str(e)
    else:
        assert all(isinstance(e, Entry) for e in entries)


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b'{"format": "x"}',
                                     b'{"format": "launcher-lease/1", "entries": [{"pid": "1"}]}',
                                     b""])
def test_a_corrupt_ledger_is_set_aside_with_a_note(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / LEDGER).write_bytes(garbage)
    lease = HostLease(tmp_path)
    devices, notes = lease.budget_around([_cpu()])
    assert devices == [_cpu()]
    assert len(notes) == 1 and "set aside as ledger.json.corrupt-" in notes[0], notes
    aside = list(tmp_path.glob(f"{LEDGER}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    lease.record(State.PLANNING, planned={"cpu:0": GiB})  # and a fresh ledger starts
    assert [e["id"] for e in _entries(tmp_path)] == [lease.entry.id]
    lease.release()


def test_an_unusable_lease_dir_is_exit_2_and_off_is_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError) as e:
        open_lease(str(blocker / "lease"))
    assert e.value.exit_code == 2 and "--lease-dir" in (e.value.fix or "")
    assert open_lease("off") is None and resolve_dir("OFF") is None
    assert resolve_dir(str(tmp_path)) == tmp_path
    assert resolve_dir(None) == resolve_dir("auto") and resolve_dir(None) is not None


# ---- what is budgeted around ------------------------------------------------------------------

def test_pending_is_planned_minus_in_use_measured_else_reported() -> None:
    e = Entry(id="a", pid=1, start_time=0, host="h", pidns=None, state=State.SERVING,
              planned={"cpu:0": 10 * GiB, "GPU-x": 4 * GiB}, in_use={"cpu:0": 3 * GiB})
    by = {p.key: p for p in pending_of(e, None)}
    assert by["cpu:0"].bytes == 7 * GiB and by["cpu:0"].how == "reported"
    assert by["GPU-x"].bytes == 4 * GiB  # nothing reported: all of it still to come
    by = {p.key: p for p in pending_of(e, {"cpu:0": 12 * GiB})}
    assert by["cpu:0"].bytes == 0 and by["cpu:0"].how == "measured"  # more than planned: 0


def test_adjust_counts_pending_as_used_and_says_so() -> None:
    g = _cpu(total=64 * GiB, free=48 * GiB)
    out, notes = adjust([g], [Pending(7, State.LOADING, "cpu:0", 12 * GiB, 2 * GiB, "measured"),
                              Pending(8, State.PLANNING, "cpu:1", 5 * GiB, 0, "measured")])
    assert out[0].free_bytes == 38 * GiB and out[0].used_bytes == g.used_bytes + 10 * GiB
    assert notes == ["another launcher (pid 7, loading) has 10.00 GiB planned on CPU node 0 not "
                     "yet allocated (12.00 GiB planned, 2.00 GiB in use, measured): budgeted "
                     "around it"]
    out, _ = adjust([g], [Pending(7, State.LOADING, "cpu:0", 100 * GiB, 0, "measured")])
    assert out[0].free_bytes == 0 and out[0].used_bytes == g.total_bytes
    assert device_key(g) == "cpu:0"


def test_a_live_holder_is_budgeted_around_with_its_tree_measured(tmp_path: Path) -> None:
    holder, _ = _holder(tmp_path, 8 * GiB)
    try:
        lease = HostLease(tmp_path)
        devices, notes = lease.budget_around([_cpu()])
        # the holder has no engine: none of its 8 GiB is in use yet
        assert devices[0].free_bytes == _cpu().free_bytes - 8 * GiB
        assert len(notes) == 1 and f"(pid {holder.pid}, loading)" in notes[0]
        assert lease.around == {"cpu:0": 8 * GiB}
        # a plan that takes no lease (plan, --dry-run) reads the same, adding no entry
        peek = around_for(str(tmp_path))
        assert peek is not None and peek([_cpu()])[0] == devices
        assert around_for("off") is None and around_for(str(tmp_path / "none")) is None
        lease.record(State.PLANNING, planned={"cpu:0": GiB})
        assert next(e for e in _entries(tmp_path) if e["id"] == lease.entry.id)["around"] == {
            "cpu:0": 8 * GiB}
        lease.release()
    finally:
        _stop(holder)


def test_serve_plans_around_another_launcher_and_leaves_no_entry(engine_env, tmp_path: Path
                                                                  ) -> None:
    """`serve` on this host's memory with another live lease that planned all of it: the
    plan budgets around it (does not fit, exit 3, nothing started) and says why; its own
    entry is gone when it exits."""
    holder, holder_id = _holder(tmp_path, read_node_memory().total_bytes)
    try:
        report = tmp_path / "report.json"
        r = subprocess.run([sys.executable, "-c", "from launcher.cli import serve_main; "
                            "serve_main()", "demo", "--device", "cpu", "--control-port", "0",
                            "--port", str(free_port()), "--lease-dir", str(tmp_path),
                            "--report", str(report), "--log-dir", str(tmp_path / "logs")],
                           capture_output=True, text=True, cwd=ROOT, timeout=120,
                           env={**{k: v for k, v in os.environ.items()
                                   if not k.startswith("LAUNCHER_")}, **engine_env})
        assert r.returncode == 3, r.stdout + r.stderr
        notes = json.loads(report.read_text())["plan"]["notes"]
        assert any(f"another launcher (pid {holder.pid}, loading)" in n and
                   "budgeted around it" in n for n in notes), notes
        assert [e["id"] for e in _entries(tmp_path)] == [holder_id]
    finally:
        _stop(holder)


# ---- two demo servers at once on the CPU engine -------------------------------------------------

START = 420


@pytest.mark.engine
def test_two_demo_servers_at_once_plan_around_each_other(engine_env, tmp_path: Path) -> None:
    lease_dir = tmp_path / "lease"
    env = {**engine_env, "LAUNCHER_LEASE_DIR": str(lease_dir)}
    reports = [tmp_path / "a.json", tmp_path / "b.json"]
    args = ["demo", "--device", "cpu", "--control-port", "0", "--no-measure-speed"]
    a = Launcher(*args, "--port", str(free_port()), "--report", str(reports[0]),
                 "--log-dir", str(tmp_path / "logs-a"), env=env)
    b = None
    pgids: list[int] = []
    try:
        pgids.append(engine_pid(a))  # a's engine is loading: b plans now
        b = Launcher(*args, "--port", str(free_port()), "--report", str(reports[1]),
                     "--log-dir", str(tmp_path / "logs-b"), env=env)
        pgids.append(engine_pid(b))
        a.wait_for(r"serving demo at", START)
        b.wait_for(r"serving demo at", START)
        ra, rb = (json.loads(p.read_text()) for p in reports)
        for r in (ra, rb):
            assert r["verdict"] == "serving" and r["attempts"][-1]["verification"]["ok"]
        entries = {e["pid"]: e for e in _entries(lease_dir)}
        ea, eb = entries[a.proc.pid], entries[b.proc.pid]
        assert ea["state"] == eb["state"] == "serving"
        # the ledger holds what each planned for its engine, and what each measured
        for e, r in ((ea, ra), (eb, rb)):
            dev = r["attempts"][-1]["verification"]["devices"][0]
            assert e["planned"]["cpu:0"] == dev["engine_planned_bytes"]
            assert e["in_use"]["cpu:0"] == dev["engine_measured_bytes"]
        # b planned around what a had planned but not yet allocated, and said so
        assert 0 < eb["around"]["cpu:0"] <= ea["planned"]["cpu:0"]
        assert any(f"another launcher (pid {a.proc.pid}, loading)" in n and
                   "budgeted around it" in n for n in rb["plan"]["notes"]), rb["plan"]["notes"]
        budget_b = rb["plan"]["gpus"][0]
        assert budget_b["planned"]["other"] >= eb["around"]["cpu:0"]
        # both engines' plans together stay under the headroom limit of the node
        assert ea["planned"]["cpu:0"] + eb["planned"]["cpu:0"] <= budget_b["limit_bytes"]
        a.signal(signal.SIGTERM)
        b.signal(signal.SIGTERM)
        assert a.wait(90) == b.wait(90) == 128 + signal.SIGTERM
        assert _entries(lease_dir) == []  # both removed their entries on the way out
        for pgid in pgids:
            deadline = time.monotonic() + 15
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert not group_alive(pgid)
    finally:
        for srv in (a, b):
            if srv is not None:
                srv.kill()
        for pgid in pgids:
            kill_group(pgid)
