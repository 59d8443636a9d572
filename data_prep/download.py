"""Download files into the cache: atomic, resumable, verified, retried with backoff, bounded in concurrency.

`fetch(url, dest)` is the one way a benchmark file reaches the disk (the sources, `data_prep/sources.py`, say which
URL goes where; the `moe-ts data` command drives it). Its rules:

- **Cache hit.** A `dest` that exists and verifies is returned without touching the network. It verifies against
  the pinned `checksum` if one is given, else against the lock file's entry for `key` (default: the URL); with
  neither, a present file is taken as is (a file the user put there by hand). A present file that fails its
  checksum is moved to `<dest>.quarantine` and downloaded again (offline: an error, nothing moved).
- **Atomic.** Bytes go to `<dest>.part` in the same folder, flushed chunk by chunk, and become `dest` by one
  `os.replace` only once complete, fsynced and verified: a partial file is never visible under the final name,
  whatever kills the process. An advisory lock on the `.part` (POSIX `flock`) refuses a second writer.
- **Resumable.** A `.part` left by an earlier try or a killed process is resumed with `Range: bytes=N-`; a 206
  appends, a 200 (a server that ignores Range) restarts from byte 0, a 416 for a `.part` that is already whole
  finishes it. We ask for `Accept-Encoding: identity`, so byte offsets are the file's own.
- **Retried.** Connection errors, timeouts, a connection dropped mid-file, 5xx, 408 and 429 are retried with
  exponential backoff (`backoff_s * 2**k`, at most MAX_BACKOFF_S) up to `retries` times; a try that made the
  `.part` grow does not count against `retries` (at most MAX_RESUMES such tries). Other 4xx (404, 403, ...) fail
  at once. When no try ever reached the server (DNS failure, connection refused, connect timeout) the error is an
  `OfflineError`: the URL and the path to put the file at, as when `HF_HUB_OFFLINE` / `MOE_TS_OFFLINE` is set (then
  nothing is written at all). A lost connection costs at most one CHUNK_BYTES read (urllib3 drops a short read).
- **Verified.** After the download: the pinned checksum, else the lock's entry, else trust on first use (the
  SHA-256 is recorded in the lock, which the user can commit, and enforced from then on). A mismatch moves the file
  to `<dest>.quarantine` (replacing an older one) and raises one line with both digests. A pinned checksum always
  wins over the lock: with a pin the lock is neither read nor written.
- **Visible.** A tqdm bytes bar (size, rate, ETA), shown only on a terminal and when `progress=True`.

Errors are `DownloadError` (an `OfflineError` for "no network"), each one line naming the URL and / or the file.
The lock file is JSON `{key: {"algo", "hexdigest", "url", "size"}}`, sorted and indented so that it diffs well,
rewritten atomically; concurrent writers in one process are serialised (across processes the read-merge-write
window is milliseconds, not locked). It imports nothing of the project (docs/ARCHITECTURE.md §1), so `eval`,
`prepare` and the CLI share one cache.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Sequence, get_args

import requests
import urllib3.exceptions
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no advisory lock on the .part file
    fcntl = None  # type: ignore[assignment]

CACHE_ENV = "MOE_TS_CACHE"
LOCK_ENV = "MOE_TS_CHECKSUM_LOCK"
OFFLINE_ENVS = ("HF_HUB_OFFLINE", "MOE_TS_OFFLINE")
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
LOCK_NAME = "checksums.lock.json"
CHUNK_BYTES = 1 << 18  # bytes per network read; each chunk is flushed, so a killed process keeps what it received
HASH_BLOCK = 1 << 20  # bytes per read when hashing a file
MAX_BACKOFF_S = 60.0
MAX_RESUMES = 50  # tries that made progress (not counted against `retries`) are still capped: no endless loop
RETRY_STATUSES = frozenset({408, 429})  # 4xx worth retrying (timeout, rate limit); every 5xx is retried too
USER_AGENT = "moe-ts-download/1"

Algo = Literal["sha256", "md5", "git-blob-sha1"]
ALGOS: tuple[str, ...] = get_args(Algo)
_HASHLIB_NAME = {"sha256": "sha256", "md5": "md5", "git-blob-sha1": "sha1"}
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_LOCK_MUTEX = threading.Lock()  # serialises lock-file updates of this process (fetch_many threads)
log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download failed or its file is wrong; the message is one line naming the URL and / or the file."""


