"""The host lease: `serve` runs on one host do not plan on the same free memory.

Every launcher reads free memory (NVML per GPU; host/NUMA memory for the CPU engine) and plans
on it. A second launcher started while the first engine is still loading would see memory that
is about to be taken, and both engines would run out of it. So every `serve` on a host keeps
an entry in one small ledger, and plans around what the others have planned but not allocated:

    <dir>/ledger.lock        flock(2), held only while reading → planning → writing (a second
                             or so), never across an engine start
    <dir>/ledger.json        {"format": "launcher-lease/1", "entries": [entry, …]}; replaced
                             atomically (write + rename), so a reader never sees half of it
    <dir>/alive/<id>.lock    each launcher holds an flock on its own file for its whole life;
                             the kernel drops it when the process dies, even by SIGKILL

An entry records the launcher's pid and start time, its pid namespace and host name, its state
(planning → loading → serving), the bytes its plan gives its engine per device (GPU UUID, or
``cpu:<NUMA node>``) and what it took off for the others when it planned (`around`). An
entry whose owner is dead (its alive-file is not locked, or, where the pid is visible from
here, the pid is gone or started at another time: pid reuse) is removed whenever the ledger
is read; a live launcher removes its own on every exit path (`release`, from `serve`'s
`finally`: normal end, error, recorded SIGTERM/SIGINT).

While planning, each other live entry's ``max(0, planned − in use)`` per device is taken off
that device's free memory (`budget_around`); what it already uses is in the free reading. In
use is measured where the owner's processes are visible: NVML per-process memory of its
process tree (GPU), the PSS of its engine tree (CPU). An owner in another pid namespace (a
container) is measured by what it wrote itself once verified; until then all it planned is
taken off (conservative: what it already loaded counts twice for that moment).

The directory (`--lease-dir`, LAUNCHER_LEASE_DIR; `off` disables the lease) defaults to
/dev/shm/vllm-headroom: a tmpfs every process on the host shares (not a per-user directory
such as $XDG_RUNTIME_DIR or the launcher's cache, which two users or two containers do not
share), emptied at boot, so a ledger never outlives the processes it describes. Without a
writable /dev/shm: /tmp/vllm-headroom. Containers each get a private /dev/shm and /tmp: to
share the lease, mount one host directory into each (``-v /run/vllm-headroom:/lease -e
LAUNCHER_LEASE_DIR=/lease``); the alive-file locks work across containers on one host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo
from launcher.units import fmt_gib

FORMAT = "launcher-lease/1"
LEDGER = "ledger.json"
LOCK = "ledger.lock"
ALIVE = "alive"
DEFAULT_DIRS = (Path("/dev/shm/vllm-headroom"), Path("/tmp/vllm-headroom"))
OFF = ("off", "none", "no", "false", "0")
LOCK_TIMEOUT = 60.0  # seconds: planning holds the lock for about one; more is a stuck owner
START_TIME_SLACK = 0.05  # seconds: psutil's create_time is rounded to the clock tick


class State(StrEnum):
    PLANNING = "planning"  # planned (or re-planning); no engine of this launcher runs
    LOADING = "loading"  # the engine is starting: its memory is being taken
    SERVING = "serving"  # verified: `in_use` holds what the engine measured


def device_key(g: GpuInfo) -> str:
    """How the ledger names a device: the GPU's UUID (stable whatever CUDA_VISIBLE_DEVICES
    says), ``gpu:<index>`` without one, ``cpu:<NUMA node>`` for host memory."""
    if g.is_cpu:
        return f"cpu:{g.index}"
    return g.uuid or f"gpu:{g.index}"


def device_label(g: GpuInfo) -> str:
    return f"CPU node {g.index}" if g.is_cpu else f"GPU {g.index}"


@dataclass(frozen=True)
class Entry:
    """One running launcher in the ledger."""

    id: str
    pid: int
    start_time: float  # psutil create_time of the launcher process
    host: str
    pidns: str | None  # /proc/self/ns/pid link: pids are comparable only inside one namespace
    state: State
    planned: Mapping[str, int] = field(default_factory=dict)  # device key → engine bytes
    in_use: Mapping[str, int] = field(default_factory=dict)  # device key → measured (serving)
    around: Mapping[str, int] = field(default_factory=dict)  # device key → others' pending
    engine_pids: tuple[int, ...] = ()
    model: str = ""
    port: int | None = None
    updated: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "start_time": self.start_time,
                "host": self.host, "pidns": self.pidns, "state": self.state.value,
                "planned": dict(self.planned), "in_use": dict(self.in_use),
                "around": dict(self.around),
                "engine_pids": list(self.engine_pids), "model": self.model, "port": self.port,
                "updated": self.updated}

    @classmethod
    def from_json(cls, d: object) -> Entry:
        """Raises ValueError naming the field that is wrong."""
        if not isinstance(d, dict):
            raise ValueError("an entry is not an object")

        def get(name: str, types: type | tuple[type, ...]) -> Any:
            v = d.get(name)
            if not isinstance(v, types) or isinstance(v, bool):
                raise ValueError(f"entry field {name!r} is {v!r}")
            return v

        def sizes(name: str) -> dict[str, int]:
            m = d.get(name, {}) if name == "around" else get(name, dict)
            if not isinstance(m, dict):
                raise ValueError(f"entry field {name!r} is {m!r}")
            if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                       and v >= 0 for k, v in m.items()):
                raise ValueError(f"entry field {name!r} is not device → bytes: {m!r}")
            return dict(m)

        try:
            state = State(str(d.get("state")))
        except ValueError:
            raise ValueError(f"entry field 'state' is {d.get('state')!r}") from None
        pids = get("engine_pids", list)
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in pids):
            raise ValueError(f"entry field 'engine_pids' is {pids!r}")
        pidns = d.get("pidns")
        port = d.get("port")
        return cls(id=get("id", str), pid=get("pid", int),
                   start_time=float(get("start_time", (int, float))), host=get("host", str),
                   pidns=pidns if isinstance(pidns, str) else None, state=state,
                   planned=sizes("planned"), in_use=sizes("in_use"), around=sizes("around"),
                   engine_pids=tuple(pids),
                   model=str(d.get("model") or ""),
                   port=port if isinstance(port, int) and not isinstance(port, bool) else None,
                   updated=str(d.get("updated") or ""))


def parse_ledger(text: str) -> list[Entry]:
    """The entries of a ledger file; ValueError (with what is wrong) for anything else."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ValueError("'entries' is not a list")
    return [Entry.from_json(e) for e in entries]


