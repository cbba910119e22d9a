"""The Hugging Face Hub as a model source: config.json plus exact tensor bytes.

Order of sources, cheapest and most exact first, so that a machine that ran once online keeps
planning with the same numbers offline (DESIGN §3: headers when present, else architecture):

    config.json   HF cache (never touches the network) → the Hub (unless offline)
    tensors       safetensors headers of a complete checkpoint in the cached snapshot
                  → our stored table of the Hub's headers ($LAUNCHER_CACHE_DIR/hub-metadata/)
                  → the Hub's headers (HTTP range reads, then stored for later offline runs)
                  → None, with a note: the memory model counts weights from the architecture

Every fallback is recorded in `HubModel.notes` (STYLE 12). Expected failures (not found, gated,
offline, no network) become `UnknownModelError`/`InputError` with a fix, never a traceback.
huggingface_hub is imported inside functions so `--help` and built-in profiles stay fast.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import (
    CheckpointError,
    InputError,
    LauncherError,
    ModelConfigError,
    UnknownModelError,
)
from launcher.models.safetensors_meta import missing_shards, read_checkpoint
from launcher.models.spec import DTYPE_BYTES, TensorInfo
from launcher.paths import cache_dir

NO_HEADERS_NOTE = "weights counted from architecture: no safetensors headers in cache"
# Hub reads that must fail fast. Connection refused and DNS failures are immediate; a
# black-holed route waits this long at most (huggingface_hub's default is 10 s,
# HF_HUB_ETAG_TIMEOUT).
PROBE_TIMEOUT_S = 5.0
_STORE_FORMAT = 1
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Hub naming rules: alphanumerics, '-', '_', '.'; no leading/trailing '-'/'.', no '--'/'..'.
_NAME_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_NAME_PART}/{_NAME_PART}$")


@dataclass(frozen=True)
class HubModel:
    """What the Hub (or its local cache) told us about one repo, before normalization."""

    repo_id: str
    revision: str | None  # as requested; None = the default branch
    config: dict[str, Any]
    tensors: tuple[TensorInfo, ...] | None  # None: headers unavailable, count from architecture
    snapshot_dir: Path | None
    from_cache: bool  # config.json came from the local HF cache without a network call
    notes: tuple[str, ...] = ()
    commit: str | None = None  # the snapshot's commit hash, when known


def looks_like_repo_id(s: str) -> bool:
    """True for `org/name` that is not an existing local path (a local directory wins)."""
    if not _REPO_ID.match(s) or "--" in s or ".." in s:
        return False
    return not Path(s).expanduser().exists()


def metadata_cache_path(repo_id: str, revision: str | None = None) -> Path:
    """Where the Hub's safetensors table for `repo_id[@revision]` is stored for offline runs."""
    root = cache_dir()
    name = repo_id.replace("/", "--")
    if revision:
        name += "@" + re.sub(r"[^A-Za-z0-9._-]", "--", revision)
    return root / "hub-metadata" / f"{name}.json"


def is_offline() -> bool:
    """HF offline mode, read both from huggingface_hub and from the environment now.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so a variable set later (a test, a
    wrapper script) would otherwise be ignored.
    """
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or env


def hf_cache_dir(cache_dir: Path | None = None) -> Path:
    """The HF hub cache: `cache_dir`, else HF_HUB_CACHE / HF_HOME as set now (huggingface_hub
    froze them at import), else its default."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE).expanduser()


def fetch_hub_model(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
) -> HubModel:
    """Read `repo_id`'s config.json and, where available, its exact tensor table.

    `cache_dir` overrides the HF cache (default: huggingface_hub's HF_HUB_CACHE).
    """
    offline = is_offline()
    notes: list[str] = []
    cfg_path, from_cache = _config_path(repo_id, revision, token, cache_dir, offline)
    snapshot_dir = cfg_path.parent
    commit = snapshot_dir.name if _COMMIT.match(snapshot_dir.name) else None
    where = f"snapshot {commit[:12]}" if commit else str(snapshot_dir)
    if from_cache:
        notes.append(f"config.json read from the local HF cache ({where})")
    else:
        notes.append(f"config.json downloaded from the Hub ({where})")
    config = _read_config(cfg_path, repo_id)
    tensors = _tensor_table(repo_id, revision, token, snapshot_dir, commit, offline, notes)
    return HubModel(
        repo_id=repo_id,
        revision=revision,
        config=config,
        tensors=None if tensors is None else tuple(tensors),
        snapshot_dir=snapshot_dir,
        from_cache=from_cache,
        notes=tuple(notes),
        commit=commit,
    )


# --- config.json -----------------------------------------------------------------------------


def _source_fix(repo_id: str) -> str:
    return (
        "use a built-in profile (`launcher models`), a local directory with config.json, "
        f"or run once online / `hf download {repo_id} config.json` "
        "(`huggingface-cli download` with huggingface_hub < 1.0)"
    )


def _unavailable(repo_id: str, why: str) -> UnknownModelError:
    return UnknownModelError(
        f"cannot read {repo_id}: {why}",
        fix=_source_fix(repo_id),
        hint=f"hf download {repo_id} config.json",
    )


def _config_path(
    repo_id: str, revision: str | None, token: str | None, cache_dir: Path | None, offline: bool
) -> tuple[Path, bool]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir}
    try:
        return Path(hf_hub_download(repo_id, "config.json", local_files_only=True, **kwargs)), True
    except HFValidationError as e:
        raise UnknownModelError(
            f"{repo_id!r} is not a valid Hugging Face repo id ({e})",
            fix=_source_fix("ORG/NAME"),
            hint="launcher models",
        ) from e
    except LocalEntryNotFoundError:
        pass
    where = hf_cache_dir(cache_dir)
    if offline:
        raise _unavailable(repo_id, f"offline mode (HF_HUB_OFFLINE=1) and not in the HF cache "
                                    f"{where}")
    try:
        _probe(repo_id, "config.json", revision, token)
        return Path(hf_hub_download(repo_id, "config.json", token=token, **kwargs)), False
    except _hub_errors() as e:
        raise _hub_error(e, repo_id, revision, where) from e


def _probe(repo_id: str, filename: str, revision: str | None, token: str | None) -> None:
    """One HEAD of the file, never retried, so that an unreachable Hub fails at once.

    hf_hub_download retries a HEAD that failed on the network, with nothing cached, five more
    times with backoff (1 + 2 + 4 + 8 + 8 s: huggingface_hub 2.4 file_download.py
    `_hf_hub_download_to_cache_dir` → `_get_metadata_or_catch_error(retry_on_errors=True)` →
    utils/_http.py `http_backoff`), ≈ 23 s before it reports what one failed HEAD already says.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), token=token,
                         timeout=PROBE_TIMEOUT_S)


def _read_config(path: Path, repo_id: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # incl. bad UTF-8/JSON, huge ints
        raise ModelConfigError(
            f"config.json of {repo_id} ({path}) is unreadable: {e}",
            fix=f"re-download it: `hf download {repo_id} config.json --force-download`",
            hint=f"python -m json.tool {path}",
        ) from e
    if not isinstance(config, dict):
        raise ModelConfigError(
            f"config.json of {repo_id} ({path}) is not a JSON object",
            fix="use a repo with a transformers config.json, or a built-in profile",
            hint="launcher models",
        )
    return config


def _hub_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Hub call raises for expected failures: HTTP statuses and transport."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        OfflineModeIsEnabled,
    )

    return (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, HFValidationError,
            *transport_errors())


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a Hub call raises when the Hub cannot be reached at all."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    # The HTTP client changed across huggingface_hub versions (requests → httpx → httpx2).
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _hub_error(e: BaseException, repo_id: str, revision: str | None,
               cache: Path | None = None) -> LauncherError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return InputError(
            f"{repo_id} is gated on the Hugging Face Hub and this token has no access",
            fix=f"accept the terms on https://huggingface.co/{repo_id}, then `hf auth login` or "
            "set HF_TOKEN; or " + _source_fix(repo_id),
            hint="hf auth whoami",
        )
    if isinstance(e, RevisionNotFoundError):
        return _unavailable(repo_id, f"revision {revision!r} does not exist on the Hub")
    if isinstance(e, RepositoryNotFoundError):
        return _unavailable(
            repo_id, "no such repo on the Hugging Face Hub (or it is private and the token lacks "
            "access)"
        )
    if isinstance(e, RemoteEntryNotFoundError):
        return ModelConfigError(
            f"{repo_id} has no config.json (not a transformers model repo?)",
            fix="use a repo with a transformers config.json, or a built-in profile",
            hint="launcher models",
        )
    if isinstance(e, HFValidationError):
        return _unavailable(repo_id, f"not a valid repo id ({e})")
    if isinstance(e, OfflineModeIsEnabled):
        return _unavailable(repo_id, "offline mode is enabled and it is not in the local HF cache")
    if isinstance(e, LocalEntryNotFoundError):
        cause = e.__cause__ or e.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return _unavailable(repo_id, f"the Hub is unreachable{detail} and it is not in the "
                                     f"HF cache {cache or hf_cache_dir()}")
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else "?"
        cls = InputError if status in (401, 403) else UnknownModelError
        return cls(
            f"the Hub answered HTTP {status} for {repo_id}",
            fix=("check HF_TOKEN / `hf auth login`; or " if status == 401 else "")
            + _source_fix(repo_id),
            hint="hf auth whoami",
        )
    return _unavailable(repo_id, f"the Hub is unreachable ({type(e).__name__}: {e}) and it is "
                                 f"not in the HF cache {cache or hf_cache_dir()}")