class OfflineError(DownloadError):
    """No network (offline by setting or no route): the URL and the path to put the file at, one line."""


def cache_dir() -> Path:
    """The download cache: $MOE_TS_CACHE, else $XDG_CACHE_HOME/moe-ts, else ~/.cache/moe-ts (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "moe-ts"


def default_lock_path() -> Path:
    """The checksum lock file: $MOE_TS_CHECKSUM_LOCK, else <cache>/checksums.lock.json."""
    env = os.environ.get(LOCK_ENV)
    return Path(env).expanduser() if env else cache_dir() / LOCK_NAME


def offline() -> bool:
    """True when HF_HUB_OFFLINE or MOE_TS_OFFLINE is set to a true word (1, true, yes, on)."""
    return any(os.environ.get(name, "").strip().lower() in TRUE_WORDS for name in OFFLINE_ENVS)


def file_digest(path: Path, algo: str) -> str:
    """Hex digest of a file, read in blocks; git-blob-sha1 is sha1(b"blob <size>\\0" + data), git's blob id."""
    digest = hashlib.new(_HASHLIB_NAME[algo], usedforsecurity=False)
    with open(path, "rb") as handle:
        if algo == "git-blob-sha1":
            digest.update(b"blob %d\0" % os.fstat(handle.fileno()).st_size)
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checksum:
    """An expected digest of a file: algorithm and lower-case hex (checked on construction)."""

    algo: Algo
    hexdigest: str

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown checksum algorithm {self.algo!r} (known: {', '.join(ALGOS)})")
        digest = str(self.hexdigest).strip().lower()
        width = 2 * hashlib.new(_HASHLIB_NAME[self.algo], usedforsecurity=False).digest_size
        if len(digest) != width or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"{self.algo} digest {self.hexdigest!r} is not {width} hex digits")
        object.__setattr__(self, "hexdigest", digest)

    @classmethod
    def of(cls, path: Path, algo: Algo = "sha256") -> Checksum:
        """The checksum of a file as it is."""
        return cls(algo, file_digest(path, algo))

    def matches(self, path: Path) -> bool:
        """Whether the file hashes to this digest (streamed, bounded memory)."""
        return file_digest(path, self.algo) == self.hexdigest

    def __str__(self) -> str:
        return f"{self.algo}:{self.hexdigest}"


class ChecksumLock:
    """Checksums recorded on first download (trust on first use), enforced after; a JSON file the user can commit."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_lock_path()

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry of the lock file ({} when it does not exist yet)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise DownloadError(f"{self.path}: unreadable checksum lock ({_one_line(err)})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise DownloadError(f"{self.path}: a checksum lock must be a JSON object of objects")
        return data

    def get(self, key: str) -> Checksum | None:
        """The recorded checksum for `key`, or None."""
        entry = self.entries().get(key)
        if entry is None:
            return None
        try:
            return Checksum(entry["algo"], entry["hexdigest"])
        except (KeyError, TypeError, ValueError) as err:
            raise DownloadError(f"{self.path}: entry {key!r} is not a checksum ({_one_line(err)})") from None

    def record(self, key: str, checksum: Checksum, url: str, size: int) -> None:
        """Add or replace the entry for `key` and rewrite the file atomically."""
        with _LOCK_MUTEX:
            entries = self.entries()
            entries[key] = {"algo": checksum.algo, "hexdigest": checksum.hexdigest, "url": url, "size": int(size)}
            _write_json_atomic(self.path, entries)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a sibling temporary file (plain open: the user's umask), fsync it, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{path}: cannot write the checksum lock ({_one_line(err)})") from None


class _Retry(Exception):
    """A try failed in a way worth retrying; `unreachable`: the server was never reached."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


