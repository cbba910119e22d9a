"""The user's request as settled values, each with where it came from.

Precedence: command line > environment (`LAUNCHER_<NAME>`) > the model profile's
`launcher_defaults:` > built-in defaults. `launcher.options` declares every option, reads the
first two layers and parses each value; this module picks the layer and keeps provenance, so
`--explain`, `/plan` and the report can say why a value is what it is.
Secrets are handled by `launcher.redact`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    source: str  # "cli", "env:LAUNCHER_X", "profile:<key>", "default"

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source}


def env_name(name: str) -> str:
    return f"LAUNCHER_{name.upper()}"


def settle(params: Mapping[str, Any], sources: Mapping[str, str],
           profile_defaults: Mapping[str, Any], profile_key: str | None) -> dict[str, Setting]:
    """`params` holds each value as parsed and `sources` where it was read: "cli", "env" or
    "default"; a profile default replaces a built-in default only."""
    out: dict[str, Setting] = {}
    for name, value in params.items():
        src = sources.get(name, "default")
        if src == "cli":
            out[name] = Setting(name, value, "cli")
        elif src == "env":
            out[name] = Setting(name, value, f"env:{env_name(name)}")
        elif name in profile_defaults:
            out[name] = Setting(name, profile_defaults[name], f"profile:{profile_key}")
        else:
            out[name] = Setting(name, value, "default")
    return out
