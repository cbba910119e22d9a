"""Where the launcher's data files live, installed or in a checkout.

A wheel ships `profiles/` inside the package as `launcher/_profiles` (pyproject force-include);
a source checkout has it at the repository root. One lookup keeps every reader agreeing.
"""

from __future__ import annotations

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