def fetch(url: str, dest: Path, *, checksum: Checksum | None = None, lock: ChecksumLock | None = None,
          key: str | None = None, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 60.0,
          progress: bool = True) -> Path:
    """Download `url` to `dest` (atomic, resumable, verified, retried) unless a verified copy is there; returns dest.

    `checksum` pins the file; without it the lock's entry for `key` (default: the URL) is enforced, and with no
    entry the SHA-256 is recorded there. `lock` defaults to ChecksumLock() ($MOE_TS_CHECKSUM_LOCK or the cache's).
    """
    dest = Path(dest)
    key = key or url
    if checksum is None and lock is None:
        lock = ChecksumLock()
    expected = checksum if checksum is not None else lock.get(key)  # type: ignore[union-attr]
    if dest.exists() and _cached_ok(url, dest, expected):
        return dest
    if offline():
        raise OfflineError(f"{url}: offline (HF_HUB_OFFLINE / MOE_TS_OFFLINE is set); "
                           f"download it yourself and put it at {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"{dest.parent}: cannot create the download folder ({_one_line(err)})") from None
    part = _sibling(dest, ".part")
    with _claimed(part, url) as handle:
        try:
            _download(url, dest, part, handle, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                      progress=progress)
        except BaseException:
            if _size(handle) == 0:
                part.unlink(missing_ok=True)  # nothing received: leave nothing behind
            raise
        _install(url, dest, part, handle, expected)
    if expected is None:
        lock.record(key, Checksum.of(dest), url, dest.stat().st_size)  # type: ignore[union-attr]
    return dest


def _sibling(dest: Path, suffix: str) -> Path:
    """`dest` with a suffix appended to its name (same folder, so os.replace stays atomic)."""
    return dest.with_name(dest.name + suffix)


def _cached_ok(url: str, dest: Path, expected: Checksum | None) -> bool:
    """Whether the present `dest` can be used; a file failing its checksum is quarantined (online) or refused."""
    if not dest.is_file():
        raise DownloadError(f"{dest}: exists and is not a file; remove it to download {url}")
    if expected is None:
        return True
    got = file_digest(dest, expected.algo)
    if got == expected.hexdigest:
        return True
    if offline():
        raise DownloadError(f"{dest}: {expected.algo} is {got}, expected {expected.hexdigest}; offline, so not "
                            f"downloaded again: download {url} yourself and put it there")
    moved = _quarantine(dest, dest)
    log.warning("%s: %s is %s, expected %s; moved to %s, downloading %s again",
                dest, expected.algo, got, expected.hexdigest, moved, url)
    return False


def _quarantine(path: Path, dest: Path) -> Path:
    """Move a file that failed verification to <dest>.quarantine (replacing an older one)."""
    target = _sibling(dest, ".quarantine")
    os.replace(path, target)
    return target


@contextmanager
def _claimed(part: Path, url: str) -> Iterator[BinaryIO]:
    """The .part file opened for appending, with an exclusive advisory lock (a second writer is refused)."""
    try:
        handle = open(part, "ab")
    except OSError as err:
        raise DownloadError(f"{part}: cannot open for writing ({_one_line(err)})") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"{part}: another download of {url} is writing this file; "
                                    "wait for it to finish") from None
        yield handle


def _size(handle: BinaryIO) -> int:
    """Bytes in the .part file (after flushing what is buffered)."""
    handle.flush()
    return os.fstat(handle.fileno()).st_size


def _truncate(handle: BinaryIO) -> None:
    """Empty the .part file (appends then start at byte 0)."""
    handle.flush()
    handle.truncate(0)


