"""Shared-memory files an engine group leaves behind when it is killed — this group's only.

Two kinds of file, both removed by the processes that made them on a clean exit but not after
SIGKILL (shared/notes/vllm-multinode-on-cpu.md §4):

- Python's named semaphores, `/dev/shm/sem.mp-*` (multiprocessing with spawn/forkserver;
  the resource tracker unlinks them at exit, and it dies with the group). `sem_open` maps the
  file, so every process using one shows it in /proc/<pid>/maps for as long as it lives.
- vLLM's rendezvous file store, `vllm_dist_<uuid4 hex>` in `tempfile.gettempdir()`
  (vllm/utils/network_utils.py:153-154 `get_file_store_init_method`, vLLM 0.32), handed to
  `torch.distributed.FileStore(path, world_size)` (vllm/distributed/parallel_state.py:1928-1931).
  torch's FileStore (pytorch/pytorch torch/csrc/distributed/c10d/FileStore.cpp) keeps no
  descriptor: `set`, `get`, `add`, `wait` each build a scoped `File file(path_, O_RDWR |
  O_CREAT, timeout_)`, flock it, read or append, and close it; `~FileStore` removes the file
  once all `numWorkers` have finished. So such a file is open only for instants, is named by
  nothing on a command line, and on a host shared with another launcher's engine (the case
  runtime/lease.py exists for) cannot be told apart by name, owner or time.

So "appeared since the start and unused now" is not evidence of ownership for a file store.
The supervisor therefore gives each engine group a TMPDIR of its own (supervisor.py): its
stores and ZMQ sockets land there and the directory goes with the group. For what still lands
here, the supervisor records while the engine runs (at each `pids()` call: verification, every
monitor tick, a worker's measurement, and just before the stop's SIGTERM) the matching files
the group's own processes have open or mapped (`held_by`), and at the stop removes those no
process visible here still holds (`remove_left`). A semaphore is different: every process that
uses one keeps it mapped, so a `sem.mp-*` made since this group started that no process maps
is dead whoever made it, and is removed too (`since`) — one created and dropped between two
recordings would otherwise leak.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

PATTERNS = ("vllm_dist_*", "sem.mp-*")


def _dirs() -> list[Path]:
    out = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    return [d for d in dict.fromkeys(out) if d.is_dir()]


def _ours(path: str, dirs: Iterable[Path]) -> bool:
    """Whether `path` names an engine-made file directly inside one of `dirs`."""
    p = Path(path)
    return p.parent in set(dirs) and any(fnmatch.fnmatchcase(p.name, pat) for pat in PATTERNS)


def listing(dirs: Iterable[Path] | None = None) -> set[Path]:
    """The engine-made files that exist now (whoever made them)."""
    found: set[Path] = set()
    for d in _dirs() if dirs is None else dirs:
        for pattern in PATTERNS:
            with contextlib.suppress(OSError):
                found.update(d.glob(pattern))
    return found


def _held(pid: int | str) -> set[str]:
    """Every path process `pid` has open (fd) or mapped (maps), as far as /proc shows."""
    entry = Path("/proc") / str(pid)
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for line in (entry / "maps").read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                out.add(parts[5])
    with contextlib.suppress(OSError):
        for fd in (entry / "fd").iterdir():
            with contextlib.suppress(OSError):
                out.add(os.readlink(fd))
    return out


def held_by(pids: Iterable[int], dirs: Iterable[Path] | None = None) -> set[Path]:
    """The engine-made files (in `dirs`, default /dev/shm and the temp dir) that the
    processes `pids` have open or mapped now: what the supervisor records as its group's."""
    where = list(_dirs() if dirs is None else dirs)
    found: set[Path] = set()
    for pid in pids:
        found.update(Path(p) for p in _held(pid) if _ours(p, where))
    return found


def in_use(paths: set[Path]) -> set[Path]:
    """Those of `paths` some running process has open or mapped (as far as /proc shows)."""
    wanted = {str(p) for p in paths}
    used: set[str] = set()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit():
            used |= _held(entry.name) & wanted
    return {p for p in paths if str(p) in used}


def _new_semaphores(where: Iterable[Path], since: float) -> set[Path]:
    found: set[Path] = set()
    for d in where:
        with contextlib.suppress(OSError):
            for p in d.glob("sem.mp-*"):
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime >= since:
                        found.add(p)
    return found


def remove_left(recorded: set[Path], dirs: Iterable[Path] | None = None, *,
                since: float | None = None) -> list[Path]:
    """Remove those of `recorded` (files this engine's group was seen holding) that still
    exist, are engine-made files in `dirs`, and no visible process holds; with `since` (the
    group's start, epoch seconds) also the semaphores made since then that nothing maps. The
    list of what was removed; no other file is touched."""
    where = list(_dirs() if dirs is None else dirs)
    mine = {p for p in recorded if _ours(str(p), where) and p.exists()}
    if since is not None:
        mine |= _new_semaphores(where, since)
    removed = []
    for p in sorted(mine - in_use(mine)):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed
