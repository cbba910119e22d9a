"""The Hub source against a real HF cache layout and a local HTTP server speaking the Hub protocol.

The sandbox has no route to huggingface.co, so the cache is laid out on disk exactly as
huggingface_hub lays it out (blobs, snapshots/<commit> symlinks, refs/<branch>), and "online"
tests point huggingface_hub's endpoint at a small server on 127.0.0.1 that answers HEAD/GET/Range
requests the way the Hub does (X-Repo-Commit, ETag, X-Error-Code). huggingface_hub itself does
every request and parse; nothing of it is replaced.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants

from launcher.errors import InputError, ModelConfigError, UnknownModelError
from launcher.models.hub import (
    NO_HEADERS_NOTE,
    fetch_hub_model,
    looks_like_repo_id,
    metadata_cache_path,
)
from launcher.models.safetensors_meta import summarize

COMMIT = "a" * 40
COMMIT2 = "b" * 40
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A valid safetensors file of zeros (header + data), as any writer would produce it."""
    sizes = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n *
                                                                          sizes[dtype]]}
        offset += n * sizes[dtype]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


SHARD1 = safetensors_bytes({"embed.weight": ("BF16", [32, 64]), "norm.weight": ("F32", [64])})
SHARD2 = safetensors_bytes({"lm_head.weight": ("BF16", [32, 64])})
INDEX = json.dumps({"metadata": {"total_size": 0}, "weight_map": {
    "embed.weight": "model-00001-of-00002.safetensors",
    "norm.weight": "model-00001-of-00002.safetensors",
    "lm_head.weight": "model-00002-of-00002.safetensors",
}}).encode()
EXPECTED = {"BF16": 2 * 32 * 64 * 2, "F32": 256, "total_bytes": 2 * 32 * 64 * 2 + 256,
            "params": 2 * 32 * 64 + 64}


def lay_out_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Write a repo into an HF cache the way huggingface_hub does; return the snapshot dir."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../blobs") / blob.name)
    return snapshot


