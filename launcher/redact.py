"""Secrets never leave this process in clear.

HF tokens, the control API's token and vLLM's API key are collected from the environment and
from passthrough flags; `redact` / `redact_obj` replace them in anything written (engine log,
report, fit report) or served (control API, status page).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LAUNCHER_API_TOKEN", "VLLM_API_KEY")
SECRET_FLAGS = ("--api-key", "--hf-token")
REDACTED = "***"


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

