"""Fetch an official Qwen2 checkpoint from the Hugging Face hub, with the standard library only.

    python -m cascadener.qwen2.download Qwen/Qwen2.5-0.5B-Instruct [--out DIR] [--revision main]
        [--subfolder NAME] [--endpoint URL] [--token TOKEN]

The hub API lists the repo's files with sizes and, for LFS files, sha256 digests. Each file is
streamed into `NAME.part`, resumed with an HTTP Range request after an interruption, checked
against the listed size and sha256, and only then renamed into place, so a file under its final
name is always complete. config.json is written last: a directory holding it is a finished
checkpoint. Only safetensors weights are fetched; a repo with only pickle weights is refused.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cascadener.qwen2.locate import weights_dir

DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES = ("generation_config.json",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds of socket inactivity before an attempt counts as failed
MAX_DELAY = 30.0
RETRY_STATUSES = {408, 429}  # plus every 5xx
PROGRESS_EVERY = 0.5  # seconds between progress lines
USER_AGENT = "cascadener-download/0.1 (python-urllib)"

REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
SHA256 = re.compile(r"[0-9a-f]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}")
T = TypeVar("T")


class DownloadError(RuntimeError):
    pass


class HTTPStatusError(DownloadError):
    """A non-retryable HTTP error status; `status` lets callers treat a 404 as "absent"."""

    def __init__(self, status: int, url: str, detail: str | None, has_token: bool) -> None:
        self.status = status
        hint = ""
        if status in (401, 403):
            hint = " (repo missing, private or gated" + ("" if has_token else "; set HF_TOKEN or pass --token") + ")"
        elif status == 404:
            hint = " (check the repo id, revision and file name)"
        super().__init__(f"HTTP {status} for {url}" + (f": {detail}" if detail else "") + hint)


class _Transient(Exception):
    """A failure worth retrying: network errors, 5xx/408/429, a body cut short."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path inside the repo, subfolder included
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


Listing = dict[str, RemoteFile]  # keyed by path inside the repo