@pytest.fixture(autouse=True)
def hermetic_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own HF cache, own launcher cache, offline; huggingface_hub froze env vars at import."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    for var in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAUNCHER_CACHE_DIR", str(tmp_path / "launcher-cache"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored"))
    return cache


def go_online(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


class MiniHub:
    """Answers /{org}/{name}/resolve/{rev}/{file} like huggingface.co, from in-memory repos."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.errors: dict[str, tuple[int, str]] = {}  # repo_id -> (status, X-Error-Code)
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("/")  # "", org, name, "resolve", rev, file...
                repo_id, filename = "/".join(parts[1:3]), "/".join(parts[5:])
                if repo_id in hub.errors:
                    status, code = hub.errors[repo_id]
                    return self._fail(status, code)
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._fail(404, "RepoNotFound")
                if filename not in repo:
                    return self._fail(404, "EntryNotFound")
                data = repo[filename]
                status = 200
                rng = self.headers.get("range")
                if rng and body:
                    start, _, end = rng.removeprefix("bytes=").partition("-")
                    data = data[int(start): int(end) + 1]
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", '"' + hashlib.sha256(repo[filename]).hexdigest() + '"')
                self.send_header("X-Repo-Commit", COMMIT2)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _fail(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> MiniHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def minihub(monkeypatch: pytest.MonkeyPatch) -> Iterator[MiniHub]:
    with MiniHub() as hub:
        go_online(monkeypatch, hub.url)
        yield hub


# --- offline, from the HF cache ---------------------------------------------------------------


def test_offline_config_from_cache_without_weights(hermetic_hf: Path) -> None:
    snapshot = lay_out_cache(hermetic_hf, "org/tiny", {"config.json": json.dumps(CONFIG).encode()})
    m = fetch_hub_model("org/tiny")
    assert m.config == CONFIG
    assert m.from_cache is True
    assert m.snapshot_dir == snapshot
    assert m.commit == COMMIT
    assert m.tensors is None
    assert NO_HEADERS_NOTE in m.notes


def test_offline_tensors_from_cached_shards(hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors.index.json": INDEX,
        "model-00001-of-00002.safetensors": SHARD1,
        "model-00002-of-00002.safetensors": SHARD2,
    })
    m = fetch_hub_model("org/tiny")
    assert m.tensors is not None
    assert summarize(m.tensors) == EXPECTED
    assert "tensors from safetensors headers in the HF cache" in m.notes


def test_partial_cached_checkpoint_is_not_counted(hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors.index.json": INDEX,
        "model-00001-of-00002.safetensors": SHARD1,
    })
    m = fetch_hub_model("org/tiny")
    assert m.tensors is None
    assert any("model-00002-of-00002.safetensors" in n for n in m.notes)
    assert NO_HEADERS_NOTE in m.notes


def test_pinned_revision_and_explicit_cache_dir(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    lay_out_cache(other, "org/tiny", {"config.json": b'{"model_type": "old"}'}, COMMIT, "v1")
    lay_out_cache(other, "org/tiny", {"config.json": b'{"model_type": "new"}'}, COMMIT2, "main")
    assert fetch_hub_model("org/tiny", revision="v1", cache_dir=other).config["model_type"] == "old"
    m = fetch_hub_model("org/tiny", cache_dir=other)
    assert (m.config["model_type"], m.commit) == ("new", COMMIT2)
    with pytest.raises(UnknownModelError):
        fetch_hub_model("org/tiny")  # not in the default (fixture) cache


def test_offline_not_in_cache(hermetic_hf: Path) -> None:
    with pytest.raises(UnknownModelError) as exc:
        fetch_hub_model("org/absent")
    err = exc.value
    assert "org/absent" in err.message and "offline" in err.message
    assert err.fix is not None
    assert "`launcher models`" in err.fix
    assert "local directory with config.json" in err.fix
    assert "hf download org/absent config.json" in err.fix
    assert str(hermetic_hf) in err.message, "the error names the HF cache it looked in"


def test_unreachable_hub_is_asked_once(minihub: MiniHub, hermetic_hf: Path) -> None:
    """A Hub that answers 503 on the config's HEAD: one HEAD, then the error (huggingface_hub's
    hf_hub_download alone would retry it with backoff for ≈ 23 s)."""
    minihub.repos["org/tiny"] = {"config.json": json.dumps(CONFIG).encode()}
    minihub.errors["org/tiny"] = (503, "ServiceUnavailable")
    with pytest.raises(UnknownModelError) as exc:
        fetch_hub_model("org/tiny")
    assert "503" in exc.value.message
    assert minihub.requests == ["HEAD /org/tiny/resolve/main/config.json"]


def test_offline_env_var_alone_is_honoured(hermetic_hf: Path, monkeypatch) -> None:
    # Set after huggingface_hub was imported: constants say online, the environment says not.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UnknownModelError, match="offline"):
        fetch_hub_model("org/absent")


def test_corrupt_cached_config(hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {"config.json": b"{oops"})
    with pytest.raises(ModelConfigError, match=r"config\.json of org/tiny"):
        fetch_hub_model("org/tiny")


def test_invalid_repo_id() -> None:
    with pytest.raises(UnknownModelError, match="not a valid Hugging Face repo id"):
        fetch_hub_model("org/bad--name..")


def test_stored_table_used_offline(hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {"config.json": json.dumps(CONFIG).encode()})
    store = metadata_cache_path("org/tiny")
    store.parent.mkdir(parents=True)
    store.write_text(json.dumps({"format": 1, "repo_id": "org/tiny", "revision": None,
                                 "commit": COMMIT, "tensors": [["w", "BF16", [10, 10]]]}))
    m = fetch_hub_model("org/tiny")
    assert m.tensors is not None and summarize(m.tensors)["BF16"] == 200
    assert any(str(store) in n for n in m.notes)


def test_damaged_stored_table_is_noted_not_trusted(hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {"config.json": json.dumps(CONFIG).encode()})
    store = metadata_cache_path("org/tiny")
    store.parent.mkdir(parents=True)
    store.write_text('{"format": 1, "tensors": [["w", "Q9", [1]]]}')
    m = fetch_hub_model("org/tiny")
    assert m.tensors is None
    assert any("damaged" in n for n in m.notes)


def test_metadata_cache_path(tmp_path: Path) -> None:
    assert metadata_cache_path("org/name") == (
        tmp_path / "launcher-cache" / "hub-metadata" / "org--name.json"
    )
    assert metadata_cache_path("org/name", "refs/pr/1").name == "org--name@refs--pr--1.json"


# --- online, against a local server speaking the Hub protocol ---------------------------------


def test_online_download_stores_table_then_offline_reuses_it(
    minihub: MiniHub, hermetic_hf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minihub.repos["org/tiny"] = {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors.index.json": INDEX,
        "model-00001-of-00002.safetensors": SHARD1,
        "model-00002-of-00002.safetensors": SHARD2,
    }
    m = fetch_hub_model("org/tiny")
    assert m.from_cache is False
    assert m.config == CONFIG
    assert m.commit == COMMIT2
    assert m.tensors is not None and summarize(m.tensors) == EXPECTED
    # Only headers travelled: Range reads of the shards, never a full shard download.
    shard_gets = [r for r in minihub.requests if r.startswith("GET") and "model-0000" in r]
    assert len(shard_gets) == 2
    assert metadata_cache_path("org/tiny").is_file()

    go_offline(monkeypatch)
    again = fetch_hub_model("org/tiny")
    assert again.from_cache is True
    assert again.tensors == m.tensors
    assert any("stored in" in n for n in again.notes)


def test_online_repo_without_safetensors(minihub: MiniHub) -> None:
    minihub.repos["org/binonly"] = {"config.json": json.dumps(CONFIG).encode()}
    m = fetch_hub_model("org/binonly")
    assert m.tensors is None
    assert any("no model.safetensors" in n for n in m.notes)


def test_online_repo_not_found(minihub: MiniHub) -> None:
    with pytest.raises(UnknownModelError) as exc:
        fetch_hub_model("org/missing")
    assert "no such repo" in exc.value.message
    assert exc.value.fix is not None and "`launcher models`" in exc.value.fix


def test_online_gated_repo(minihub: MiniHub) -> None:
    minihub.errors["org/gated"] = (403, "GatedRepo")
    with pytest.raises(InputError) as exc:
        fetch_hub_model("org/gated")
    assert not isinstance(exc.value, UnknownModelError)
    assert "gated" in exc.value.message
    assert exc.value.fix is not None and "hf auth login" in exc.value.fix


def test_online_repo_without_config(minihub: MiniHub) -> None:
    minihub.repos["org/gguf"] = {"model.gguf": b"GGUF"}
    with pytest.raises(ModelConfigError, match=r"has no config\.json"):
        fetch_hub_model("org/gguf")


def test_cache_first_never_calls_the_hub(minihub: MiniHub, hermetic_hf: Path) -> None:
    lay_out_cache(hermetic_hf, "org/tiny", {
        "config.json": json.dumps(CONFIG).encode(),
        "model.safetensors": SHARD2,
    })
    m = fetch_hub_model("org/tiny")
    assert m.from_cache is True
    assert m.tensors is not None and [t.name for t in m.tensors] == ["lm_head.weight"]
    assert minihub.requests == []


# --- repo id shape ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", True),
        ("Qwen/Qwen2.5-0.5B", True),
        ("org/name_with.dots-and_underscores", True),
        ("deepseek-67b", False),  # a profile alias
        ("a/b/c", False),
        ("/abs/path", False),
        ("./rel/dir", False),
        ("org/bad--name", False),
        ("org/-leading", False),
        ("org/", False),
    ],
)
def test_looks_like_repo_id(s: str, expected: bool) -> None:
    assert looks_like_repo_id(s) is expected


def test_existing_local_path_is_not_a_repo_id(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert looks_like_repo_id("org/name") is False


def test_huggingface_hub_version_has_what_we_use() -> None:
    # Guards the names this module relies on; a major release renamed several before.
    from huggingface_hub.errors import (  # noqa: F401
        GatedRepoError,
        LocalEntryNotFoundError,
        NotASafetensorsRepoError,
        RemoteEntryNotFoundError,
    )

    assert hasattr(huggingface_hub.HfApi, "get_safetensors_metadata")
    assert hasattr(constants, "HF_HUB_OFFLINE") and hasattr(constants, "HF_HUB_CACHE")


def test_stale_stored_table_is_refetched_online(minihub: MiniHub, hermetic_hf: Path) -> None:
    minihub.repos["org/tiny"] = {"config.json": json.dumps(CONFIG).encode(),
                                 "model.safetensors": SHARD2}
    lay_out_cache(hermetic_hf, "org/tiny", {"config.json": json.dumps(CONFIG).encode()}, COMMIT2)
    store = metadata_cache_path("org/tiny")
    store.parent.mkdir(parents=True)
    store.write_text(json.dumps({"format": 1, "commit": COMMIT, "tensors": [["w", "F32", [1]]]}))
    m = fetch_hub_model("org/tiny")
    assert m.tensors is not None and [t.name for t in m.tensors] == ["lm_head.weight"]
    assert json.loads(store.read_text())["commit"] == COMMIT2