def _download(url: str, dest: Path, part: Path, handle: BinaryIO, *, retries: int, backoff_s: float,
              timeout_s: float, progress: bool) -> None:
    """Tries until the .part holds the whole body; raises DownloadError / OfflineError when out of tries."""
    failures, resumes, tries, reached = 0, 0, 0, False
    bar = tqdm(desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024, disable=None if progress else True)
    with requests.Session() as session, bar:
        while True:
            before = _size(handle)
            tries += 1
            try:
                _attempt(session, url, part, handle, timeout_s, bar)
                return
            except _Retry as err:
                reached = reached or not err.unreachable
                reason = str(err)
            grew = _size(handle) > before
            failures, resumes = (0, resumes + 1) if grew else (failures + 1, resumes)
            if failures > retries or resumes > MAX_RESUMES:
                break
            delay = min(backoff_s * 2 ** max(failures - 1, 0), MAX_BACKOFF_S)
            log.info("%s: %s; try %d again in %.1f s", url, reason, tries + 1, delay)
            time.sleep(delay)
    if not reached:
        raise OfflineError(f"{url}: no route ({reason}, {tries} tries); download it yourself and put it at {dest}")
    kept = f"; the partial download is kept in {part}" if _size(handle) else ""
    raise DownloadError(f"{url}: {reason} ({tries} tries){kept}")


def _attempt(session: requests.Session, url: str, part: Path, handle: BinaryIO, timeout_s: float, bar: tqdm) -> None:
    """One request: resume from the .part's size, append the body; _Retry for what is worth another try."""
    have = _size(handle)
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _Retry(_network_reason(err), unreachable=_unreachable(err)) from None
    except requests.RequestException as err:  # a malformed URL, too many redirects: no use retrying
        raise DownloadError(f"{url}: {_network_reason(err)}") from None
    with response:
        total = _start_body(url, response, have, handle)
        if total is None and response.status_code == 416:
            return  # the .part was already whole
        _bar_at(bar, _size(handle), total)
        _receive(response, part, handle, bar)
    got = _size(handle)
    if total is not None and got > total:
        _truncate(handle)
        raise _Retry(f"received {got} bytes, {total} announced; restarting from byte 0")
    if total is not None and got != total:
        raise _Retry(f"connection closed at byte {got} of {total}")


def _start_body(url: str, response: requests.Response, have: int, handle: BinaryIO) -> int | None:
    """Check the status and where the body starts (truncating the .part when it restarts); the expected total."""
    status = response.status_code
    if status == 416 and have:
        if _content_range_total(response) == have:
            return None
        _truncate(handle)
        raise _Retry(f"HTTP 416 for a {have}-byte partial download; restarting from byte 0")
    if status >= 500 or status in RETRY_STATUSES:
        raise _Retry(f"HTTP {status} {response.reason}")
    if status not in (200, 206):
        raise DownloadError(f"{url}: HTTP {status} {response.reason}")
    if status == 206:
        start = _content_range_start(response)
        if start != have:
            _truncate(handle)
            raise _Retry(f"asked for bytes from {have}, the server sent them from {start}; restarting")
        return _content_range_total(response)
    if have:
        log.info("%s: the server ignored the Range request; restarting from byte 0", url)
        _truncate(handle)
    length = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    return int(length) if length and length.isdigit() and not encoded else None