# ---- what the others have planned but not yet allocated (pure) -----------------------------

@dataclass(frozen=True)
class Pending:
    """Another launcher's memory still to come on one device."""

    pid: int
    state: State
    key: str
    planned: int
    in_use: int
    how: str  # "measured" (its process tree from here) or "reported" (its own verified figure)

    @property
    def bytes(self) -> int:
        return max(0, self.planned - self.in_use)


def pending_of(entry: Entry, measured: Mapping[str, int] | None) -> list[Pending]:
    """Per device of `entry`: planned − in use, with in use measured from here when its
    processes are visible (`measured`), else what it reported itself (0 before it served)."""
    out = []
    for key, planned in entry.planned.items():
        if measured is not None and key in measured:
            out.append(Pending(entry.pid, entry.state, key, planned, measured[key], "measured"))
        else:
            out.append(Pending(entry.pid, entry.state, key, planned,
                               entry.in_use.get(key, 0), "reported"))
    return out


def adjust(devices: Sequence[GpuInfo], pending: Sequence[Pending]) -> tuple[list[GpuInfo],
                                                                            list[str]]:
    """The devices with every other launcher's pending bytes counted as used (not free), and
    one note per launcher and device that had any."""
    out, notes = [], []
    for g in devices:
        key = device_key(g)
        mine = [p for p in pending if p.key == key and p.bytes > 0]
        total = sum(p.bytes for p in mine)
        if total:
            g = replace(g, free_bytes=max(0, g.free_bytes - total),
                        used_bytes=min(g.total_bytes, g.used_bytes + total))
        for p in mine:
            notes.append(
                f"another launcher (pid {p.pid}, {p.state.value}) has {fmt_gib(p.bytes)} "
                f"planned on {device_label(g)} not yet allocated ({fmt_gib(p.planned)} planned, "
                f"{fmt_gib(p.in_use)} in use, {p.how}): budgeted around it")
        out.append(g)
    return out, notes


# ---- processes ------------------------------------------------------------------------------

def _pidns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def visible(entry: Entry) -> bool:
    """Its pid means the same process here: same host and pid namespace."""
    return entry.host == socket.gethostname() and entry.pidns is not None and \
        entry.pidns == _pidns()


def pid_matches(entry: Entry) -> bool:
    """The entry's pid is alive and is the process that wrote it (not a reused pid)."""
    started = _start_time(entry.pid)
    return started is not None and abs(started - entry.start_time) <= START_TIME_SLACK


