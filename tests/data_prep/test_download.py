"""data_prep.download against a loopback HTTP server: cache hits, checksums and the lock, retries, resume after a
dropped connection and after a real SIGKILL, servers that ignore Range, offline and unreachable hosts, fetch_many.

No internet: `server` is a ThreadingHTTPServer on 127.0.0.1 serving bytes from a dict, with Range support and
switches to fail with 500, answer 404, drop the connection, ignore Range or stream slowly.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_prep import download
from data_prep.download import (Checksum, ChecksumLock, DownloadError, OfflineError, cache_dir, fetch, fetch_many,
                                offline)

ROOT = Path(__file__).resolve().parents[2]
FAST = {"backoff_s": 0.001, "progress": False}  # retries without waiting


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Served:
    """One file of the test server and how it misbehaves."""

    body: bytes
    fail_500: int = 0  # answer 500 this many times first
    status: int | None = None  # always answer this status (e.g. 404)
    drop_after: int | None = None  # on the next request, close the connection after this many body bytes
    drop_every: int | None = None  # on every request, close the connection after this many body bytes
    ignore_range: bool = False  # answer 200 with the whole body even to a Range request
    slow_s: float = 0.0  # pause between 1 KiB writes, on requests without a Range header


class Handler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-` (206 / 416), driven by the server's `files` and `Served` switches."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        srv = self.server
        with srv.mutex:
            srv.log.append((self.path, self.headers.get("Range")))
            item = srv.files.get(self.path)
            fail = item is not None and item.fail_500 > 0
            if fail:
                item.fail_500 -= 1
            drop, item_drop = (item.drop_after, None) if item is not None else (None, None)
            if item is not None:
                item.drop_after = item_drop
        if item is None or item.status:
            return self.empty(404 if item is None else item.status)
        if fail:
            return self.empty(500)
        self.send_body(item, drop)

    def empty(self, status: int, headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_body(self, item: Served, drop: int | None) -> None:
        body, start = item.body, 0
        asked = self.headers.get("Range")
        if asked and not item.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            if start >= len(body):
                return self.empty(416, {"Content-Range": f"bytes */{len(body)}"})
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        drop = drop if drop is not None else item.drop_every
        rest = body[start:] if drop is None else body[start:start + drop]
        pause = item.slow_s if not asked else 0.0
        try:
            for i in range(0, len(rest), 1024):
                self.wfile.write(rest[i:i + 1024])
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except OSError:  # the client went away (killed)
            pass
        self.close_connection = True


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Online, with the cache and the lock under tmp_path, no proxy for loopback (conftest sets HF_HUB_OFFLINE)."""
    for name in ("HF_HUB_OFFLINE", "MOE_TS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MOE_TS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOE_TS_CHECKSUM_LOCK", str(tmp_path / "lock.json"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    """A loopback HTTP server: `server.files[path] = Served(...)`, `server.url(path)`, `server.log` of requests."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.mutex = {}, [], threading.Lock()
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text, text
    return text


def lock_entries(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "lock.json").read_text())


# --- checksums, settings, the lock ------------------------------------------------------------------------------


def test_checksum_algorithms(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert Checksum("git-blob-sha1", "ce013625030ba8dba906f756967f9e9ca394464a").matches(path)  # `git hash-object`
    assert Checksum("md5", "B1946AC92492D2347C6235B4D2611184").matches(path)  # upper case accepted, lowered
    assert Checksum.of(path) == Checksum("sha256", sha256(b"hello\n"))
    assert not Checksum("sha256", sha256(b"hello")).matches(path)
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        Checksum("sha1", "0" * 40)
    with pytest.raises(ValueError, match="not 64 hex digits"):
        Checksum("sha256", "abc")


def test_cache_dir_and_offline_settings(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MOE_TS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "moe-ts"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "moe-ts"
    monkeypatch.delenv("MOE_TS_CHECKSUM_LOCK")
    assert ChecksumLock().path == tmp_path / "home" / ".cache" / "moe-ts" / "checksums.lock.json"
    assert not offline()
    for name, value, expected in [("MOE_TS_OFFLINE", "1", True), ("HF_HUB_OFFLINE", "TRUE", True),
                                  ("HF_HUB_OFFLINE", "on", True), ("HF_HUB_OFFLINE", "0", False),
                                  ("MOE_TS_OFFLINE", "", False)]:
        monkeypatch.setenv(name, value)
        assert offline() is expected, (name, value)
        monkeypatch.delenv(name)


def test_lock_file_round_trip_and_errors(tmp_path):
    lock = ChecksumLock(tmp_path / "sub" / "lock.json")
    assert lock.get("a") is None
    lock.record("b", Checksum("md5", "0" * 32), "http://x/b", 3)
    lock.record("a", Checksum("sha256", "1" * 64), "http://x/a", 5)
    assert lock.get("a") == Checksum("sha256", "1" * 64)
    text = (tmp_path / "sub" / "lock.json").read_text()
    assert list(json.loads(text)) == ["a", "b"] and text.endswith("\n")  # sorted, diff-friendly
    assert json.loads(text)["b"] == {"algo": "md5", "hexdigest": "0" * 32, "url": "http://x/b", "size": 3}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["lock.json"]  # no temporary file left
    (tmp_path / "sub" / "lock.json").write_text("{not json")
    with pytest.raises(DownloadError, match="unreadable checksum lock") as err:
        lock.get("a")
    assert str(tmp_path / "sub" / "lock.json") in one_line(err.value)
    (tmp_path / "sub" / "lock.json").write_text(json.dumps({"a": {"algo": "crc32", "hexdigest": "00"}}))
    with pytest.raises(DownloadError, match="entry 'a' is not a checksum"):
        lock.get("a")


# --- fetch ------------------------------------------------------------------------------------------------------


def test_download_then_served_from_the_cache(server, tmp_path):
    body = payload(300_000)
    server.files["/d/m4.zip"] = Served(body)
    url, dest = server.url("/d/m4.zip"), tmp_path / "cache" / "monash" / "m4.zip"
    assert fetch(url, dest, **FAST) == dest
    assert dest.read_bytes() == body
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m4.zip"]  # no .part left
    assert lock_entries(tmp_path)[url] == {"algo": "sha256", "hexdigest": sha256(body), "url": url,
                                           "size": len(body)}  # trust on first use
    assert fetch(url, dest, **FAST) == dest
    assert len(server.log) == 1  # the second call never reached the server


def test_pinned_checksum_mismatch_quarantines_the_file(server, tmp_path):
    body = payload(5000)
    server.files["/x.csv"] = Served(body)
    url, dest = server.url("/x.csv"), tmp_path / "x.csv"
    pin = Checksum("sha256", sha256(b"something else"))
    for _ in range(2):  # the second quarantine replaces the first
        with pytest.raises(DownloadError) as err:
            fetch(url, dest, checksum=pin, **FAST)
        text = one_line(err.value)
        for part in (str(dest), pin.hexdigest, sha256(body), str(tmp_path / "x.csv.quarantine"), url):
            assert part in text
    assert not dest.exists() and not (tmp_path / "x.csv.part").exists()
    assert (tmp_path / "x.csv.quarantine").read_bytes() == body
    assert not (tmp_path / "lock.json").exists()  # a pinned file is never recorded


def test_lock_records_first_download_and_refuses_a_changed_file(server, tmp_path):
    server.files["/e.csv"] = Served(b"a,b\n1,2\n")
    url, dest = server.url("/e.csv"), tmp_path / "data" / "e.csv"
    fetch(url, dest, key="lsf/e.csv", **FAST)
    assert lock_entries(tmp_path)["lsf/e.csv"]["hexdigest"] == sha256(b"a,b\n1,2\n")
    dest.unlink()
    server.files["/e.csv"] = Served(b"a,b\n1,3\n")  # the upstream file changed
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, key="lsf/e.csv", **FAST)
    text = one_line(err.value)
    assert sha256(b"a,b\n1,2\n") in text and sha256(b"a,b\n1,3\n") in text and "quarantine" in text
    assert not dest.exists()
    assert lock_entries(tmp_path)["lsf/e.csv"]["hexdigest"] == sha256(b"a,b\n1,2\n")  # the lock is not rewritten


def test_a_pinned_checksum_wins_over_the_lock(server, tmp_path):
    body = b"pinned body"
    server.files["/p"] = Served(body)
    url, dest = server.url("/p"), tmp_path / "p"
    lock = ChecksumLock(tmp_path / "lock.json")
    lock.record(url, Checksum("sha256", sha256(b"stale")), url, 5)
    fetch(url, dest, checksum=Checksum("sha256", sha256(body)), lock=lock, **FAST)
    assert dest.read_bytes() == body


def test_a_cached_file_failing_its_checksum_is_quarantined_and_downloaded_again(server, tmp_path):
    body = payload(2000)
    server.files["/c"] = Served(body)
    dest = tmp_path / "c"
    dest.write_bytes(b"corrupt")
    fetch(server.url("/c"), dest, checksum=Checksum("sha256", sha256(body)), **FAST)
    assert dest.read_bytes() == body and (tmp_path / "c.quarantine").read_bytes() == b"corrupt"


def test_404_fails_at_once(server, tmp_path):
    url, dest = server.url("/missing.zip"), tmp_path / "missing.zip"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, retries=4, **FAST)
    assert not isinstance(err.value, OfflineError)
    text = one_line(err.value)
    assert url in text and "HTTP 404" in text
    assert len(server.log) == 1  # no retry
    assert list(tmp_path.iterdir()) == []  # no empty .part left


def test_500_twice_then_success(server, tmp_path):
    server.files["/flaky"] = Served(b"x" * 1000, fail_500=2)
    dest = fetch(server.url("/flaky"), tmp_path / "flaky", retries=4, **FAST)
    assert dest.read_bytes() == b"x" * 1000
    assert len(server.log) == 3


def test_500_beyond_the_retries_gives_up_in_one_line(server, tmp_path):
    server.files["/down"] = Served(b"x", fail_500=10)
    with pytest.raises(DownloadError) as err:
        fetch(server.url("/down"), tmp_path / "down", retries=2, **FAST)
    assert not isinstance(err.value, OfflineError)  # the server was reached
    assert "HTTP 500" in one_line(err.value) and "3 tries" in str(err.value)
    assert len(server.log) == 3


def test_a_connection_dropped_mid_file_is_resumed_with_range(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK_BYTES", 4096)
    body = payload(200_000, seed=1)
    server.files["/big"] = Served(body, drop_after=120_000)
    dest = fetch(server.url("/big"), tmp_path / "big", checksum=Checksum("sha256", sha256(body)), **FAST)
    assert dest.read_bytes() == body
    assert len(server.log) == 2 and server.log[0][1] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", server.log[1][1]).group(1))
    assert 0 < resumed_at <= 120_000


def test_tries_that_make_progress_do_not_count_against_retries_but_are_capped(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK_BYTES", 512)
    body = payload(8192, seed=5)
    server.files["/trickle"] = Served(body, drop_every=1024)  # every answer stops after 1 KiB
    dest = fetch(server.url("/trickle"), tmp_path / "trickle", retries=0, **FAST)
    assert dest.read_bytes() == body and len(server.log) == 8
    monkeypatch.setattr(download, "MAX_RESUMES", 2)
    with pytest.raises(DownloadError, match="connection dropped") as err:
        fetch(server.url("/trickle"), tmp_path / "again", retries=0, **FAST)
    assert f"kept in {tmp_path / 'again.part'}" in one_line(err.value)
    assert (tmp_path / "again.part").stat().st_size == 3072  # 3 tries of 1 KiB, then it gave up
    assert not (tmp_path / "again").exists()


def test_a_server_ignoring_range_restarts_from_zero(server, tmp_path):
    body = payload(50_000, seed=2)
    server.files["/norange"] = Served(body, ignore_range=True)
    dest = tmp_path / "norange"
    (tmp_path / "norange.part").write_bytes(b"stale bytes that must not stay in front")
    fetch(server.url("/norange"), dest, **FAST)  # trust on first use: only the bytes prove the restart
    assert server.log == [("/norange", "bytes=39-")]
    assert dest.read_bytes() == body


def test_a_whole_part_file_is_finished_on_416(server, tmp_path):
    body = payload(10_000, seed=3)
    server.files["/whole"] = Served(body)
    (tmp_path / "whole.part").write_bytes(body)
    dest = fetch(server.url("/whole"), tmp_path / "whole", checksum=Checksum("sha256", sha256(body)), **FAST)
    assert dest.read_bytes() == body and server.log == [("/whole", f"bytes={len(body)}-")]


def test_a_second_writer_of_the_same_part_file_is_refused(server, tmp_path):
    server.files["/busy"] = Served(b"abc")
    with open(tmp_path / "busy.part", "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="another download"):
            fetch(server.url("/busy"), tmp_path / "busy", **FAST)
    assert server.log == [] and not (tmp_path / "busy").exists()


def test_sigkill_mid_download_then_a_rerun_completes(server, tmp_path):
    body = payload(400_000, seed=4)
    server.files["/slow"] = Served(body, slow_s=0.01)  # 4 s or more for the whole body, only without Range
    url, dest = server.url("/slow"), tmp_path / "dl" / "slow.bin"
    pin = Checksum("sha256", sha256(body))
    code = ("import sys\nfrom pathlib import Path\nimport data_prep.download as d\nd.CHUNK_BYTES = 1024\n"
            "d.fetch(sys.argv[1], Path(sys.argv[2]), checksum=d.Checksum('sha256', sys.argv[3]), progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest), pin.hexdigest], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = tmp_path / "dl" / "slow.bin.part"
    try:
        for _ in range(600):  # up to 30 s for the child to start and receive its first bytes
            if part.exists() and part.stat().st_size > 0:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = part.stat().st_size
    assert 0 < killed_at < len(body)
    assert not dest.exists()  # the partial file is never visible under the final name
    fetch(url, dest, checksum=pin, **FAST)
    assert dest.read_bytes() == body and not part.exists()
    assert server.log[-1] == ("/slow", f"bytes={killed_at}-")


@pytest.mark.parametrize("variable", ["MOE_TS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_names_the_url_and_the_path_and_writes_nothing(server, tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    server.files["/o.zip"] = Served(b"zip")
    url, dest = server.url("/o.zip"), tmp_path / "cache" / "o.zip"
    with pytest.raises(OfflineError) as err:
        fetch(url, dest, **FAST)
    text = one_line(err.value)
    assert text.startswith(f"{url}: offline") and text.endswith(f"put it at {dest}")
    assert server.log == [] and list(tmp_path.iterdir()) == []
    dest.parent.mkdir()
    dest.write_bytes(b"zip")  # a file the user put there is used offline
    assert fetch(url, dest, **FAST) == dest and server.log == []


def test_connection_refused_is_one_line_naming_url_and_path(tmp_path, free_port):
    url, dest = f"http://127.0.0.1:{free_port()}/f.zip", tmp_path / "f.zip"
    with pytest.raises(OfflineError) as err:
        fetch(url, dest, retries=2, **FAST)
    text = one_line(err.value)
    assert text.startswith(f"{url}: no route (Connection refused, 3 tries)") and text.endswith(f"put it at {dest}")
    assert err.value.__cause__ is None  # no chained traceback
    assert err.value.__context__ is None or err.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


# --- fetch_many -------------------------------------------------------------------------------------------------


def test_fetch_many_downloads_every_file_with_bounded_concurrency(server, tmp_path, monkeypatch):
    bodies = {f"/f{i}": payload(20_000, seed=10 + i) for i in range(3)}
    for path, body in bodies.items():
        server.files[path] = Served(body)
    active, peak, mutex = [0], [0], threading.Lock()
    real_fetch = download.fetch

    def counting_fetch(*args, **kwargs):
        with mutex:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)
            return real_fetch(*args, **kwargs)
        finally:
            with mutex:
                active[0] -= 1

    monkeypatch.setattr(download, "fetch", counting_fetch)
    jobs = [(server.url(p), tmp_path / p.lstrip("/"), dict(FAST)) for p in bodies]
    paths = fetch_many(jobs, max_workers=2)
    assert paths == [tmp_path / p.lstrip("/") for p in bodies]
    assert [p.read_bytes() for p in paths] == list(bodies.values())
    assert 1 <= peak[0] <= 2


def test_fetch_many_raises_the_failure_after_the_others_finish(server, tmp_path):
    server.files["/ok1"] = Served(b"one")
    server.files["/ok2"] = Served(b"two")
    jobs = [(server.url("/ok1"), tmp_path / "ok1", dict(FAST)), (server.url("/gone"), tmp_path / "gone", dict(FAST)),
            (server.url("/ok2"), tmp_path / "ok2", dict(FAST))]
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch_many(jobs, max_workers=2, keep_going=True)
    one_line(err.value)
    assert (tmp_path / "ok1").read_bytes() == b"one" and (tmp_path / "ok2").read_bytes() == b"two"
    assert fetch_many([], max_workers=2) == []
