"""What the speed model needs to know about a GPU: bandwidth, tensor peaks, links.

`gpu_speed` reads a catalog entry (`launcher.hardware.catalog.GpuType`). The catalog's
`tensor_tflops` and `pcie_gbps` are used when it has them; until then the datasheet figures
in the speed calibration (`gpu_peaks`) stand in. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from launcher.errors import InputError
from launcher.speed.calibration import TENSOR_DTYPES, SpeedCalibration, gpu_class

if TYPE_CHECKING:
    from launcher.hardware.catalog import GpuType


@dataclass(frozen=True)
class GpuSpeed:
    name: str
    memory_bandwidth_gbps: float  # datasheet, GB/s
    tensor_tflops: tuple[tuple[str, float | None], ...]  # dense, by dtype; None: no such path
    interconnect: str  # nvlink | nvlink-bridge | pcie
    nvlink_gbps: float | None  # total per GPU, both directions
    pcie_gbps: float  # per direction
    compute_capability: tuple[int, int]

    @property
    def gpu_class(self) -> str:
        return gpu_class(self.compute_capability)

    def tflops(self, dtype: str) -> float | None:
        return dict(self.tensor_tflops).get(dtype)

    @property
    def link_gbps(self) -> float:
        """One direction of the link tensor-parallel all-reduces run over."""
        if self.interconnect == "nvlink" and self.nvlink_gbps:
            return self.nvlink_gbps / 2
        # NVLink bridges join pairs only; a ring over more cards crosses PCIe.
        return self.pcie_gbps

    def link_gbps_for(self, tp: int) -> float:
        if self.interconnect == "nvlink-bridge" and tp == 2 and self.nvlink_gbps:
            return self.nvlink_gbps / 2
        return self.link_gbps


def _catalog_tflops(entry: Any) -> tuple[tuple[str, float | None], ...] | None:
    """The entry's dense peaks by dtype (a catalog `TensorTflops` or a plain mapping);
    None when it has no 16-bit figure at all (then the calibration's table may)."""
    raw = getattr(entry, "tensor_tflops", None)
    if raw is None:
        return None
    values = getattr(raw, "values", raw)
    if not isinstance(values, Mapping):
        return None
    pairs = tuple((d, None if values.get(d) is None else float(values[d]))
                  for d in TENSOR_DTYPES)
    return pairs if any(v for d, v in pairs if d in ("fp16", "bf16")) else None


def gpu_speed(entry: GpuType, cal: SpeedCalibration) -> GpuSpeed:
    """The entry's speed figures: the catalog's, else the calibration's datasheet table."""
    tflops = _catalog_tflops(entry)
    pcie = getattr(entry, "pcie_gbps", None)
    peak = cal.peaks.get(entry.name)
    if tflops is None:
        tflops = peak.tflops if peak is not None else None
    if pcie is None and peak is not None:
        pcie = peak.pcie_gbps
    if tflops is None or pcie is None:
        raise InputError(f"no tensor peak or PCIe figure for GPU {entry.name}",
                         fix="Add tensor_tflops and pcie_gbps for it to profiles/gpus.yaml "
                             "(or gpu_peaks in profiles/engines/speed.yaml).")
    return GpuSpeed(name=entry.name, memory_bandwidth_gbps=float(entry.memory_bandwidth_gbps),
                    tensor_tflops=tflops, interconnect=entry.interconnect,
                    nvlink_gbps=entry.nvlink_gbps, pcie_gbps=float(pcie),
                    compute_capability=entry.compute_capability)
