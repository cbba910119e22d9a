"""Downloading a Hub model before the engine starts (launcher/models/download.py), against a
real HTTP server on loopback that speaks the Hub's API the way huggingface.co does.

huggingface_hub does every request, parse, cache write and resume itself (its endpoint is
pointed at the server); nothing of it or of the launcher is replaced. The repo served is the
demo model built by `launcher.models.demo`, plus the files a real repo carries beside it that
vLLM does not read (a `.bin` copy of the weights, an `original/` folder, README, .gitattributes).

The server (`HubServer`) answers:
    GET  /api/models/{org}/{name}/revision/{rev}[?blobs=true]   model_info (siblings, sizes)
    GET  /api/models/{org}/{name}/tree/{rev}[/path]             list_repo_tree
    HEAD/GET /{org}/{name}/resolve/{rev}/{file}                  ETag / X-Linked-Etag,
         X-Repo-Commit, Content-Length, Accept-Ranges; Range → 206 with Content-Range
and can break a transfer off after N bytes (closing the connection, or holding it open until
the client is killed), to exercise resuming.

The disk check is tested against the real free space of the test's filesystem
(`shutil.disk_usage`): the server offers a repo whose weight file is larger than that free
space (its bytes are generated when asked, so the test machine needs no such file). Making a
small filesystem (a tmpfs of a few MB) would need mount privileges a test cannot assume.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ROOT
from huggingface_hub import constants
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.errors import DoesNotFitError, UnknownModelError
from launcher.models.demo import build_demo_model
from launcher.models.download import (
    Download,
    RemoteFile,
    cached_snapshot,
    check_space,
    ensure_model_files,
    free_bytes,
    plan_download,
    wanted_files,
)

COMMIT = "c" * 40
REPO = "org/demo"
# Files of the repo that vLLM does not read: a .bin duplicate, a subfolder, docs.
EXTRA = {"pytorch_model.bin": b"\0" * 4096, "original/consolidated.pth": b"\1" * 2048,
         "README.md": b"# demo\n", ".gitattributes": b"*.safetensors filter=lfs\n"}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Virtual:
    """A file of `size` zero bytes made when asked (bigger than any disk the test has)."""

    size: int
    sha256: str = "f" * 64


class HubServer:
    """The Hub's HTTP API for in-memory repos, on 127.0.0.1, logging every request."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes | Virtual]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.cut: dict[str, int] = {}  # file -> bytes sent before the first GET breaks off
        self.hold = threading.Event()  # set: a cut transfer is held open instead of closed
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _json(self, obj: object) -> None:
                raw = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _fail(self, status: int, code: str) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body: bool) -> None:
                url = urlsplit(self.path)
                server.requests.append((self.command, url.path, self.headers.get("Range")))
                parts = url.path.split("/")
                if parts[1:3] == ["api", "models"]:
                    repo_id = "/".join(parts[3:5])
                    if repo_id not in server.repos:
                        return self._fail(404, "RepoNotFound")
                    files = server.repos[repo_id]
                    if len(parts) == 5 or parts[5] == "revision":  # no revision: the default
                        blobs = "blobs" in parse_qs(url.query)
                        return self._json({"id": repo_id, "modelId": repo_id, "sha": COMMIT,
                                           "siblings": [server.sibling(n, d, blobs)
                                                        for n, d in sorted(files.items())]})
                    if parts[5] == "tree":
                        return self._json([server.tree_entry(n, d) for n, d in sorted(files.items())])
                    return self._fail(404, "EntryNotFound")
                repo_id, filename = "/".join(parts[1:3]), "/".join(parts[5:])
                files = server.repos.get(repo_id)
                if files is None or parts[3] != "resolve":
                    return self._fail(404, "RepoNotFound")
                if filename not in files:
                    return self._fail(404, "EntryNotFound")
                return self._file(filename, files[filename], body)

            def _file(self, name: str, data: bytes | Virtual, body: bool) -> None:
                size = data.size if isinstance(data, Virtual) else len(data)
                start, end, status = 0, size - 1, 200
                rng = self.headers.get("Range")
                if rng and body:
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start, end, status = int(a), (int(b) if b else size - 1), 206
                self.send_response(status)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("X-Repo-Commit", COMMIT)
                if isinstance(data, Virtual) or name.endswith(".safetensors"):
                    sha = data.sha256 if isinstance(data, Virtual) else hashlib.sha256(data).hexdigest()
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(size))
                    self.send_header("ETag", f'"{sha}"')
                else:
                    self.send_header("ETag", f'"{git_blob_id(data)}"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                chunk = (bytes(end - start + 1) if isinstance(data, Virtual)
                         else data[start:end + 1])
                cut = server.cut.pop(name, None)
                if cut is not None:
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    if server.hold.is_set():
                        server.release.wait(60)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    @staticmethod
    def sibling(name: str, data: bytes | Virtual, blobs: bool) -> dict:
        out: dict = {"rfilename": name}
        if not blobs:
            return out
        size = data.size if isinstance(data, Virtual) else len(data)
        out.update(size=size, blobId=git_blob_id(b"" if isinstance(data, Virtual) else data))
        if isinstance(data, Virtual) or name.endswith(".safetensors"):
            sha = data.sha256 if isinstance(data, Virtual) else hashlib.sha256(data).hexdigest()
            out["lfs"] = {"sha256": sha, "size": size, "pointerSize": 134}
        return out

    @staticmethod
    def tree_entry(name: str, data: bytes | Virtual) -> dict:
        s = HubServer.sibling(name, data, blobs=True)
        entry = {"type": "file", "path": name, "size": s["size"], "oid": s["blobId"]}
        if "lfs" in s:
            entry["lfs"] = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
        return entry

    def gets(self, suffix: str) -> list[str | None]:
        """The Range header of every GET of a file ending in `suffix`."""
        return [r for m, p, r in self.requests if m == "GET" and "/resolve/" in p and p.endswith(suffix)]

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = build_demo_model(tmp_path_factory.mktemp("demo") / "m")
    files = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    files.pop("launcher-demo.json")
    return {**files, **EXTRA}


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own HF cache (huggingface_hub froze HF_* at import: its constants are set too)."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    return cache


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        url + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub(hf_cache: Path, monkeypatch: pytest.MonkeyPatch, demo_files: dict[str, bytes]
        ) -> Iterator[HubServer]:
    with HubServer() as server:
        server.repos[REPO] = dict(demo_files)
        point_at(monkeypatch, server.url)
        yield server


