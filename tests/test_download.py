"""cascadener.qwen2.download against a fake hub on 127.0.0.1: layout, verification, resume, skip, errors."""
from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cascadener.qwen2.download import DownloadError, download, main

REPO = "Qwen/Fake-0.5B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL = {
    "config.json": b'{"model_type": "qwen2", "hidden_size": 8}',
    "generation_config.json": b'{"eos_token_id": 2}',
    "tokenizer.json": b'{"model": {"type": "BPE"}}',
    "tokenizer_config.json": b'{"tokenizer_class": "Qwen2Tokenizer"}',
    "README.md": b"# not part of a checkpoint",
}
CHECKPOINT = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
WEIGHTS = "model.safetensors"


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """The repo a fake hub serves, and the ways it misbehaves (each `drop`/`errors` entry fires once)."""
    files: dict[str, bytes]  # repo path -> content
    lfs: set[str]  # paths listed with an lfs sha256, like *.safetensors on the real hub
    repo: str = REPO
    listing: str = "full"  # "full", "bare" (rfilename only) or "none" (no siblings at all)
    served: dict[str, bytes] = field(default_factory=dict)  # path -> wrong bytes to serve instead
    drop: dict[str, int] = field(default_factory=dict)  # path -> close the connection after N body bytes
    errors: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    redirect: dict[str, str] = field(default_factory=dict)  # path -> base URL of another server
    ignore_range: bool = False
    requests: list[Request] = field(default_factory=list)

    def api(self) -> dict:
        info: dict = {"id": self.repo, "sha": COMMIT}
        if self.listing != "none":
            info["siblings"] = [self.sibling(p) for p in self.files]
        return info

    def sibling(self, path: str) -> dict:
        if self.listing == "bare":
            return {"rfilename": path}
        entry: dict = {"rfilename": path, "size": len(self.files[path])}
        if path in self.lfs:
            entry["lfs"] = {"sha256": sha256(self.files[path]), "size": len(self.files[path]), "pointerSize": 134}
        return entry

    def resolved(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/" + name)]


class Handler(BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        hub = self.server.hub
        hub.requests.append(Request(self.path, dict(self.headers)))
        if self.path == f"/api/models/{hub.repo}/revision/main?blobs=true":
            return self.send(200, json.dumps(hub.api()).encode(), {"Content-Type": "application/json"})
        for prefix in (f"/{hub.repo}/resolve/{COMMIT}/", "/cdn/"):
            path = urllib.parse.unquote(self.path[len(prefix):])
            if self.path.startswith(prefix) and path in hub.files:
                return self.serve_file(hub, path, cdn=prefix == "/cdn/")
        self.send(404, b"not found", {"X-Error-Message": "Entry not found"})

    def serve_file(self, hub: FakeHub, path: str, cdn: bool) -> None:
        if hub.errors.get(path):
            return self.send(hub.errors[path].pop(0), b"try later")
        if path in hub.redirect and not cdn:
            return self.send(302, b"", {"Location": f"{hub.redirect[path]}/cdn/{urllib.parse.quote(path)}"})
        body, status, headers = hub.served.get(path, hub.files[path]), 200, {}
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked and not hub.ignore_range:
            start = int(asked.group(1))
            if start >= len(body):
                return self.send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            status, headers = 206, {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            body = body[start:]
        cut = hub.drop.pop(path, None)
        # A cut keeps the full Content-Length: the client sees the connection close mid-body.
        self.send(status, body, headers, cut)

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None, cut: int | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hub = hub


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_repo(prefix: str = "") -> FakeHub:
    files = {prefix + name: data for name, data in SMALL.items()}
    files[prefix + WEIGHTS] = random.Random(0).randbytes(48 * 1024)
    return FakeHub(files, {prefix + WEIGHTS})


def sharded_repo() -> FakeHub:
    rng = random.Random(1)
    shards = {f"model-0000{i}-of-00002.safetensors": rng.randbytes(20 * 1024) for i in (1, 2)}
    names = sorted(shards)
    index = {"metadata": {"total_size": 40960}, "weight_map": {"embed.weight": names[0], "norm.weight": names[1]}}
    return FakeHub({**SMALL, **shards, "model.safetensors.index.json": json.dumps(index).encode()}, set(shards))


@pytest.fixture(autouse=True)
def no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def serve() -> Iterator[Callable[[FakeHub], str]]:
    servers: list[HubServer] = []

    def start(hub: FakeHub) -> str:
        server = HubServer(hub)
        # A short poll keeps shutdown() at teardown fast (the default waits up to 0.5 s).
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch(endpoint: str, out: Path, **kw) -> Path:
    return download(kw.pop("repo", REPO), out, endpoint=endpoint, backoff=0, **kw)


def assert_checkpoint(out: Path, hub: FakeHub, weights: list[str], prefix: str = "") -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(CHECKPOINT + weights)
    for name in CHECKPOINT + weights:
        assert (out / name).read_bytes() == hub.files[prefix + name], name


def test_downloads_single_file_checkpoint(serve, tmp_path):
    hub = fake_repo()
    out = fetch(serve(hub), tmp_path / "ckpt")
    assert out == tmp_path / "ckpt"
    assert_checkpoint(out, hub, [WEIGHTS])  # README.md is not fetched, no *.part is left
    files = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert all(f"/resolve/{COMMIT}/" in p for p in files)  # pinned to the commit the API named
    assert files[-1].endswith("/config.json")  # last: it marks the directory as a finished checkpoint


def test_downloads_sharded_checkpoint(serve, tmp_path):
    hub = sharded_repo()
    out = fetch(serve(hub), tmp_path / "ckpt")
    shards = sorted(n for n in hub.files if n.startswith("model-"))
    assert_checkpoint(out, hub, ["model.safetensors.index.json", *shards])


@pytest.mark.parametrize("wrong, message", [
    (lambda b: bytes([b[0] ^ 1]) + b[1:], "checksum mismatch"),
    (lambda b: b + b"x", "size mismatch"),
])
def test_verification_failure_leaves_no_file(serve, tmp_path, wrong, message):
    hub = fake_repo()
    hub.served[WEIGHTS] = wrong(hub.files[WEIGHTS])
    with pytest.raises(DownloadError, match=message) as e:
        fetch(serve(hub), tmp_path)
    assert WEIGHTS in str(e.value)
    if message == "checksum mismatch":
        assert sha256(hub.files[WEIGHTS]) in str(e.value) and sha256(hub.served[WEIGHTS]) in str(e.value)
    assert not (tmp_path / WEIGHTS).exists() and not (tmp_path / (WEIGHTS + ".part")).exists()
    assert not (tmp_path / "config.json").exists()


def test_interrupted_download_resumes_with_range(serve, tmp_path):
    hub = fake_repo()
    hub.drop[WEIGHTS] = 5000
    url = serve(hub)
    with pytest.raises(DownloadError, match=r"connection closed after 5000 of 49152 bytes"):
        fetch(url, tmp_path, retries=0)
    part = tmp_path / (WEIGHTS + ".part")
    assert part.stat().st_size == 5000 and not (tmp_path / WEIGHTS).exists()

    fetch(url, tmp_path, retries=0)
    assert [r.headers.get("Range") for r in hub.resolved(WEIGHTS)] == [None, "bytes=5000-"]
    assert sha256((tmp_path / WEIGHTS).read_bytes()) == sha256(hub.files[WEIGHTS])
    assert not part.exists()


def test_dropped_connection_and_server_errors_are_retried(serve, tmp_path):
    hub = fake_repo()
    hub.drop[WEIGHTS] = 7000
    hub.errors["tokenizer.json"] = [503, 500]
    out = fetch(serve(hub), tmp_path, retries=2)
    assert_checkpoint(out, hub, [WEIGHTS])
    assert [r.headers.get("Range") for r in hub.resolved(WEIGHTS)] == [None, "bytes=7000-"]
    assert len(hub.resolved("tokenizer.json")) == 3


def test_retries_are_bounded(serve, tmp_path):
    hub = fake_repo()
    hub.errors["tokenizer.json"] = [503] * 10
    with pytest.raises(DownloadError, match=r"HTTP 503 for http://127\.0\.0\.1:\d+/.*tokenizer\.json.*after 3 attempts"):
        fetch(serve(hub), tmp_path, retries=2)
    assert len(hub.resolved("tokenizer.json")) == 3


def test_server_ignoring_range_restarts_from_zero(serve, tmp_path, capsys):
    hub = fake_repo()
    hub.drop[WEIGHTS] = 5000
    url = serve(hub)
    with pytest.raises(DownloadError):
        fetch(url, tmp_path, retries=0)
    hub.ignore_range = True
    fetch(url, tmp_path, retries=0)
    assert hub.resolved(WEIGHTS)[-1].headers.get("Range") == "bytes=5000-"
    assert (tmp_path / WEIGHTS).read_bytes() == hub.files[WEIGHTS]
    assert "ignored the Range request" in capsys.readouterr().err


def test_oversized_part_is_discarded(serve, tmp_path):
    hub = fake_repo()
    (tmp_path / (WEIGHTS + ".part")).write_bytes(b"\0" * (len(hub.files[WEIGHTS]) + 1))
    fetch(serve(hub), tmp_path)
    assert [r.headers.get("Range") for r in hub.resolved(WEIGHTS)] == [None]
    assert (tmp_path / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_complete_files_are_skipped_and_damaged_ones_fetched_again(serve, tmp_path):
    hub = fake_repo()
    url = serve(hub)
    fetch(url, tmp_path)
    hub.requests.clear()
    fetch(url, tmp_path)
    assert [r.path for r in hub.requests] == [f"/api/models/{REPO}/revision/main?blobs=true"]

    damaged = bytearray(hub.files[WEIGHTS])
    damaged[100] ^= 0xFF  # same size: only the sha256 can tell
    (tmp_path / WEIGHTS).write_bytes(damaged)
    hub.requests.clear()
    fetch(url, tmp_path)
    assert [r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path] == [WEIGHTS]
    assert (tmp_path / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_unknown_repo_gives_status_and_url(serve, tmp_path):
    url = serve(fake_repo())
    expected = f"HTTP 404 for {url}/api/models/Qwen/Nope/revision/main?blobs=true: Entry not found"
    with pytest.raises(DownloadError, match=re.escape(expected)):
        fetch(url, tmp_path, repo="Qwen/Nope")


def test_missing_file_gives_status_and_url(serve, tmp_path):
    hub = fake_repo()
    url = serve(hub)
    hub.errors["tokenizer.json"] = [404]
    expected = f"HTTP 404 for {url}/{REPO}/resolve/{COMMIT}/tokenizer.json (check the repo id"
    with pytest.raises(DownloadError, match=re.escape(expected)):
        fetch(url, tmp_path)


def test_pickle_only_repo_is_refused_before_any_download(serve, tmp_path):
    hub = fake_repo()
    hub.files["pytorch_model.bin"] = hub.files.pop(WEIGHTS)
    with pytest.raises(DownloadError, match=r"only pickle weights \(pytorch_model\.bin\); refused"):
        fetch(serve(hub), tmp_path)
    assert not any("/resolve/" in r.path for r in hub.requests)


def test_unsafe_shard_name_is_refused(serve, tmp_path):
    hub = sharded_repo()
    hub.files["model.safetensors.index.json"] = json.dumps({"weight_map": {"w": "../evil.safetensors"}}).encode()
    with pytest.raises(DownloadError, match="refusing shard name '../evil.safetensors'"):
        fetch(serve(hub), tmp_path / "ckpt")
    assert not (tmp_path / "evil.safetensors").exists()


def test_subfolder_checkpoint(serve, tmp_path):
    hub = fake_repo("extractor/")
    url = serve(hub)
    with pytest.raises(DownloadError, match=r"no config\.json; found it under: extractor \(pass --subfolder\)"):
        fetch(url, tmp_path)
    out = fetch(url, tmp_path / "ckpt", subfolder="extractor")
    assert_checkpoint(out, hub, [WEIGHTS], prefix="extractor/")


@pytest.mark.parametrize("listing", ["bare", "none"])
def test_missing_metadata_falls_back_to_unverified_download(serve, tmp_path, listing):
    hub = fake_repo()
    hub.listing = listing
    out = fetch(serve(hub), tmp_path)
    assert_checkpoint(out, hub, [WEIGHTS])
    if listing == "none":  # nothing listed: the index is probed first and its 404 means "single file"
        assert len(hub.resolved("model.safetensors.index.json")) == 1


def test_token_is_sent_to_the_hub_but_not_to_another_host(serve, tmp_path):
    hub = fake_repo()
    hub.redirect[WEIGHTS] = serve(hub)  # a second server on another port plays the CDN
    fetch(serve(hub), tmp_path, token="secret")
    api, first, cdn = hub.requests[0], *hub.resolved(WEIGHTS)
    assert api.headers["Authorization"] == first.headers["Authorization"] == "Bearer secret"
    assert cdn.path.startswith("/cdn/") and "Authorization" not in cdn.headers
    assert (tmp_path / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


@pytest.mark.parametrize("args, message", [
    ({"repo": "no-owner"}, "not a hub repo id"),
    ({"repo": "Qwen/../etc"}, "not a hub repo id"),
    ({"subfolder": "../up"}, "invalid subfolder"),
    ({"endpoint": "huggingface.co"}, "not an http"),
])
def test_bad_arguments_are_rejected_before_any_request(tmp_path, args, message):
    args = {"repo": REPO, "endpoint": "http://127.0.0.1:9", **args}  # port 9 (discard): never contacted
    with pytest.raises(DownloadError, match=message):
        download(args.pop("repo"), tmp_path, retries=0, **args)


def test_cli(serve, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", serve(fake_repo()))
    assert main([REPO, "--out", str(tmp_path / "ckpt")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ckpt")
    assert main(["Qwen/Nope", "--out", str(tmp_path / "x")]) == 1
    assert "error: HTTP 404 for" in capsys.readouterr().err
