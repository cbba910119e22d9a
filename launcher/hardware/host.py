"""Host RAM and CPU cores (psutil): the room for CPU offload, swap space and the CPU backend."""

from __future__ import annotations

import os

from launcher.hardware.inventory import HostInfo


def read_host() -> HostInfo:
    """This machine's RAM and the CPU cores this process may run on (cgroup/affinity aware
    where the OS says so, so a container limited to 4 cores reports 4)."""
    import psutil

    vm = psutil.virtual_memory()
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = psutil.cpu_count(logical=True) or 1
    return HostInfo(total_ram_bytes=int(vm.total), available_ram_bytes=int(vm.available),
                    cpu_count=cpus)