def quiet(_: str) -> None:
    pass


# huggingface_hub writes a download in chunks of DOWNLOAD_CHUNK_SIZE (10 MB) and keeps what a
# broken transfer delivered only up to the last whole chunk. The demo's weights are 8.9 MB, so
# the resume tests use 1 MiB chunks: a break after half the file leaves whole chunks behind.
CHUNK = 1 << 20


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    return CHUNK


# ---- which files -------------------------------------------------------------------------

def test_wanted_files_are_what_vllm_reads() -> None:
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "tokenizer.model", "merges.txt", "vocab.json",
             "chat_template.jinja", "model-00001-of-00002.safetensors",
             "model-00002-of-00002.safetensors", "model.safetensors.index.json",
             "consolidated.safetensors", "params.json", "pytorch_model-00001-of-00002.bin",
             "pytorch_model.bin.index.json", "original/consolidated.00.pth", "README.md",
             ".gitattributes", "LICENSE", "figure.png", "configuration_x.py"]
    got = wanted_files(names)
    assert "consolidated.safetensors" not in got  # Mistral's copy beside the HF shards
    assert not [n for n in got if n.endswith((".bin", ".pth", ".md", ".png")) or "/" in n]
    assert "pytorch_model.bin.index.json" not in got
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
            "model.safetensors.index.json", "config.json", "generation_config.json",
            "tokenizer.model", "merges.txt", "chat_template.jinja", "configuration_x.py"} <= set(got)
    # without safetensors, the weights vLLM falls back to
    assert wanted_files(["config.json", "pytorch_model.bin", "x.pth"]) == ["config.json",
                                                                           "pytorch_model.bin"]


