"""Several nodes as one inventory: one snapshot per node, or a cluster file listing the nodes.

A multi-node plan needs every node's GPUs, each marked with its node (`GpuInfo.node`), so the
planner keeps tensor-parallel groups inside a node and puts pipeline stages across nodes. Three
ways to describe the nodes, all ending in one `Inventory`:

    --gpus 2x8xH100-80GB                      idle catalog GPUs (hardware/catalog.py)
    --inventory-file node0.json:node1.json    one snapshot (`launcher gpus --json`) per node,
                                              joined by the path separator (":"; ";" on Windows),
                                              as in PATH; LAUNCHER_INVENTORY_FILE takes the same
    --inventory-file cluster.yaml             a cluster file (YAML or JSON):

        format: launcher-cluster/1
        nodes:
          - inventory: node0.json     # a snapshot, relative to this file
          - gpus: 8xH100-80GB         # or catalog GPUs (a one-machine --gpus spec)

Nodes are numbered in the order given (node 0 serves the API). In the joined inventory a GPU's
`index` is global, the node's offset plus its position on the node, as the runtime's cluster
numbers devices; NVLink peers are renumbered with it and never cross nodes.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import InputError
from launcher.hardware.inventory import MAX_FILE_BYTES, MAX_GPUS, GpuInfo, Inventory

FORMAT = "launcher-cluster/1"
SEPARATOR = os.pathsep  # between per-node snapshot paths, as in PATH
MAX_NODES = 1024
_FIX = ("Write a cluster file: `format: launcher-cluster/1` and `nodes:`, each node "
        "`inventory: <snapshot.json>` or `gpus: 8xH100-80GB`.")
_HINT = "launcher plan MODEL --inventory-file node0.json" + SEPARATOR + "node1.json"


def split_paths(value: str) -> list[str]:
    """The per-node paths in an --inventory-file value; a value naming an existing file is one
    path even if it holds the separator."""
    if SEPARATOR not in value or Path(value).exists():
        return [value]
    parts = value.split(SEPARATOR)
    if any(not p.strip() for p in parts):
        raise InputError(f"Empty path in --inventory-file {value!r}.",
                         fix=f"Separate the nodes' snapshots with single {SEPARATOR!r}.",
                         hint=_HINT)
    if len(parts) > MAX_NODES:
        raise InputError(f"--inventory-file lists {len(parts)} snapshots (limit {MAX_NODES}).",
                         fix="Give one snapshot per node.", hint=_HINT)
    return parts


def is_cluster_file(path: str | Path) -> bool:
    """A YAML file, or a JSON file whose format is launcher-cluster/1 (a snapshot is JSON)."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        return True
    if not p.is_file():
        return False  # a pipe or device must not block here; Inventory.load reports it
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False  # Inventory.load reports it
    return FORMAT.encode() in head


def load_inventory_files(value: str) -> Inventory:
    """What --inventory-file names: one snapshot, several (one per node) or a cluster file."""
    paths = split_paths(value)
    if len(paths) == 1:
        if is_cluster_file(paths[0]):
            return load_cluster(paths[0])
        return replace(Inventory.load(paths[0]), source=f"file:{paths[0]}")
    nodes = [Inventory.load(p) for p in paths]
    for p, inv in zip(paths, nodes, strict=True):
        _single_node(inv, p)
    if sum(len(n.gpus) for n in nodes) > MAX_GPUS:
        raise InputError(f"--inventory-file lists more than {MAX_GPUS} GPUs in all.",
                         fix="Give one snapshot per node, of fewer nodes.", hint=_HINT)
    return join_nodes(nodes, source="file:" + SEPARATOR.join(paths))


