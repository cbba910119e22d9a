"""Hardware inventory: real GPUs (NVML), simulated GPUs (catalog) or a recorded snapshot.

Downstream stages get an `Inventory` and never touch NVML. Precedence: an inventory file beats
simulated GPUs beats NVML; asking for both a file and simulated GPUs is an input error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from launcher.errors import InputError
from launcher.hardware.inventory import GpuInfo, GpuProcess, HostInfo, Inventory

__all__ = ["GpuInfo", "GpuProcess", "HostInfo", "Inventory", "get_inventory"]


def get_inventory(gpus: str | None = None, inventory_file: str | Path | None = None) -> Inventory:
    """The GPUs to plan for: `inventory_file` (replayed snapshot, source "file:<path>"; one
    per node joined by ":", or a cluster file: `hardware/cluster.py`), else `gpus` (simulated
    catalog GPUs, `2x8xH100-80GB` for nodes), else this machine's GPUs through NVML."""
    if gpus and inventory_file:
        raise InputError(
            "--gpus and --inventory-file both given: they describe the GPUs two different ways.",
            fix="Keep one: --gpus for catalog GPUs, --inventory-file for a recorded snapshot.",
            hint="launcher plan MODEL --gpus 2xH100-80GB",
        )
    if inventory_file:
        if isinstance(inventory_file, str):  # several nodes: a:b, or a cluster file
            from launcher.hardware.cluster import load_inventory_files

            return load_inventory_files(inventory_file)
        inv = Inventory.load(inventory_file)
        return replace(inv, source=f"file:{inventory_file}")
    if gpus:
        from launcher.hardware.catalog import simulated_inventory

        return simulated_inventory(gpus)
    from launcher.hardware.nvml import read_inventory

    return read_inventory()