def test_need_counts_what_is_not_cached_less_partial_bytes() -> None:
    files = (RemoteFile("a.safetensors", 1000, "s1"), RemoteFile("config.json", 10, "b1"),
             RemoteFile("b.safetensors", None, "s2"))
    d = Download("o/m", "main", COMMIT, Path("/c"), files, frozenset({"config.json"}),
                 partial_bytes=300, weight_bytes=5000)
    # a: 1000; b has no size: the checkpoint's 5000 tensor bytes less a's 1000; less 300 partial
    assert d.need_bytes == 1000 + 4000 - 300
    assert [f.name for f in d.to_fetch] == ["a.safetensors", "b.safetensors"]


def test_check_space_refuses_with_the_numbers(tmp_path: Path) -> None:
    check_space(10, 10, tmp_path, "o/m")
    with pytest.raises(DoesNotFitError) as e:
        check_space(11 * 2**30, 2**30, tmp_path, "o/m")
    assert e.value.exit_code == 3
    assert "11.00 GiB" in e.value.message and "1.00 GiB" in e.value.message
    assert str(tmp_path) in e.value.message and "HF_HOME" in (e.value.fix or "")


# ---- against the server ------------------------------------------------------------------

def test_download_fetches_only_what_vllm_reads(hub: HubServer, hf_cache: Path,
                                               demo_files: dict[str, bytes]) -> None:
    said: list[str] = []
    snap = ensure_model_files(REPO, say=said.append)
    assert snap == hf_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    got = {p.name for p in snap.iterdir()}
    assert got == set(wanted_files(demo_files)) and "pytorch_model.bin" not in got
    for name in got:
        assert (snap / name).read_bytes() == demo_files[name], name
    assert (snap.parent.parent / "refs" / "main").read_text() == COMMIT, "vLLM finds it by branch"
    assert cached_snapshot(REPO, None, hf_cache) == snap
    (line,) = said
    assert line.startswith(f"downloading {REPO}@{COMMIT[:12]}: {len(got)} of {len(got)} files")
    # a second run reads the cache and asks the Hub nothing
    n = len(hub.requests)
    assert ensure_model_files(REPO, say=quiet) == snap
    assert len(hub.requests) == n


def test_disk_check_refuses_before_any_byte(hub: HubServer, hf_cache: Path,
                                            demo_files: dict[str, bytes]) -> None:
    free = free_bytes(hf_cache)
    big = free + 2**30
    hub.repos["org/huge"] = {**demo_files, "model.safetensors": Virtual(big)}
    with pytest.raises(DoesNotFitError) as e:
        ensure_model_files("org/huge", say=quiet)
    msg = e.value.message
    need = int(msg.split("needs ")[1].split("(")[1].split(" bytes")[0])
    assert need >= big and "org/huge" in msg and str(hf_cache) in msg
    have = int(msg.split("has ")[1].split("(")[1].split(" bytes")[0])
    assert abs(have - free) < 2**30  # the real reading (other writers move it a little)
    assert "HF_HOME" in (e.value.fix or "")
    assert hub.gets("") == [], "no file was requested"
    assert not list(hf_cache.rglob("*.incomplete")) and not list(hf_cache.rglob("blobs/*"))


