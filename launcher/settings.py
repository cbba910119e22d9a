"""The user's request as settled values, each with where it came from.

Precedence: command line > environment (`LAUNCHER_<NAME>`) > the model profile's
`launcher_defaults:` > built-in defaults. The CLI layer reads the first two from click's own
record of each parameter's source; this module adds the profile layer and keeps provenance, so
`--explain`, `/plan` and the report can say why a value is what it is.
Secrets (HF tokens, the API token) never leave this process in clear: `redact` replaces them in
anything written or served.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LAUNCHER_API_TOKEN", "VLLM_API_KEY")
SECRET_FLAGS = ("--api-key", "--hf-token")
REDACTED = "***"


@dataclass(frozen=True)
class Setting:
    name: str
    value: Any
    source: str  # "cli", "env:LAUNCHER_X", "profile:<key>", "default"

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


def env_name(name: str) -> str:
    return f"LAUNCHER_{name.upper()}"


def settle(params: Mapping[str, Any], sources: Mapping[str, str],
           profile_defaults: Mapping[str, Any], profile_key: str | None) -> dict[str, Setting]:
    """`sources` maps each param to "cli", "env" or "default" (as parsed); a profile default
    replaces a built-in default only."""
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


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return [v for k in SECRET_ENV if (v := env.get(k)) and len(v) >= 4]


def secret_flag_values(args: Iterable[str]) -> list[str]:
    args = list(args)
    out = []
    for i, a in enumerate(args):
        for flag in SECRET_FLAGS:
            if a == flag and i + 1 < len(args):
                out.append(args[i + 1])
            elif a.startswith(flag + "="):
                out.append(a.split("=", 1)[1])
    return [s for s in out if len(s) >= 4]


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in sorted(set(secrets), key=len, reverse=True):
        if s:
            text = text.replace(s, REDACTED)
    return text


def redact_obj(obj: Any, secrets: Iterable[str]) -> Any:
    """A JSON-able object with every secret replaced, wherever it sits."""
    secrets = list(secrets)
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, list | tuple):
        return [redact_obj(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {redact_obj(k, secrets): redact_obj(v, secrets) for k, v in obj.items()}
    return obj