def _content_range_start(response: requests.Response) -> int | None:
    """The first byte of a 206 body, from `Content-Range: bytes A-B/T`."""
    found = re.match(r"\s*bytes\s+(\d+)-\d+/", response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _content_range_total(response: requests.Response) -> int | None:
    """The full size from `Content-Range: bytes A-B/T` or `bytes */T` (None when unknown)."""
    found = re.match(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)", response.headers.get("Content-Range", ""))
    return int(found.group(1)) if found else None


def _receive(response: requests.Response, part: Path, handle: BinaryIO, bar: tqdm) -> None:
    """Append the body to the .part chunk by chunk (each flushed); a broken connection is a _Retry."""
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            try:
                handle.write(chunk)
                handle.flush()
            except OSError as err:
                raise DownloadError(f"{part}: cannot write ({_one_line(err)})") from None
            bar.update(len(chunk))
    except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as err:  # requests' errors are OSErrors
        raise _Retry(f"connection dropped at byte {_size(handle)} ({_network_reason(err)})") from None


def _bar_at(bar: tqdm, have: int, total: int | None) -> None:
    """Restart the progress bar for a new try at `have` bytes of `total`."""
    bar.reset(total=total)
    bar.update(have)


def _install(url: str, dest: Path, part: Path, handle: BinaryIO, expected: Checksum | None) -> None:
    """fsync the complete .part, check it against `expected` (quarantine on mismatch), then move it to `dest`."""
    handle.flush()
    os.fsync(handle.fileno())
    if expected is not None:
        got = file_digest(part, expected.algo)
        if got != expected.hexdigest:
            moved = _quarantine(part, dest)
            raise DownloadError(f"{dest}: {expected.algo} mismatch for {url}: expected {expected.hexdigest}, "
                                f"got {got}; the download was moved to {moved}")
    os.replace(part, dest)


def _unreachable(err: BaseException) -> bool:
    """Whether a requests error means the server was never reached (DNS, refused, connect timeout)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    cause = _urllib3_cause(err)
    return isinstance(cause, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _urllib3_cause(err: BaseException) -> BaseException:
    """The urllib3 reason inside a requests error (requests wraps MaxRetryError, whose .reason is the cause)."""
    inner = err.args[0] if err.args and isinstance(err.args[0], BaseException) else err
    reason = getattr(inner, "reason", None)
    return reason if isinstance(reason, BaseException) else inner


def _network_reason(err: BaseException) -> str:
    """A short reason for a network error ("DNS lookup failed: ...", "Connection refused", "timed out", ...)."""
    cause = _urllib3_cause(err)
    errno_text = _ERRNO_TEXT.search(str(cause))
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        return "DNS lookup failed" + (f": {errno_text.group(1).strip()}" if errno_text else "")
    if errno_text:
        return errno_text.group(1).strip()
    if isinstance(err, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
        return "timed out"
    return f"{type(cause).__name__}: {_one_line(cause)}"[:300]


def _one_line(err: BaseException) -> str:
    """An exception's text on one line."""
    text = str(err) or type(err).__name__
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def fetch_many(jobs: Sequence[tuple[str, Path, dict]], max_workers: int = 4, *,
               keep_going: bool = False) -> list[Path]:
    """fetch() every (url, dest, kwargs) job on at most `max_workers` threads; the paths, in job order.

    On the first failure the jobs not yet started are cancelled (unless `keep_going`), the running ones finish, and
    then that failure is raised. Jobs naming the same `dest` run once.
    """
    if not jobs:
        return []
    futures: list[Future[Path]] = []
    by_dest: dict[Path, Future[Path]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as pool:
        for url, dest, kwargs in jobs:
            where = Path(dest).absolute()
            if where not in by_dest:
                by_dest[where] = pool.submit(fetch, url, Path(dest), **dict(kwargs))
            futures.append(by_dest[where])
        first = _first_failure(list(by_dest.values()), keep_going)
    if first is not None:
        raise first
    return [future.result() for future in futures]


def _first_failure(futures: list[Future[Path]], keep_going: bool) -> BaseException | None:
    """Wait for the futures; the first exception in completion order (cancelling the rest unless keep_going)."""
    first: BaseException | None = None
    for future in as_completed(futures):
        if future.cancelled() or future.exception() is None:
            continue
        if first is None:
            first = future.exception()
            if not keep_going:
                for other in futures:
                    other.cancel()
    return first