def test_interrupted_transfer_resumes_with_a_range_request(hub: HubServer, hf_cache: Path,
                                                           demo_files: dict[str, bytes],
                                                           small_chunks: int) -> None:
    weights = demo_files["model.safetensors"]
    half = len(weights) // 2
    kept = half // small_chunks * small_chunks
    hub.cut["model.safetensors"] = half  # the connection drops after half the file
    snap = ensure_model_files(REPO, say=quiet)
    assert (snap / "model.safetensors").read_bytes() == weights
    ranges = hub.gets("model.safetensors")
    assert kept > 0 and ranges == [None, f"bytes={kept}-"], ranges


def test_a_killed_download_is_fetched_again_and_its_leftover_named(
        hub: HubServer, hf_cache: Path, demo_files: dict[str, bytes], small_chunks: int) -> None:
    """The first run is killed mid-transfer (SIGKILL: no clean-up). huggingface_hub 2.x wrote
    into a process-unique `<etag>.<id>.incomplete` that no later run reuses: the next run
    fetches the whole file again, counts all of it in the need, and names the leftover."""
    weights = demo_files["model.safetensors"]
    half = len(weights) // 2
    kept = half // small_chunks * small_chunks
    hub.cut["model.safetensors"] = half
    hub.hold.set()  # hold the connection open after half: the client waits for the rest
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_cache.parent),
           "HF_HUB_CACHE": str(hf_cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_HUB_DOWNLOAD_TIMEOUT": "120"}  # no read timeout while held: it would resume
    code = ("from huggingface_hub import constants as c; from launcher.models.download import "
            f"ensure_model_files as f; c.DOWNLOAD_CHUNK_SIZE = {small_chunks}; f({REPO!r})")
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=ROOT)
    blobs = hf_cache / f"models--{REPO.replace('/', '--')}" / "blobs"
    deadline = time.monotonic() + 60

    def partial() -> list[Path]:
        return [q for q in blobs.glob("*.incomplete") if q.stat().st_size == kept] \
            if blobs.is_dir() else []

    while not partial():
        assert p.poll() is None and time.monotonic() < deadline, "the first run never got half"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    hub.hold.clear()
    hub.release.set()
    (orphan,) = partial()
    sha = hashlib.sha256(weights).hexdigest()
    resumable = orphan.name == f"{sha}.incomplete"  # huggingface_hub ≤ 1.x names it so
    d = plan_download(REPO)
    full = sum(f.size or 0 for f in d.to_fetch)
    said: list[str] = []
    snap = ensure_model_files(REPO, say=said.append)
    assert (snap / "model.safetensors").read_bytes() == weights
    if resumable:
        assert (d.partial_bytes, d.need_bytes) == (kept, full - kept)
        assert hub.gets("model.safetensors")[-1] == f"bytes={kept}-"
    else:
        assert (d.partial_bytes, d.leftover_bytes, d.need_bytes) == (0, kept, full)
        assert hub.gets("model.safetensors") == [None, None], "fetched whole, twice"
        assert "left from interrupted downloads" in said[0] and str(blobs) in said[0]


def test_offline_and_not_cached_fails_at_once_without_asking(hub: HubServer, hf_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError) as e:
        ensure_model_files(REPO, say=quiet)
    assert e.value.exit_code == 2
    assert REPO in e.value.message and str(hf_cache) in e.value.message
    assert "HF_HUB_OFFLINE" in e.value.message + (e.value.fix or "")
    assert hub.requests == []


