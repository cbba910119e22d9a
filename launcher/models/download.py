"""A Hub model's files onto local disk before the engine starts.

vLLM downloads a model it does not find in the HF cache itself, inside its start-up, so a large
download would count against the launcher's ready timeout and a full disk would surface as an
engine crash. `serve` therefore fetches the files first (`ensure_model_files`):

    in the HF cache already (refs → snapshot with config.json and every shard)  → nothing to do
    offline (HF_HUB_OFFLINE)                → UnknownModelError (exit 2): model, cache, fix
    the Hub's file list with sizes          one request, never retried (a down Hub fails at once)
    need = the files vLLM reads, not yet cached (less a resumable `<etag>.incomplete`)
    need > free space where the cache is    → DoesNotFitError (exit 3): need, free, path, fix
    snapshot_download(allow_patterns=those files)  progress bars; a transfer that breaks off is
                                            resumed with a Range request within the run

Resuming across runs depends on huggingface_hub: up to 1.x it appended to `blobs/<etag>.incomplete`
and a later run resumed it; 2.x downloads into a process-unique `<etag>.<uuid>.incomplete`
(huggingface_hub PR #4228, file_download.py `_download_to_tmp_and_move`), so a killed run
leaves a file no later run reuses. Both are counted: the first lowers the need, the second is
named in the summary and the disk error as space to reclaim.

Only the files vLLM reads are fetched (`wanted_files`): the safetensors checkpoint (or, when a
repo has none, the `.bin`/`.pt` weights vLLM falls back to), config, generation config,
tokenizer and chat-template files, and remote code; never `.bin`/`.pth` duplicates beside
safetensors, nor subfolders (`original/`, other formats). `serve --dry-run` states what would be
fetched without touching the network (`statement`), from the weight bytes the plan already
knows from the safetensors headers.

The pure parts (`wanted_files`, `Download`, `check_space`) take readings and return decisions;
huggingface_hub is imported inside the functions that call it.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import DoesNotFitError, LauncherError, UnknownModelError
from launcher.models.hub import PROBE_TIMEOUT_S, hf_cache_dir, is_offline, transport_errors
from launcher.models.safetensors_meta import missing_shards
from launcher.units import fmt_gib

# Small files vLLM, transformers and the tokenizer read: config.json, generation_config.json,
# tokenizer.json / tokenizer_config.json / special_tokens_map.json / added_tokens.json,
# tokenizer.model (sentencepiece), vocab.json, merges.txt, vocab.txt, *.tiktoken, chat
# templates (chat_template.json / .jinja), preprocessor and processor configs, remote code.
SMALL_FILES = ("*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt", "*.py")
# What vLLM's default loader falls back to without safetensors (model_loader/default_loader.py:
# allow_patterns "*.safetensors", then "*.bin", "*.pt").
FALLBACK_WEIGHTS = (".bin", ".pt")


def wanted_files(names: Iterable[str]) -> list[str]:
    """The repo files vLLM reads, in name order: top-level only; safetensors when the repo has
    them (without Mistral's consolidated copy beside HF-format shards), else .bin/.pt."""
    top = sorted(n for n in set(names) if "/" not in n)
    weights = [n for n in top if n.endswith(".safetensors")]
    if any(n.startswith("model") for n in weights):
        weights = [n for n in weights if not n.startswith("consolidated")]
    if weights:
        dropped = {n for n in top if n.endswith(tuple(f"{s}.index.json" for s in FALLBACK_WEIGHTS))}
    else:
        weights = [n for n in top if n.endswith(FALLBACK_WEIGHTS)]
        dropped = set()
    small = [n for n in top if n not in dropped and any(fnmatch.fnmatchcase(n, p) for p in SMALL_FILES)]
    return sorted({*weights, *small})


@dataclass(frozen=True)
class RemoteFile:
    """One file of the repo as the Hub lists it."""

    name: str
    size: int | None  # bytes; None when the listing had no size
    blob: str | None = None  # the cache's blob name: LFS sha256, else the git blob id


@dataclass(frozen=True)
class Download:
    """What fetching a repo into the cache takes: the decision, before any byte moves."""

    repo_id: str
    revision: str
    commit: str
    cache_dir: Path
    files: tuple[RemoteFile, ...]  # the wanted files, cached or not
    cached: frozenset[str]  # names already in the snapshot
    partial_bytes: int = 0  # in `<etag>.incomplete` blobs the next download resumes
    leftover_bytes: int = 0  # in `<etag>.<id>.incomplete` blobs no download reuses
    weight_bytes: int | None = None  # the checkpoint's tensor bytes, for files without a size

    @property
    def to_fetch(self) -> tuple[RemoteFile, ...]:
        return tuple(f for f in self.files if f.name not in self.cached)

    @property
    def need_bytes(self) -> int:
        """Bytes still to land on disk. When the listing gave a safetensors file no size, the
        checkpoint's tensor bytes (from the headers) less the sized weight files stand in for
        it; other unsized files count 0."""
        fetch = self.to_fetch
        known = sum(f.size or 0 for f in fetch)
        unsized = [f for f in fetch if f.size is None and f.name.endswith(".safetensors")]
        if unsized and self.weight_bytes:
            sized_weights = sum(f.size or 0 for f in self.files if f.name.endswith(".safetensors")
                                and f.size is not None)
            known += max(0, self.weight_bytes - sized_weights)
        return max(0, known - self.partial_bytes)

    def leftovers(self) -> str:
        """A note on space killed downloads hold, or ''."""
        if not self.leftover_bytes:
            return ""
        where = _repo_dir(self.cache_dir, self.repo_id) / "blobs"
        return (f"{fmt_gib(self.leftover_bytes)} in {where}/*.incomplete is left from interrupted "
                "downloads that huggingface_hub does not resume; delete it when no download runs")

    def summary(self) -> str:
        fetch = self.to_fetch
        resumed = f" ({fmt_gib(self.partial_bytes)} more already there, resumed)" \
            if self.partial_bytes else ""
        left = f"; {self.leftovers()}" if self.leftover_bytes else ""
        return (f"downloading {self.repo_id}@{self.commit[:12]}: {len(fetch)} of {len(self.files)} "
                f"files, {fmt_gib(self.need_bytes)} to fetch{resumed}, into {self.cache_dir}{left}")


def check_space(need: int, free: int, where: Path, repo_id: str, note: str = "") -> None:
    """DoesNotFitError (exit 3) when `need` bytes exceed `free` at `where`."""
    if need <= free:
        return
    raise DoesNotFitError(
        f"{repo_id} does not fit on disk: the download needs {fmt_gib(need)} ({need} bytes), "
        f"{where} has {fmt_gib(free)} ({free} bytes) free",
        fix=f"free {fmt_gib(need - free)} there, or set HF_HOME (or HF_HUB_CACHE) to a disk "
            "with room; nothing was downloaded" + (f" ({note})" if note else ""),
        hint=f"df -h {where}")


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds (or will hold) `path`."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}"


def cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> Path | None:
    """The cached snapshot of `repo_id@revision` when it holds config.json and a complete
    checkpoint (every shard its index or names declare); None otherwise. No network."""
    repo = _repo_dir(cache, repo_id)
    rev = revision or "main"
    commit = rev if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev) else None
    if commit is None:
        try:
            commit = (repo / "refs" / rev).read_text().strip()
        except OSError:
            return None
    snap = repo / "snapshots" / commit
    if not (snap / "config.json").is_file():
        return None
    has_weights = any(snap.glob("*.safetensors")) or any(
        p.name.endswith(FALLBACK_WEIGHTS) for p in snap.iterdir())
    try:
        complete = has_weights and not missing_shards(snap)
    except LauncherError:  # an unreadable index: not a usable snapshot
        return None
    return snap if complete else None


def statement(repo_id: str, revision: str | None = None, weight_bytes: int | None = None,
              cache_dir: Path | None = None) -> str:
    """What `serve` would fetch before the engine starts, said without the network."""
    cache = hf_cache_dir(cache_dir)
    snap = cached_snapshot(repo_id, revision, cache)
    if snap is not None:
        return f"{repo_id} is in the HF cache ({snap}): nothing to download"
    size = f"{fmt_gib(weight_bytes)} of safetensors weights" if weight_bytes else "its weights"
    free = free_bytes(cache)
    text = (f"serve would download {repo_id} first ({size} plus config and tokenizer files) "
            f"into {cache} ({fmt_gib(free)} free)")
    if weight_bytes and weight_bytes > free:
        text += f": it does not fit there (need ≥ {fmt_gib(weight_bytes)}); free space or set HF_HOME"
    elif is_offline():
        text += ": offline (HF_HUB_OFFLINE=1), so serve would stop"
    return text


def _offline_error(repo_id: str, cache: Path, why: str) -> UnknownModelError:
    return UnknownModelError(
        f"cannot fetch {repo_id}: {why}, and it is not complete in the HF cache {cache}",
        fix="go online (unset HF_HUB_OFFLINE; or set HF_ENDPOINT to a reachable mirror), or "
            f"download it where there is network (`hf download {repo_id}`) and point HF_HOME "
            "at that cache",
        hint=f"hf download {repo_id} --cache-dir {cache}")


def remote_files(repo_id: str, revision: str | None, token: str | None, cache: Path
                 ) -> tuple[str, list[RemoteFile]]:
    """(commit, every file with its size) from one Hub request (`model_info` with file
    metadata), which huggingface_hub does not retry: an unreachable Hub fails at once."""
    from huggingface_hub import HfApi

    from launcher.models.hub import _hub_error, _hub_errors

    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision, files_metadata=True,
                                             timeout=PROBE_TIMEOUT_S)
    except transport_errors() as e:
        raise _offline_error(repo_id, cache, f"the Hub is unreachable ({type(e).__name__}: "
                                             f"{e})") from e
    except _hub_errors() as e:
        raise _hub_error(e, repo_id, revision) from e
    files = []
    for s in info.siblings or ():
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        files.append(RemoteFile(name=s.rfilename, size=s.size, blob=sha or s.blob_id))
    if not info.sha:
        raise _offline_error(repo_id, cache, "the Hub named no commit for it")
    return info.sha, files


