"""Rich rendering of an Inventory for `launcher gpus` (people); `--json` uses Inventory.to_json."""

from __future__ import annotations

from rich.table import Table

from launcher.hardware.inventory import GpuInfo, Inventory
from launcher.units import fmt_gib


def _others(g: GpuInfo) -> str:
    if not g.processes:
        return "-"
    parts = [f"{p.pid}" + (f" {p.name}" if p.name else "")
             + ("" if p.used_bytes is None else f" {fmt_gib(p.used_bytes)}") for p in g.processes]
    return ", ".join(parts)


def inventory_table(inv: Inventory) -> Table:
    """One row per GPU; totals are CUDA-visible (NVML total − reserved), in GiB."""
    caption = host_line(inv)
    table = Table(title=f"GPUs ({inv.source})", caption=caption, caption_justify="left")
    for col in ("#", "name", "total GiB", "free GiB", "used GiB", "other processes", "CC",
                "MIG", "NVLink peers"):
        table.add_column(col, justify="right" if "GiB" in col or col == "#" else "left")
    for g in inv.gpus:
        name = g.name + (f" [{g.catalog_name}]" if g.catalog_name and g.catalog_name != g.name
                         else "") + (" (simulated)" if g.simulated else "")
        table.add_row(
            str(g.index), name, fmt_gib(g.total_bytes, unit=False),
            fmt_gib(g.free_bytes, unit=False), fmt_gib(g.used_bytes, unit=False),
            _others(g), f"{g.compute_capability[0]}.{g.compute_capability[1]}",
            {True: "on", False: "off", None: "?"}[g.mig_mode],
            ",".join(map(str, g.nvlink_peers)) or "-",
        )
    return table


def host_line(inv: Inventory) -> str:
    drv = f"driver {inv.driver_version}, CUDA {inv.cuda_driver_version}" \
        if inv.driver_version else "no driver reading"
    if inv.host is None:
        return f"host: not read; {drv}"
    h = inv.host
    return (f"host: {h.cpu_count} CPUs, RAM {fmt_gib(h.available_ram_bytes, unit=False)} of "
            f"{fmt_gib(h.total_ram_bytes)} available; {drv}")