def engine_tree(entry: Entry) -> list[int]:
    """The pids of the entry's engine: the launcher's descendants and the engine pids it
    recorded (and theirs); not the launcher itself, whose memory no plan includes."""
    import psutil

    pids: set[int] = set()
    for root in (entry.pid, *entry.engine_pids):
        try:
            p = psutil.Process(root)
            if root != entry.pid:
                pids.add(root)
            pids.update(c.pid for c in p.children(recursive=True))
        except psutil.Error:
            continue
    return sorted(pids)


def measure_in_use(entry: Entry, devices: Sequence[GpuInfo]) -> dict[str, int] | None:
    """What the entry's engine uses now on each of `devices` it planned on; None when its
    processes cannot be seen from here. GPU figures the driver withholds are left out (the
    entry's own report is used for that device)."""
    if not visible(entry):
        return None
    keys = {device_key(g): g for g in devices if device_key(g) in entry.planned}
    if not keys:
        return {}
    pids = engine_tree(entry)
    out: dict[str, int] = {}
    if any(g.is_cpu for g in keys.values()):
        from launcher.runtime.measure import process_tree_pss

        pss, _ = process_tree_pss(pids)
        out.update({k: pss for k, g in keys.items() if g.is_cpu})
    gpus = {k: g for k, g in keys.items() if not g.is_cpu}
    if gpus:
        from launcher.errors import HardwareError
        from launcher.hardware.nvml import read_raw
        from launcher.runtime.measure import engine_bytes_on_gpu

        try:
            raw = read_raw()
        except HardwareError:
            return out
        by_uuid = {d.uuid: d for d in raw.devices if d.uuid}
        for k, g in gpus.items():
            d = by_uuid.get(g.uuid) if g.uuid else None
            used = engine_bytes_on_gpu(d.processes, set(pids)) if d is not None else None
            if used is not None:
                out[k] = used
            elif d is not None and not [p for p in d.processes if p.pid in pids]:
                out[k] = 0  # none of its processes on this GPU yet
    return out


# ---- the ledger on disk ---------------------------------------------------------------------

def resolve_dir(setting: str | None) -> Path | None:
    """The lease directory for a `--lease-dir` value: None for off, the value, or (unset /
    auto) the first of /dev/shm/vllm-headroom, /tmp/vllm-headroom whose parent is writable."""
    if setting is not None and setting.strip().lower() in OFF:
        return None
    if setting and setting.strip().lower() != "auto":
        return Path(setting).expanduser()
    for d in DEFAULT_DIRS:
        if d.is_dir() and os.access(d, os.W_OK | os.X_OK):
            return d
        if not d.exists() and d.parent.is_dir() and os.access(d.parent, os.W_OK | os.X_OK):
            return d
    return DEFAULT_DIRS[-1]


class _FileLock:
    """flock on one file, re-entrant within this process (the serve loop plans under the lock
    and the planner's hook reads the ledger again): a second flock on another descriptor of
    the same file from the same process would wait for itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.depth = 0
        self.mutex = threading.RLock()

    @contextlib.contextmanager
    def held(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        with self.mutex:
            if self.depth == 0:
                self.fd = _open_shared(self.path)
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            os.close(self.fd)
                            self.fd = None
                            raise TimeoutError(
                                f"{self.path} stayed locked for {timeout:.0f} s") from None
                        time.sleep(0.05)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                    os.close(self.fd)
                    self.fd = None


def _open_shared(path: Path) -> int:
    """Open (creating, readable and writable by every user of the host) a lock file."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)
    return fd


_LOCKS: dict[Path, _FileLock] = {}
_LOCKS_MUTEX = threading.Lock()


def _lock_for(directory: Path) -> _FileLock:
    path = (directory / LOCK).absolute()
    with _LOCKS_MUTEX:
        return _LOCKS.setdefault(path, _FileLock(path))


