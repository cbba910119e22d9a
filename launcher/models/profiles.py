"""Built-in model profiles: `profiles/models/*.yaml`, found by alias, repo id or file name.

A profile embeds the architecture keys of the model's public config.json verbatim under
`config:`, so it is normalized by the same code as a config.json on disk. Published facts that
config.json lacks (exact parameter count, known pre-quantized variants) sit beside it.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import ModelConfigError
from launcher.paths import profiles_dir


@dataclass(frozen=True)
class Variant:
    name: str
    repo_id: str
    quantization_config: dict[str, Any]


@dataclass(frozen=True)
class Profile:
    key: str  # file stem, the canonical alias
    name: str
    aliases: tuple[str, ...]
    repo_id: str | None
    config: dict[str, Any]
    params: int | None
    params_source: str | None
    path: Path
    variants: tuple[Variant, ...] = field(default=())
    implicit_defaults: dict[str, Any] = field(default_factory=dict)
    local_dir: str | None = None  # profiles that point at a model directory (e.g. the demo)
    # Serving defaults for this model (launcher option → value): below CLI and environment.
    launcher_defaults: dict[str, Any] = field(default_factory=dict)


def _load(path: Path) -> Profile:
    try:
        # libyaml's loader when PyYAML was built with it: ten times faster, and every plan
        # reads every profile to resolve aliases.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as e:
        raise ModelConfigError(f"{path}: cannot read the profile ({e})",
                               fix="Fix the YAML syntax of the profile.") from e
    if not isinstance(raw, dict) or (not isinstance(raw.get("config"), dict) and \
            not raw.get("local_dir")):
        raise ModelConfigError(f"{path}: a profile needs a `config:` mapping",
                               fix="Copy the model's config.json keys under `config:`.")
    variants = tuple(Variant(str(v.get("name")), str(v.get("repo_id")),
                             _typed(v, "quantization_config", dict, path) or {})
                     for v in _typed(raw, "variants", list, path) or [] if isinstance(v, dict))
    aliases = tuple(str(a).lower() for a in _typed(raw, "aliases", list, path) or [])
    params = _typed(raw, "params", int, path)
    if params is not None and params < 1:
        raise ModelConfigError(f"{path}: `params` is {params}, expected a positive count",
                               fix="Correct the profile.")
    return Profile(key=path.stem, name=str(raw.get("name") or path.stem),
                   aliases=aliases, repo_id=_typed(raw, "repo_id", str, path),
                   config=raw.get("config") or {}, params=params,
                   params_source=_typed(raw, "params_source", str, path), path=path,
                   variants=variants,
                   implicit_defaults=dict(_typed(raw, "implicit_defaults", dict, path) or {}),
                   local_dir=_typed(raw, "local_dir", str, path),
                   launcher_defaults=dict(_typed(raw, "launcher_defaults", dict, path) or {}))


def _typed(raw: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """`raw[key]` when absent (None) or of `kind` (a bool is not an int); else a named error."""
    value = raw.get(key)
    if value is None or (isinstance(value, kind) and not (isinstance(value, bool)
                                                          and kind is not bool)):
        return value
    raise ModelConfigError(f"{path}: `{key}` is {value!r}, expected {kind.__name__}",
                           fix="Correct the profile.")


@functools.cache
def all_profiles() -> tuple[Profile, ...]:
    return tuple(_load(p) for p in sorted((profiles_dir() / "models").glob("*.yaml")))


@functools.cache
def _index() -> dict[str, Profile]:
    idx: dict[str, Profile] = {}
    for p in all_profiles():
        names = {p.key.lower(), *p.aliases}
        if p.repo_id:
            names |= {p.repo_id.lower(), p.repo_id.split("/")[-1].lower()}
        for n in names:
            idx.setdefault(n, p)
    return idx


def find_profile(name: str) -> Profile | None:
    return _index().get(name.strip().lower())


def closest_names(name: str, n: int = 3) -> list[str]:
    return difflib.get_close_matches(name.strip().lower(), list(_index()), n=n, cutoff=0.5)


def profile_config(p: Profile) -> dict[str, Any]:
    """The profile's config with its documented implicit defaults filled in where absent.

    `implicit_defaults` mirrors the config's shape (a `text_config:` block merges into the
    text config); `source` says where the defaults come from and is not a config key.
    """
    config = dict(p.config)
    for key, value in p.implicit_defaults.items():
        if key == "source":
            continue
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merged = dict(config[key])
            for k, v in value.items():
                merged.setdefault(k, v)
            config[key] = merged
        else:
            config.setdefault(key, value)
    return config