def incomplete_bytes(repo_id: str, cache: Path, files: Sequence[RemoteFile]) -> tuple[int, int]:
    """(resumable, leftover): bytes in `<etag>.incomplete` blobs of these files, which
    huggingface_hub ≤ 1.x resumes, and in process-unique `<etag>.<id>.incomplete` ones, which
    2.x leaves behind when a run is killed and never reuses."""
    blobs = _repo_dir(cache, repo_id) / "blobs"
    resumable = sum(p.stat().st_size for f in files if f.blob
                    for p in [blobs / f"{f.blob}.incomplete"] if p.is_file())
    leftover = sum(p.stat().st_size for p in blobs.glob("*.*.incomplete") if p.is_file()) \
        if blobs.is_dir() else 0
    return resumable, leftover


def plan_download(repo_id: str, revision: str | None = None, *, token: str | None = None,
                  cache_dir: Path | None = None, weight_bytes: int | None = None) -> Download:
    """The Download `ensure_model_files` would do (one Hub request, nothing written)."""
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_dir(cache_dir)
    if is_offline():
        raise _offline_error(repo_id, cache, "offline mode (HF_HUB_OFFLINE=1)")
    commit, listing = remote_files(repo_id, revision, token, cache)
    names = set(wanted_files(f.name for f in listing))
    files = tuple(f for f in listing if f.name in names)
    cached = frozenset(f.name for f in files if isinstance(
        try_to_load_from_cache(repo_id, f.name, cache_dir=str(cache), revision=commit), str))
    resumable, leftover = incomplete_bytes(repo_id, cache, [f for f in files if f.name not in cached])
    return Download(repo_id=repo_id, revision=revision or "main", commit=commit, cache_dir=cache,
                    files=files, cached=cached, partial_bytes=resumable, leftover_bytes=leftover,
                    weight_bytes=weight_bytes)


def ensure_model_files(repo_id: str, revision: str | None = None, *, token: str | None = None,
                       cache_dir: Path | None = None, weight_bytes: int | None = None,
                       say: Callable[[str], Any] = print) -> Path:
    """The snapshot directory holding what vLLM reads, downloaded when it is not cached yet."""
    cache = hf_cache_dir(cache_dir)
    snap = cached_snapshot(repo_id, revision, cache)
    if snap is not None:
        return snap
    d = plan_download(repo_id, revision, token=token, cache_dir=cache, weight_bytes=weight_bytes)
    check_space(d.need_bytes, free_bytes(cache), cache, repo_id, d.leftovers())
    if d.to_fetch:
        say(d.summary())
    return Path(_fetch(d, token))


def _fetch(d: Download, token: str | None) -> str:
    from huggingface_hub import snapshot_download

    from launcher.models.hub import _hub_error, _hub_errors

    try:
        # The branch (not the commit) so that refs/<branch> is written and vLLM, given the repo
        # id, finds this snapshot; exact names as patterns fetch exactly the wanted files.
        return str(snapshot_download(d.repo_id, revision=d.revision, cache_dir=str(d.cache_dir),
                                     allow_patterns=[f.name for f in d.files], token=token,
                                     etag_timeout=PROBE_TIMEOUT_S))
    except Exception as e:
        if _no_space(e):
            raise DoesNotFitError(
                f"the disk under {d.cache_dir} filled up while downloading {d.repo_id}: {e}",
                fix="free space there or set HF_HOME to a disk with room; the next run resumes "
                    "the partial files", hint=f"df -h {d.cache_dir}") from e
        if isinstance(e, (*transport_errors(), OSError)):
            raise _offline_error(d.repo_id, d.cache_dir, f"the download broke off "
                                 f"({type(e).__name__}: {e}); the next run resumes it") from e
        if isinstance(e, _hub_errors()):
            raise _hub_error(e, d.repo_id, d.revision) from e
        raise


def _no_space(e: BaseException) -> bool:
    import errno

    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


def plan_statement(model: str, ref: str | None, revision: str | None = None,
                   cache_dir: str | None = None) -> tuple[str, ...]:
    """`serve --dry-run`'s line about the download (none for a local directory): what the
    engine's `--model` would fetch, with the exact weight bytes the safetensors headers gave."""
    from launcher.models.hub import looks_like_repo_id
    from launcher.models.resolve import resolve_model

    if not ref or not looks_like_repo_id(ref):
        return ()
    spec = resolve_model(model)
    weight = sum(t.nbytes for t in spec.tensors) if spec.tensors else None
    return (statement(ref, revision, weight, Path(cache_dir) if cache_dir else None),)