@dataclass(frozen=True)
class _Hub:
    endpoint: str
    repo: str
    token: str | None
    retries: int
    backoff: float

    def open(self, url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
        if self.token:
            # Unredirected: _SameHostAuth decides whether a redirect target may see the token.
            req.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            return _OPENER.open(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code >= 500 or e.code in RETRY_STATUSES:
                raise _Transient(f"HTTP {e.code} for {url}") from None
            raise HTTPStatusError(e.code, url, e.headers.get("X-Error-Message"), bool(self.token)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise _Transient(f"{url}: {getattr(e, 'reason', e)}") from None

    def retrying(self, what: str, action: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return action()
            except _Transient as e:
                if attempt >= self.retries:
                    raise DownloadError(f"{what}: {e} (gave up after {attempt + 1} attempts)") from None
                delay = min(self.backoff * 2 ** attempt, MAX_DELAY)
                attempt += 1
                _log(f"  {what}: {e}; retry {attempt}/{self.retries} in {delay:.0f}s")
                time.sleep(delay)

    def file_url(self, revision: str, path: str) -> str:
        return f"{self.endpoint}/{self.repo}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(path)}"


class _SameHostAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, re-sending the token only to the same scheme://host:port.

    The hub redirects weight files to a CDN; like huggingface_hub, we must not hand it our token.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.get_header("Authorization")
        same = urllib.parse.urlsplit(newurl)[:2] == urllib.parse.urlsplit(req.full_url)[:2]
        if new is not None and auth and same:
            new.add_unredirected_header("Authorization", auth)
        return new


_OPENER = urllib.request.build_opener(_SameHostAuth)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- listing --------------------------------------------------------------------------------


def list_repo(hub: _Hub, revision: str) -> tuple[str, Listing | None]:
    """(commit to download from, files) from the hub API; files is None if the API omits them."""
    url = (f"{hub.endpoint}/api/models/{hub.repo}/revision/"
           f"{urllib.parse.quote(revision, safe='')}?blobs=true")

    def fetch() -> bytes:
        with hub.open(url) as resp:
            return resp.read()

    try:
        info = json.loads(hub.retrying(f"listing {hub.repo}", fetch))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DownloadError(f"{url}: not a JSON model description ({e})") from None
    if not isinstance(info, dict):
        raise DownloadError(f"{url}: not a JSON model description")
    # Pin the commit so that a branch moving mid-download cannot mix files (or resumed bytes)
    # from two revisions.
    sha = info.get("sha")
    commit = sha if isinstance(sha, str) and COMMIT.fullmatch(sha) else revision
    siblings = info.get("siblings")
    if not isinstance(siblings, list):
        return commit, None
    return commit, {f.path: f for f in map(_remote_file, siblings) if f is not None}


def _remote_file(sibling: object) -> RemoteFile | None:
    if not isinstance(sibling, dict) or not isinstance(sibling.get("rfilename"), str):
        return None
    lfs = sibling.get("lfs") if isinstance(sibling.get("lfs"), dict) else {}
    size = lfs.get("size", sibling.get("size"))
    sha = lfs.get("sha256")
    return RemoteFile(sibling["rfilename"],
                      size if isinstance(size, int) and size >= 0 else None,
                      sha.lower() if isinstance(sha, str) and SHA256.fullmatch(sha.lower()) else None)


def _check_layout(listing: Listing, prefix: str, where: str) -> None:
    """Fail before downloading anything if the repo cannot yield a loadable checkpoint."""
    if prefix + CONFIG not in listing:
        nested = sorted(p[: -len(CONFIG) - 1] for p in listing if p.endswith("/" + CONFIG))
        hint = f"; found it under: {', '.join(nested)} (pass --subfolder)" if nested else ""
        raise DownloadError(f"{where}: no {prefix}{CONFIG}{hint}")
    missing = [prefix + n for n in TOKENIZER_FILES if prefix + n not in listing]
    if missing:
        raise DownloadError(f"{where}: missing {', '.join(missing)}")
    if prefix + INDEX in listing or prefix + SINGLE in listing:
        return
    here = [p for p in listing if p.startswith(prefix) and "/" not in p[len(prefix):]]
    pickles = sorted(p for p in here if p.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise DownloadError(f"{where}: only pickle weights ({', '.join(pickles)}); refused, since unpickling "
                            f"can run arbitrary code. Convert them to safetensors or use a repo that ships "
                            f"{SINGLE}.")
    raise DownloadError(f"{where}: no {prefix}{SINGLE} or {prefix}{INDEX}")


# --- one file -------------------------------------------------------------------------------


def _problem(path: Path, remote: RemoteFile) -> str | None:
    """Why `path` does not match what the hub lists, or None when it does (or nothing is listed)."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{remote.name}: size mismatch: expected {remote.size} bytes, got {size}"
    if remote.sha256 is not None:
        digest = _sha256(path)
        if digest != remote.sha256:
            return f"{remote.name}: checksum mismatch: expected sha256 {remote.sha256}, got {digest}"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class _Progress:
    def __init__(self, name: str, done: int, total: int | None) -> None:
        self.name, self.done, self.total = name, done, total
        self.last, self.shown = 0.0, -1

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.last >= PROGRESS_EVERY:
            self.show()

    def show(self) -> None:
        self.last, self.shown = time.monotonic(), self.done
        of = f" of {_human(self.total)} ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"\r  {self.name}: {_human(self.done)}{of}   ", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.shown != self.done:
            self.show()
        print(file=sys.stderr, flush=True)


def _human(n: float) -> str:
    units = ("B", "KB", "MB", "GB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _content_range_start(resp: http.client.HTTPResponse) -> int | None:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
    return int(m.group(1)) if m else None


def _transfer(hub: _Hub, url: str, part: Path, remote: RemoteFile) -> None:
    """One attempt to bring `part` to the full file, appending to what an earlier attempt left."""
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()  # left by another revision or a misbehaving server: useless
        have = 0
    if remote.size is not None and have == remote.size:
        return  # every byte is there; only verification is left
    try:
        resp = hub.open(url, {"Range": f"bytes={have}-"} if have else None)
    except HTTPStatusError as e:
        if e.status != 416 or not have:
            raise
        _log(f"  {remote.name}: server refused to resume at byte {have}; restarting from zero")
        part.unlink()
        return _transfer(hub, url, part, remote)
    with resp:
        if resp.status == 206:
            if _content_range_start(resp) not in (None, have):
                part.unlink()
                raise _Transient(f"server answered bytes {resp.headers['Content-Range']} to bytes={have}-")
            if have:
                _log(f"  {remote.name}: resuming at byte {have}")
        else:
            if have:
                _log(f"  {remote.name}: server ignored the Range request; restarting from zero")
            have = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = remote.size if remote.size is not None else (have + expected if expected is not None else None)
        received = _copy(resp, part, "ab" if have else "wb", _Progress(remote.name, have, total))
    if expected is not None and received < expected:
        raise _Transient(f"connection closed after {have + received} of {have + expected} bytes of {url}")


def _copy(resp: http.client.HTTPResponse, part: Path, mode: str, progress: _Progress) -> int:
    received = 0
    try:
        with part.open(mode) as out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"connection lost: {e!r}") from None
                if not chunk:
                    return received
                out.write(chunk)
                received += len(chunk)
                progress.add(len(chunk))
    finally:
        progress.close()


def fetch_file(hub: _Hub, commit: str, remote: RemoteFile, out: Path, *, missing_ok: bool = False) -> Path | None:
    """Download one file into `out` unless an identical one is there; None if absent and missing_ok."""
    dest = out / remote.name
    if dest.exists():
        problem = _problem(dest, remote)
        if problem is None:
            _log(f"  {remote.name}: already complete, skipped")
            return dest
        _log(f"  {problem}; downloading it again")
    part = dest.with_name(dest.name + ".part")
    url = hub.file_url(commit, remote.path)
    try:
        hub.retrying(remote.name, lambda: _transfer(hub, url, part, remote))
    except HTTPStatusError as e:
        if missing_ok and e.status == 404:
            return None
        raise
    problem = _problem(part, remote)
    if problem is not None:
        # Resuming from these bytes cannot help; the next run starts afresh.
        part.unlink()
        raise DownloadError(f"{problem} ({url}); the partial file was removed, run again to retry")
    os.replace(part, dest)  # a file under its final name is always complete
    return dest


# --- the checkpoint -------------------------------------------------------------------------


def _shard_names(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise DownloadError(f"{index}: not a valid safetensors index ({e!r})") from None
    for name in names:
        # Shard names become local paths: never let the index write outside the output dir.
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") \
                or not name.endswith(".safetensors"):
            raise DownloadError(f"{index}: refusing shard name {name!r} (expected a plain *.safetensors name)")
    return names


def _lookup(listing: Listing | None, path: str, where: str) -> RemoteFile:
    if listing is None:
        return RemoteFile(path)  # unlisted: fetched without size or checksum checks
    if path not in listing:
        raise DownloadError(f"{where}: {path} is referenced but not in the repo")
    return listing[path]


def _fetch_weights(hub: _Hub, commit: str, listing: Listing | None, prefix: str, out: Path, where: str) -> None:
    if listing is None:  # nothing listed: probe for the index, else take the single file
        index = fetch_file(hub, commit, RemoteFile(prefix + INDEX), out, missing_ok=True)
    elif prefix + INDEX in listing:
        index = fetch_file(hub, commit, listing[prefix + INDEX], out)
    else:
        index = None
    if index is None:
        fetch_file(hub, commit, _lookup(listing, prefix + SINGLE, where), out)
        return
    for shard in _shard_names(index):
        fetch_file(hub, commit, _lookup(listing, prefix + shard, where), out)


def default_out_dir(repo: str, subfolder: str | None = None) -> Path:
    """<name>[-<subfolder>] in weights_dir(), where cascadener.qwen2.locate looks for checkpoints."""
    name = repo.rsplit("/", 1)[-1]
    return weights_dir() / (f"{name}-{subfolder.replace('/', '-')}" if subfolder else name)


def download(repo: str, out_dir: str | os.PathLike[str] | None = None, *, revision: str = "main",
             endpoint: str | None = None, token: str | None = None, subfolder: str | None = None,
             retries: int = 5, backoff: float = 1.0) -> Path:
    """Download `repo` (e.g. "Qwen/Qwen2.5-0.5B-Instruct") into `out_dir` and return that directory.

    `out_dir` defaults to default_out_dir(repo, subfolder), where the project looks for weights.
    `endpoint` defaults to $HF_ENDPOINT, else the public hub; `token` defaults to $HF_TOKEN.
    `subfolder` selects a checkpoint stored in a folder of the repo. Transient failures are retried
    `retries` times per file, waiting backoff, 2*backoff, ... seconds (at most MAX_DELAY).
    """
    if not REPO_ID.fullmatch(repo) or ".." in repo:
        raise DownloadError(f"{repo!r} is not a hub repo id like Qwen/Qwen2.5-0.5B-Instruct")
    subfolder = (subfolder or "").strip("/")
    if subfolder and any(p in ("", ".", "..") for p in subfolder.split("/")):
        raise DownloadError(f"invalid subfolder {subfolder!r}")
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise DownloadError(f"endpoint {endpoint!r} is not an http(s) URL")
    hub = _Hub(endpoint, repo, token or os.environ.get("HF_TOKEN") or None, retries, backoff)
    out = Path(out_dir) if out_dir is not None else default_out_dir(repo, subfolder)
    prefix = f"{subfolder}/" if subfolder else ""
    where = f"{endpoint}/{repo}@{revision}"

    commit, listing = list_repo(hub, revision)
    if listing is None:
        _log(f"{where}: the hub API lists no files; fetching the standard names without size/sha256 checks")
    else:
        _check_layout(listing, prefix, where)
    out.mkdir(parents=True, exist_ok=True)
    _log(f"{where} ({commit}) -> {out}")

    _fetch_weights(hub, commit, listing, prefix, out, where)
    for name in TOKENIZER_FILES:
        fetch_file(hub, commit, _lookup(listing, prefix + name, where), out)
    for name in OPTIONAL_FILES:
        if listing is None or prefix + name in listing:
            fetch_file(hub, commit, _lookup(listing, prefix + name, where), out, missing_ok=True)
    # Last: the project (and tests/conftest.py) treat a directory holding config.json as a checkpoint.
    fetch_file(hub, commit, _lookup(listing, prefix + CONFIG, where), out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cascadener.qwen2.download",
                                 description="Download an official Qwen2 checkpoint (safetensors only) from the "
                                             "Hugging Face hub; resumable and verified.")
    ap.add_argument("repo", help="hub repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    ap.add_argument("--out", help=f"output directory (default: {weights_dir()}/<repo name>[-<subfolder>])")
    ap.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    ap.add_argument("--subfolder", help="folder of the repo that holds the checkpoint")
    ap.add_argument("--endpoint", help=f"hub URL (default: $HF_ENDPOINT, else {DEFAULT_ENDPOINT})")
    ap.add_argument("--token", help="access token for private or gated repos (default: $HF_TOKEN)")
    args = ap.parse_args(argv)
    try:
        out = download(args.repo, args.out, revision=args.revision, endpoint=args.endpoint,
                       token=args.token, subfolder=args.subfolder)
    except DownloadError as e:
        _log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted; partial files (*.part) are kept, run the same command again to resume")
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