class Ledger:
    """The ledger in one directory: read (pruning the dead), write, set aside when corrupt."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / LEDGER
        self.lock = _lock_for(directory)
        self.notes: list[str] = []  # what reading found (a set-aside file, dropped entries)

    def prepare(self) -> None:
        """Create the directory for every user of the host; InputError when it cannot be
        written. Not sticky (unlike /tmp): launchers of different users replace the ledger
        and remove each other's dead alive-files, which a sticky directory forbids."""
        try:
            if not self.dir.exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    os.chmod(self.dir, 0o777)
            (self.dir / ALIVE).mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.dir / ALIVE, 0o777)
            os.close(_open_shared(self.dir / LOCK))
        except OSError as e:
            raise InputError(f"cannot use the lease directory {self.dir}: "
                             f"{e.strerror or e}",
                             fix="Point --lease-dir / LAUNCHER_LEASE_DIR at a directory every "
                                 "launcher on this host can write, or set it to off.",
                             hint="serve MODEL --lease-dir /tmp/vllm-headroom") from e

    @contextlib.contextmanager
    def locked(self) -> Iterator[Ledger]:
        try:
            with self.lock.held():
                yield self
        except TimeoutError as e:
            raise InputError(f"the lease ledger in {self.dir} is locked by another launcher "
                             f"for too long ({e})",
                             fix="Another launcher on this host is stuck while planning: stop "
                                 "it, or run this one with --lease-dir off.",
                             hint=f"fuser -v {self.dir / LOCK}") from None

    def read(self, *, prune: bool = True) -> list[Entry]:
        """The live entries (call with the lock held). A ledger that is not one is renamed
        aside with a note, and planning goes on from an empty one; dead entries are dropped
        and the ledger rewritten without them. With `prune=False` (a plan that takes no
        lease: `launcher plan`, `serve --dry-run`) nothing on disk changes: the dead are
        dropped from the answer only and a broken ledger is read as empty, with a note."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            return self._set_aside(str(e)) if prune else self._unreadable(str(e))
        try:
            entries = parse_ledger(text)
        except ValueError as err:
            return self._set_aside(str(err)) if prune else self._unreadable(str(err))
        live = [e for e in entries if alive(self.dir, e)]
        if prune and len(live) != len(entries):
            for gone in (e for e in entries if e not in live):
                with contextlib.suppress(OSError):
                    (self.dir / ALIVE / f"{gone.id}.lock").unlink()
            self.write(live)
        return live

    def _unreadable(self, why: str) -> list[Entry]:
        self.notes.append(f"the lease ledger {self.path} is unreadable ({why}): planned as if "
                          "no other launcher ran; the next `serve` sets it aside")
        return []

    def _set_aside(self, why: str) -> list[Entry]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{LEDGER}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            self.notes.append(f"the lease ledger {self.path} was unreadable ({why}): set aside "
                              f"as {aside.name}; launchers running now re-enter at their next "
                              "state change")
        except OSError as e:
            self.notes.append(f"the lease ledger {self.path} was unreadable ({why}) and could "
                              f"not be set aside ({e.strerror or e}): it will be overwritten")
        return []

    def write(self, entries: Sequence[Entry]) -> None:
        """Replace the ledger atomically (call with the lock held)."""
        doc = {"format": FORMAT, "entries": [e.to_json() for e in entries]}
        tmp = self.path.with_name(f".{LEDGER}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.flush()
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def alive(directory: Path, entry: Entry) -> bool:
    """Its owner still runs: its alive-file is locked, and where its pid is visible from here,
    that pid is the process that wrote the entry."""
    if visible(entry) and not pid_matches(entry):
        return False
    path = directory / ALIVE / f"{entry.id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # held by its owner
    except OSError:
        return True  # cannot tell: keep it (the conservative side)
    else:
        return False
    finally:
        os.close(fd)


# ---- one launcher's lease -------------------------------------------------------------------

class HostLease:
    """This launcher's entry: taken at `serve` start, updated at each plan and state change,
    removed at exit (`release`, idempotent; a SIGKILLed owner's entry goes at the next read)."""

    def __init__(self, directory: Path, *, model: str = "", port: int | None = None,
                 measure: Callable[[Entry, Sequence[GpuInfo]], dict[str, int] | None]
                 = measure_in_use) -> None:
        import psutil

        self.ledger = Ledger(directory)
        self.ledger.prepare()
        self.measure = measure
        self.entry = Entry(id=uuid.uuid4().hex, pid=os.getpid(),
                           start_time=float(psutil.Process().create_time()),
                           host=socket.gethostname(), pidns=_pidns(), state=State.PLANNING,
                           model=model, port=port)
        self._alive_path = directory / ALIVE / f"{self.entry.id}.lock"
        self._alive_fd: int | None = _open_shared(self._alive_path)
        fcntl.flock(self._alive_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.written = False
        self.around: dict[str, int] = {}  # what the last plan took off for others

    @property
    def directory(self) -> Path:
        return self.ledger.dir

    def planning(self) -> contextlib.AbstractContextManager[Ledger]:
        """Hold the ledger's lock while reading, planning and recording the plan."""
        return self.ledger.locked()

    def others(self) -> list[Entry]:
        with self.ledger.locked():
            return [e for e in self.ledger.read() if e.id != self.entry.id]

    def budget_around(self, devices: Sequence[GpuInfo]) -> tuple[list[GpuInfo], list[str]]:
        """`devices` with what the other live launchers planned but have not allocated taken
        off their free memory, with a note for each (and for a ledger that was set aside)."""
        pending: list[Pending] = []
        for e in self.others():
            pending += pending_of(e, self.measure(e, devices))
        out, notes = adjust(devices, pending)
        self.around = {device_key(g): sum(p.bytes for p in pending if p.key == device_key(g))
                       for g in devices}
        notes = [*self.ledger.notes, *notes]
        self.ledger.notes.clear()
        return out, notes

    def record(self, state: State, *, planned: Mapping[str, int] | None = None,
               in_use: Mapping[str, int] | None = None,
               engine_pids: Sequence[int] | None = None) -> None:
        """Write this launcher's entry with what changed (under the lock)."""
        if self._alive_fd is None:
            return  # released
        e = self.entry
        self.entry = replace(
            e, state=state, planned=dict(planned) if planned is not None else e.planned,
            in_use=dict(in_use) if in_use is not None else
            ({} if state != State.SERVING else e.in_use),
            engine_pids=tuple(engine_pids) if engine_pids is not None else
            (() if state == State.PLANNING else e.engine_pids),
            around=dict(self.around) if planned is not None else e.around,
            updated=datetime.now(UTC).isoformat(timespec="seconds"))
        with self.ledger.locked():
            entries = [x for x in self.ledger.read() if x.id != e.id]
            self.ledger.write([*entries, self.entry])
        self.written = True

    def release(self) -> None:
        """Remove this entry and drop the alive-lock; never raises (it runs on exit paths)."""
        if self._alive_fd is None:
            return
        if self.written:
            with contextlib.suppress(Exception), self.ledger.lock.held(timeout=5):
                entries = self.ledger.read()
                if any(x.id == self.entry.id for x in entries):
                    self.ledger.write([x for x in entries if x.id != self.entry.id])
        with contextlib.suppress(OSError):
            self._alive_path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._alive_fd)
        self._alive_fd = None


def planned_bytes(plan: Any) -> dict[str, int]:
    """The engine's planned bytes per device of a feasible plan (every component but the
    memory others held at plan time), by ledger key; {} for an infeasible one."""
    from launcher.memory.components import Component

    c = plan.chosen
    if c is None:
        return {}
    by_index = {g.index: g for g in c.gpus}
    out: dict[str, int] = {}
    for b in c.budgets:
        g = by_index.get(b.index)
        key = device_key(g) if g is not None else f"gpu:{b.index}"
        out[key] = out.get(key, 0) + b.planned_total - b.planned[Component.OTHER]
    return out


def measured_bytes(devices: Sequence[GpuInfo], verification: Mapping[str, Any] | None
                   ) -> dict[str, int]:
    """The engine's measured bytes per device from a verification record (the ledger's
    `in_use` once serving)."""
    if not verification:
        return {}
    by_index = {g.index: g for g in devices}
    out: dict[str, int] = {}
    for d in verification.get("devices", []):
        g = by_index.get(d.get("index"))
        if g is not None and isinstance(d.get("engine_measured_bytes"), int):
            out[device_key(g)] = d["engine_measured_bytes"]
    return out


def open_lease(setting: str | None, *, model: str = "", port: int | None = None
               ) -> HostLease | None:
    """The lease for a `--lease-dir` value (None when off)."""
    directory = resolve_dir(setting)
    if directory is None:
        return None
    try:
        return HostLease(directory, model=model, port=port)
    except OSError as e:
        raise InputError(f"cannot take a lease in {directory}: {e.strerror or e}",
                         fix="Point --lease-dir / LAUNCHER_LEASE_DIR at a directory every "
                             "launcher on this host can write, or set it to off.") from e


def around_for(setting: str | None) -> Callable[[Sequence[GpuInfo]], tuple[list[GpuInfo],
                                                                         list[str]]] | None:
    """For a plan that takes no lease (`launcher plan`, `serve --dry-run`): the same budgeting
    around the live entries, reading the ledger without adding one. None when off."""
    directory = resolve_dir(setting)
    if directory is None or not (directory / LEDGER).exists():
        return None

    def around(devices: Sequence[GpuInfo]) -> tuple[list[GpuInfo], list[str]]:
        ledger = Ledger(directory)
        with ledger.locked():  # a dry run changes nothing: the dead are skipped, not pruned
            entries = ledger.read(prune=False)
        pending: list[Pending] = []
        for e in entries:
            pending += pending_of(e, measure_in_use(e, devices))
        out, notes = adjust(devices, pending)
        return out, [*ledger.notes, *notes]
    return around