# --- tensor table ----------------------------------------------------------------------------


def _tensor_table(
    repo_id: str,
    revision: str | None,
    token: str | None,
    snapshot_dir: Path,
    commit: str | None,
    offline: bool,
    notes: list[str],
) -> list[TensorInfo] | None:
    missing = missing_shards(snapshot_dir)
    if missing:
        notes.append(f"HF cache lacks {len(missing)} shard(s) (e.g. {missing[0]}); not reading "
                     "a partial checkpoint")
    else:
        tensors = read_checkpoint(snapshot_dir)
        if tensors is not None:
            notes.append("tensors from safetensors headers in the HF cache")
            return tensors

    store = metadata_cache_path(repo_id, revision)
    stored = _load_stored(store, notes)
    if stored is not None:
        stored_commit, tensors = stored
        if stored_commit == commit or offline:
            if stored_commit != commit:
                notes.append(f"stored tensor table is for commit {stored_commit}, config.json "
                             f"for {commit}: offline, using it anyway")
            notes.append(f"tensors from the Hub's safetensors headers stored in {store}")
            return tensors
    if offline:
        notes.append(NO_HEADERS_NOTE)
        return None

    tensors = _fetch_remote_table(repo_id, commit or revision, token, notes)
    if tensors is not None:
        _store(store, repo_id, revision, commit, tensors, notes)
    elif stored is not None:
        notes.append(f"using the stored tensor table of commit {stored[0]} from {store} "
                     f"(config.json is commit {commit})")
        return stored[1]
    return tensors


def _fetch_remote_table(
    repo_id: str, revision: str | None, token: str | None, notes: list[str]
) -> list[TensorInfo] | None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

    try:
        # A fresh HfApi reads HF_ENDPOINT now; the module-level helper froze it at import.
        meta = HfApi(token=token).get_safetensors_metadata(repo_id, revision=revision)
    except NotASafetensorsRepoError:
        notes.append("weights counted from architecture: the repo has no model.safetensors "
                     "or model.safetensors.index.json")
        return None
    except SafetensorsParsingError as e:
        raise CheckpointError(
            f"a safetensors header of {repo_id} on the Hub is corrupt: {e}",
            fix="pick another revision of the repo, or a built-in profile (`launcher models`)",
            hint=f"hf download {repo_id} --include '*.safetensors*'",
        ) from e
    except _hub_errors() as e:
        notes.append(f"weights counted from architecture: could not read safetensors headers "
                     f"from the Hub ({type(e).__name__}: {e})")
        return None
    return tensors_from_hub_metadata(meta, repo_id)


def tensors_from_hub_metadata(meta: Any, repo_id: str) -> list[TensorInfo]:
    """Convert huggingface_hub's SafetensorsRepoMetadata into our TensorInfo list.

    Files in name order, tensors in header order, like `read_checkpoint` on the same files.
    """
    tensors: list[TensorInfo] = []
    for filename in sorted(meta.files_metadata):
        for name, t in meta.files_metadata[filename].tensors.items():
            if t.dtype not in DTYPE_BYTES:
                raise CheckpointError(
                    f"{repo_id}/{filename}: tensor {name!r} has unknown dtype {t.dtype!r}",
                    fix="add the dtype to DTYPE_BYTES if it is a real format, or use a profile",
                    hint="launcher models",
                )
            tensors.append(TensorInfo(name=name, dtype=t.dtype, shape=tuple(t.shape)))
    return tensors


def _load_stored(path: Path, notes: list[str]) -> tuple[str | None, list[TensorInfo]] | None:
    """Our stored table, or None. A damaged file is our own cache: note it and refetch."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != _STORE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        tensors = [TensorInfo(name=n, dtype=d, shape=tuple(s)) for n, d, s in data["tensors"]]
        unknown = {t.dtype for t in tensors} - DTYPE_BYTES.keys()
        if unknown:
            raise ValueError(f"unknown dtype(s) {sorted(unknown)}")
        return data.get("commit"), tensors
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        notes.append(f"ignored damaged stored tensor table {path} ({type(e).__name__}: {e})")
        return None


def _store(
    path: Path,
    repo_id: str,
    revision: str | None,
    commit: str | None,
    tensors: list[TensorInfo],
    notes: list[str],
) -> None:
    data = {
        "format": _STORE_FORMAT,
        "repo_id": repo_id,
        "revision": revision,
        "commit": commit,
        "tensors": [[t.name, t.dtype, list(t.shape)] for t in tensors],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent or interrupted run never reads half a table.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as e:
        notes.append(f"tensors from the Hub's safetensors headers; could not store them in "
                     f"{path} ({e}), so offline runs will count weights from architecture")
        return
    notes.append(f"tensors from the Hub's safetensors headers, stored in {path} for offline runs")
