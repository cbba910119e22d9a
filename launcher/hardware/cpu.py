"""Host memory as vLLM's CPU backend sees it, presented as one device to plan on.

vLLM's CPU worker binds its memory to one NUMA node and checks its KV cache against that
node's memory (`/sys/devices/system/node/nodeN/meminfo`: free + file pages + reclaimable),
clamped by the cgroup limit when it runs in a container (vllm/utils/cpu_resource_utils.py,
0.32). The planner must budget against the same numbers the engine will check, so this module
reproduces them instead of using psutil's machine-wide view (which can differ: on this
project's build machine node 0 reports 10.5 GiB of a 23.5 GiB VM).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from launcher.hardware.inventory import CPU_CATALOG_NAME, GpuInfo

NODE_DIR = Path("/sys/devices/system/node")
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class NodeMemory:
    node: int
    total_bytes: int
    available_bytes: int
    source: str  # "numa-node", "psutil", plus "+cgroup" when a container limit clamped it


def parse_node_meminfo(text: str) -> tuple[int, int]:
    """(total, available) from a NUMA node's meminfo, the way vLLM computes them."""
    info: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            info[parts[2].rstrip(":")] = int(parts[3]) * 1024
    available = (info["MemFree"] + info.get("Active(file)", 0) + info.get("Inactive(file)", 0)
                 + info.get("SReclaimable", 0))
    return info["MemTotal"], available


def clamp_to_cgroup(total: int, available: int, limit: int | None,
                    usage: int | None) -> tuple[int, int, bool]:
    if limit is None or limit >= total:
        return total, available, False
    return limit, max(0, min(available, limit - (usage or 0))), True


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    return int(text)


def cgroup_limit_usage() -> tuple[int | None, int | None]:
    limit = _read_int(CGROUP / "memory.max")
    if limit is not None:
        return limit, _read_int(CGROUP / "memory.current")
    v1 = _read_int(CGROUP / "memory" / "memory.limit_in_bytes")
    if v1 is not None and v1 < (1 << 62):
        return v1, _read_int(CGROUP / "memory" / "memory.usage_in_bytes")
    return None, None


def read_node_memory(node: int = 0) -> NodeMemory:
    meminfo = NODE_DIR / f"node{node}" / "meminfo"
    if platform.system() == "Linux" and meminfo.exists():
        total, available = parse_node_meminfo(meminfo.read_text())
        source = "numa-node"
    else:
        import psutil

        vm = psutil.virtual_memory()
        total, available, source = vm.total, vm.available, "psutil"
    limit, usage = cgroup_limit_usage()
    total, available, clamped = clamp_to_cgroup(total, available, limit, usage)
    return NodeMemory(node, total, available, source + ("+cgroup" if clamped else ""))


def cpu_device(mem: NodeMemory) -> GpuInfo:
    """The host's memory node as the single device of a CPU plan."""
    used = mem.total_bytes - mem.available_bytes
    return GpuInfo(index=mem.node, uuid=None, name=f"CPU (NUMA node {mem.node} memory)",
                   total_bytes=mem.total_bytes, nvml_total_bytes=None, reserved_bytes=None,
                   free_bytes=mem.available_bytes, used_bytes=used, compute_capability=(0, 0),
                   mig_mode=None, processes=(), nvlink_peers=(), memory_bandwidth_gbps=None,
                   catalog_name=CPU_CATALOG_NAME, simulated=False)