def load_cluster(path: str | Path) -> Inventory:
    """Parse a cluster file; any bad field is an InputError (exit 2) naming it."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):  # a pipe or device (/dev/zero) would never end
            raise _error(p, "<root>", "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise _error(p, "<root>", f"the file is over {MAX_FILE_BYTES:,} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"Cannot read cluster file {p}: {exc.strerror or exc}", fix=_FIX,
                         hint=_HINT) from exc
    except ValueError as exc:
        raise _error(p, "<root>", f"not UTF-8 text ({type(exc).__name__})") from exc
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise _error(p, "<root>", f"not YAML or JSON ({str(exc)[:160]})") from exc
    return parse_cluster(data, p)


def parse_cluster(data: Any, path: Path) -> Inventory:
    """A parsed cluster document → one inventory of all its nodes (paths relative to `path`)."""
    from launcher.hardware.catalog import simulated_inventory

    if not isinstance(data, dict):
        raise _error(path, "<root>", f"expected a mapping, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _error(path, "format", f"expected {FORMAT!r}, got {_show(data.get('format'))}")
    unknown = sorted(str(k) for k in data if k not in ("format", "nodes"))
    if unknown:
        raise _error(path, unknown[0], "unknown field (known: format, nodes)")
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise _error(path, "nodes", f"expected a non-empty list, got {_show(nodes_raw)}")
    if len(nodes_raw) > MAX_NODES:
        raise _error(path, "nodes", f"{len(nodes_raw)} nodes (limit {MAX_NODES})")
    nodes: list[Inventory] = []
    for i, raw in enumerate(nodes_raw):
        where = f"nodes[{i}]"
        if not isinstance(raw, dict):
            raise _error(path, where, f"expected a mapping, got {type(raw).__name__}")
        keys = set(raw)
        if keys - {"inventory", "gpus"}:
            bad = sorted(str(k) for k in keys - {"inventory", "gpus"})[0]
            raise _error(path, f"{where}.{bad}", "unknown field (known: inventory, gpus)")
        if len(keys) != 1:
            raise _error(path, where, "give exactly one of inventory (a snapshot) or gpus")
        if "inventory" in raw:
            ref = raw["inventory"]
            if not isinstance(ref, str) or not ref.strip():
                raise _error(path, f"{where}.inventory", f"expected a path, got {_show(ref)}")
            snap = Path(ref) if Path(ref).is_absolute() else path.parent / ref
            try:
                inv = Inventory.load(snap)
            except InputError as exc:
                raise _error(path, f"{where}.inventory", exc.message) from exc
            _single_node(inv, str(snap), f"{path}: field {where}.inventory")
        else:
            spec = raw["gpus"]
            if not isinstance(spec, str) or not spec.strip():
                raise _error(path, f"{where}.gpus", f"expected a spec such as 8xH100-80GB, got "
                                                    f"{_show(spec)}")
            try:
                inv = simulated_inventory(spec)
            except InputError as exc:
                raise _error(path, f"{where}.gpus", exc.message) from exc
            if any(g.node for g in inv.gpus):
                raise _error(path, f"{where}.gpus", f"{spec!r} names several nodes; list "
                                                    "each node on its own")
        nodes.append(inv)
    if sum(len(n.gpus) for n in nodes) > MAX_GPUS:
        raise _error(path, "nodes", f"more than {MAX_GPUS} GPUs in all")
    return join_nodes(nodes, source=f"cluster:{path}")


def join_nodes(nodes: list[Inventory], source: str) -> Inventory:
    """One inventory of `nodes` in order: node k's GPUs get `node=k` and global indices."""
    if len(nodes) == 1:
        return replace(nodes[0], source=source)
    gpus: list[GpuInfo] = []
    assumptions: list[str] = []
    offset = 0
    for k, inv in enumerate(nodes):
        local = sorted(inv.gpus, key=lambda g: g.index)
        new = {g.index: offset + i for i, g in enumerate(local)}
        gpus.extend(replace(g, index=new[g.index], node=k,
                            nvlink_peers=tuple(new[p] for p in g.nvlink_peers if p in new))
                    for g in local)
        assumptions.extend(f"node {k}: {a}" for a in dict.fromkeys(inv.assumptions))
        offset += len(local)
    drivers = {n.driver_version for n in nodes}
    if len(drivers) > 1:
        assumptions.append("the nodes run different NVIDIA drivers ("
                           + ", ".join(str(d) for d in sorted(drivers, key=str))
                           + "): planned with node 0's")
    first = nodes[0]
    return Inventory(gpus=tuple(gpus), host=first.host, source=source,
                     driver_version=first.driver_version,
                     cuda_driver_version=first.cuda_driver_version,
                     captured_at=first.captured_at, assumptions=tuple(assumptions))


def _single_node(inv: Inventory, path: str, origin: str | None = None) -> None:
    if any(g.node for g in inv.gpus):
        raise InputError(
            f"{origin or path}: the snapshot {path} already lists several nodes; give one "
            "snapshot per node.", fix=_FIX, hint=_HINT)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error(path: Path, field: str, problem: str) -> InputError:
    return InputError(f"Malformed cluster file {path}: field {field}: {problem}", fix=_FIX,
                      hint=_HINT)