def test_a_hub_that_is_down_fails_clearly(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    point_at(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(UnknownModelError) as e:
        ensure_model_files(REPO, say=quiet)
    assert "the Hub is unreachable" in e.value.message and "ConnectError" in e.value.message
    assert str(hf_cache) in e.value.message and "HF_ENDPOINT" in (e.value.fix or "")


def test_a_hub_that_drops_connections_is_asked_once(hf_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that accepts and hangs up at once: huggingface_hub's file download would
    retry that with backoff (≈ 23 s); the launcher's reads are tried once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(1)
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    point_at(monkeypatch, f"http://127.0.0.1:{srv.getsockname()[1]}")
    try:
        with pytest.raises(UnknownModelError) as e:
            ensure_model_files(REPO, say=quiet)
        assert "the Hub is unreachable" in e.value.message
        from launcher.models.hub import fetch_hub_model

        with pytest.raises(UnknownModelError):
            fetch_hub_model(REPO)
    finally:
        srv.close()
    assert len(accepted) == 2, "one connection each, no retry"


# ---- the CLI -----------------------------------------------------------------------------

def test_serve_dry_run_states_the_download_then_the_cache(hub: HubServer, hf_cache: Path,
                                                          demo_files: dict[str, bytes]) -> None:
    from conftest import run_cli

    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_cache.parent), "HF_HUB_CACHE": str(hf_cache),
           "LAUNCHER_DEVICE": "cpu"}
    r = run_cli(REPO, "--dry-run", "--json", env=env, prog="serve")
    assert r.returncode == 0, r.stderr
    notes = json.loads(r.stdout)["notes"]
    (line,) = [n for n in notes if n.startswith("serve would download")]
    from launcher.models.safetensors_meta import read_checkpoint
    from launcher.units import fmt_gib

    tensor_bytes = sum(t.nbytes for t in read_checkpoint(cached_dir(demo_files, hf_cache)))
    assert line.startswith(f"serve would download {REPO} first ({fmt_gib(tensor_bytes)} of "
                           f"safetensors weights plus config and tokenizer files) into {hf_cache} (")
    assert hub.gets(".bin") == [] and hub.gets("tokenizer.json") == [], "a dry run fetches no file"
    ensure_model_files(REPO, say=quiet)
    r = run_cli(REPO, "--dry-run", "--json", env={**env, "HF_HUB_OFFLINE": "1"}, prog="serve")
    assert r.returncode == 0, r.stderr
    (line,) = [n for n in json.loads(r.stdout)["notes"] if "nothing to download" in n]
    assert line.startswith(f"{REPO} is in the HF cache (") and line.endswith("nothing to download")


def cached_dir(files: dict[str, bytes], where: Path) -> Path:
    d = where.parent / "weights-only"
    d.mkdir(exist_ok=True)
    (d / "model.safetensors").write_bytes(files["model.safetensors"])
    return d


def test_serve_downloads_before_the_engine_starts(hub: HubServer, hf_cache: Path,
                                                  demo_files: dict[str, bytes], tmp_path: Path) -> None:
    """`serve` fetches the files, then starts the engine. The engine here is `/bin/false`
    (it exits at once, status 1): the run ends with exit 4 after the download."""
    from conftest import run_cli

    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_cache.parent), "HF_HUB_CACHE": str(hf_cache),
           "LAUNCHER_DEVICE": "cpu", "LAUNCHER_LOG_DIR": str(tmp_path / "logs"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli(REPO, "--engine-python", "/bin/false", "--max-attempts", "1", "--control-port", "0",
                "--port", str(port), env=env, prog="serve")
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    out = " ".join(r.stdout.split())  # rich wraps long lines
    assert out.index(f"downloading {REPO}@{COMMIT[:12]}:") < out.index("engine starting")
    snap = cached_snapshot(REPO, None, hf_cache)
    assert snap is not None and {p.name for p in snap.iterdir()} == set(wanted_files(demo_files))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"(original/)?[a-z_.0-9-]{1,12}\.(safetensors|bin|pt|pth|json|md|txt|model|jinja)",
                              fullmatch=True), max_size=20))
def test_wanted_files_never_mixes_weight_formats(names: list[str]) -> None:
    got = wanted_files(names)
    assert set(got) <= set(names) and got == sorted(set(got))
    assert not [n for n in got if "/" in n or n.endswith((".pth", ".md"))]
    if any(n.endswith(".safetensors") and "/" not in n for n in names):
        assert not [n for n in got if n.endswith((".bin", ".pt"))]
