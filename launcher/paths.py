"""Where the launcher's data files live, installed or in a checkout.

A wheel ships `profiles/` inside the package as `launcher/_profiles` (pyproject force-include);
a source checkout has it at the repository root. One lookup keeps every reader agreeing.
"""

from __future__ import annotations

import os
from pathlib import Path

import launcher


def profiles_dir() -> Path:
    """The `profiles/` directory: `launcher/_profiles` when installed from a wheel, else the
    repository's top-level `profiles/`."""
    package = Path(launcher.__file__).parent
    installed = package / "_profiles"
    if installed.is_dir():
        return installed
    return Path(launcher.__file__).parents[1] / "profiles"


def cache_dir() -> Path:
    """The launcher's own cache (hub metadata, demo model, logs, fit report):
    $LAUNCHER_CACHE_DIR, else $XDG_CACHE_HOME/launcher, else ~/.cache/launcher."""
    base = os.environ.get("LAUNCHER_CACHE_DIR")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "launcher"
