"""One resolver for every way a user names a model: profile alias, local directory, Hub id.

Order: an existing local path wins (it is unambiguous), then a built-in profile alias, then a
Hugging Face repo id. An unknown name fails with the closest profile names.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from launcher.errors import ModelConfigError, UnknownModelError
from launcher.models.config import spec_from_config
from launcher.models.profiles import closest_names, find_profile, profile_config
from launcher.models.safetensors_meta import read_checkpoint
from launcher.models.spec import ModelSpec, TensorInfo

MAX_CONFIG_BYTES = 16 * 1024 * 1024


def resolve_model(name: str) -> ModelSpec:
    if not name or not name.strip():
        raise UnknownModelError("No model given", fix="Name a profile, a directory or a repo id.",
                                hint="launcher models")
    path = Path(name).expanduser()
    if path.exists():
        return spec_from_dir(path)
    profile = find_profile(name)
    if profile is not None:
        if profile.local_dir == "builtin:demo":
            from launcher.models.demo import ensure_demo_model

            return spec_from_dir(ensure_demo_model(), name=profile.key)
        if profile.local_dir:
            local = Path(profile.local_dir).expanduser()
            if local.exists():
                return spec_from_dir(local, name=profile.key)
        spec = spec_from_config(profile_config(profile), name=profile.key,
                                source=f"profile:{profile.key}", origin=str(profile.path))
        if not profile.params:
            return replace(spec, repo_id=profile.repo_id)
        return replace(spec, repo_id=profile.repo_id, param_count=int(profile.params),
                       param_count_source=profile.params_source or "profile")
    from launcher.models.hub import looks_like_repo_id

    if looks_like_repo_id(name):
        from launcher.models.hub import fetch_hub_model

        hub = fetch_hub_model(name)
        spec = spec_from_config(hub.config, name=name, source=f"hub:{name}",
                                origin=f"{name}/config.json")
        spec = _with_tensors(replace(spec, repo_id=name), hub.tensors, f"hub:{name}")
        return replace(spec, assumptions=(*spec.assumptions, *hub.notes))
    close = closest_names(name)
    raise UnknownModelError(
        f"Unknown model {name!r}: not a built-in profile, a local directory, or an org/name "
        "repo id",
        fix=("Did you mean: " + ", ".join(close) + "?") if close else
        "Use a built-in profile, a directory with config.json, or a Hugging Face repo id.",
        hint="launcher models   (list the built-in profiles)")


def spec_from_dir(path: Path, name: str | None = None) -> ModelSpec:
    if path.is_file():
        raise ModelConfigError(f"{path} is a file; expected a model directory with config.json",
                               fix=f"Pass the directory: {path.parent}")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise ModelConfigError(f"{path} has no config.json",
                               fix="Point at a Hugging Face model directory (config.json plus "
                                   "*.safetensors).")
    try:
        st = cfg_path.stat()
        # Real config.json files are a few KB in a regular file: never read gigabytes, nor a
        # device or pipe (a link to /dev/zero) that would never end.
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
            what = (f"{st.st_size:,} bytes (limit {MAX_CONFIG_BYTES:,})"
                    if stat.S_ISREG(st.st_mode) else "not a regular file")
            raise ModelConfigError(f"{cfg_path}: {what}, not a model config",
                                   fix="Restore the file from the model's repository.")
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelConfigError(f"{cfg_path}: not valid JSON (line {e.lineno}: {e.msg})",
                               fix="Restore the file from the model's repository.") from e
    except (OSError, ValueError, RecursionError) as e:
        # ValueError: bytes that are not UTF-8, or an integer literal too long to convert.
        raise ModelConfigError(f"{cfg_path}: unreadable ({type(e).__name__}: {str(e)[:120]})",
                               fix="Restore the file from the model's repository.") from e
    spec = spec_from_config(config, name=name or path.name, source=f"local:{path}",
                            origin=str(cfg_path))
    return _with_tensors(spec, read_checkpoint(path), str(path))


def _with_tensors(spec: ModelSpec, tensors: Sequence[TensorInfo] | None, where: str) -> ModelSpec:
    """The spec with the checkpoint's exact tensors, or with a note that there were none."""
    if not tensors:
        return replace(spec, assumptions=(*spec.assumptions, f"{where}: no safetensors headers; "
                                          "weights counted from the architecture"))
    return replace(spec, tensors=tuple(tensors), param_count=sum(t.numel for t in tensors),
                   param_count_source=f"safetensors headers ({where})")
