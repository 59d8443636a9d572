"""Safe output folders: never destroy what we did not write, nor another command's work.

A folder written by moe-ts holds a marker file (`.moe-ts-output`) whose first line names its kind (`KINDS`: a
model, an evaluation, a corpus, a run, a release, ...). A command writing `--out` checks it first
(`check_output_dir`):

- a path that is a file (or a broken link) is always an error, and so is a folder that is, or holds, one of
  the command's own inputs (`inputs`), whatever `--overwrite` says;
- a new or empty folder, or a moe-ts folder of the command's own kind, is replaced (atomically);
- anything else (a user's files, sub-folders only included, or a moe-ts folder of another kind) is refused
  unless `overwrite=True` (`--overwrite`), which then replaces it whole: `--overwrite` means "replace
  whatever is there", for every command.

Markers written before kinds were checked say `model` for every model folder; `folder_kind` refines those by
their side files (finetune.json, distill.json, ...). New content is built in a hidden sibling
(`.NAME.tmp-*`, holding `.moe-ts-staging` with the builder's pid and host) and swapped in with two renames;
the next staging folder made in the same parent removes the siblings whose builder is dead (a kill -9 left
them). Files and folders get the user's umask (tempfile creates them 0600 / 0700).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Mapping

MARKER = ".moe-ts-output"
MARKER_FORMAT = "format 2"  # second marker line; markers without it were written before kinds were checked
STAGING_OWNER = ".moe-ts-staging"  # "pid host" of the process building a staging / backup folder
KINDS = {
    "model": "a model folder (save_pretrained, RUN/final)",
    "release": "a release folder (moe-ts export)",
    "converted": "a converted model (moe-ts convert)",
    "finetuned": "a finetuned model (moe-ts finetune)",
    "student": "a distilled student (moe-ts distill)",
    "centroids": "a centroid-gated model (moe-ts centroids)",
    "eval": "an evaluation (moe-ts eval)",
    "corpus": "a pretraining corpus (moe-ts prepare)",
    "run": "a pretraining run (moe-ts pretrain)",
}
_LEGACY_SIDE_FILES = (("finetune.json", "finetuned"), ("distill.json", "student"), ("conversion.json", "converted"),
                      ("centroids.json", "centroids"))
_LEGACY_MODEL_TYPES = {"timedistill_mlp": "student", "msft": "finetuned"}
_SIBLING = re.compile(r"^\..+\.(tmp|old)-[A-Za-z0-9_]+$")
NO_OWNER_STALE_S = 24 * 3600  # a staging folder without an owner record (older moe-ts) is stale after a day
_OUR_FILES = {MARKER, "model.safetensors", "config.json", "results.md", "manifest.json", "state.json"}


class OutputDirError(ValueError):
    """An output path is a file, one of the command's inputs, or a folder holding someone else's files."""


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """chmod `path` and everything below it to the modes a plain mkdir / open would have given."""
    mask = current_umask()
    root = Path(path)
    entries = [root] if not root.is_dir() else [root, *root.rglob("*")]
    for entry in entries:
        if entry.is_symlink():
            continue
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)


def is_ours(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a folder carrying our marker file."""
    return (Path(path) / MARKER).is_file()


def folder_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind our marker names (None: no marker). An old marker's `model` is refined by the folder's side
    files; an unreadable or unknown first line is returned as written ("" when empty)."""
    path = Path(path)
    try:
        lines = (path / MARKER).read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError):
        return ""
    kind = lines[0].strip() if lines else ""
    if kind == "model" and MARKER_FORMAT not in lines[1:]:
        for side_file, refined in _LEGACY_SIDE_FILES:
            if (path / side_file).is_file():
                return refined
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        return _LEGACY_MODEL_TYPES.get(model_type, kind)
    return kind


def _compatible(found: str, wanted: str, legacy: bool) -> bool:
    # an old release carries the same `model` marker as RUN/final: both are accepted for either
    return found == wanted or (legacy and found == "model" and wanted == "release")


def _describe(kind: str) -> str:
    return KINDS.get(kind, f"a moe-ts folder of unknown kind {kind!r}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to disk, so a rename or a new file in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_dir(path: str | os.PathLike[str], overwrite: bool = False,
                     remedy: str = "pass --overwrite to replace it", *, kind: str | None = None,
                     inputs: Mapping[str, str | os.PathLike[str] | None] | None = None, replaces: bool = True) -> None:
    """Raise OutputDirError unless writing a moe-ts folder of `kind` at `path` cannot destroy a user's files,
    another command's folder or one of this command's `inputs` ({flag: path}; never overridable).

    `kind=None` (callers that predate kinds) accepts any moe-ts folder. `replaces=False` (a command that adds to
    its folder, as pretrain does) allows inputs inside `path`."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputDirError(f"{path}: is a broken symbolic link; pick another output folder")
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path}: is a file, not a folder; pick another output folder")
    _check_not_an_input(path, inputs or {}, replaces)
    if not path.exists() or overwrite:
        return
    found = folder_kind(path)
    if found is not None:
        legacy = MARKER_FORMAT not in (path / MARKER).read_text(errors="replace")
        if kind is None or _compatible(found, kind, legacy):
            return
        raise OutputDirError(f"{path}: is {_describe(found)}, not {_describe(kind)}; pick another output folder "
                             f"or {remedy}")
    foreign = sorted(p.name for p in path.iterdir())  # files and sub-folders alike are the user's
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputDirError(f"{path}: folder is not empty and was not written by moe-ts (holds {shown}); "
                             f"pick another output folder or {remedy}")


def _check_not_an_input(path: Path, inputs: Mapping[str, str | os.PathLike[str] | None], replaces: bool) -> None:
    out = path.expanduser().resolve()
    for flag, source in inputs.items():
        if source is None or not Path(source).expanduser().exists():
            continue
        src = Path(source).expanduser().resolve()
        if src == out:
            raise OutputDirError(f"{path}: is the {flag} folder; writing there would replace this command's "
                                 f"own input (--overwrite does not allow it); pick another output folder")
        if replaces and out in src.parents:
            raise OutputDirError(f"{path}: holds the {flag} folder {source}; writing there would replace this "
                                 f"command's own input (--overwrite does not allow it); pick another output folder")


def _looks_ours(folder: Path) -> bool:
    """A staging / backup folder without an owner record (older moe-ts): empty, or holding what we write."""
    names = {p.name for p in folder.iterdir()}
    inner = {p.name for child in folder.iterdir() if child.is_dir() for p in child.iterdir()}
    return not names or bool((names | inner) & _OUR_FILES)


def _owner_alive(folder: Path) -> bool:
    """Whether the process that made staging / backup `folder` may still be using it (or it may not be ours)."""
    try:
        pid_text, host = (folder / STAGING_OWNER).read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        try:
            return time.time() - folder.stat().st_mtime < NO_OWNER_STALE_S or not _looks_ours(folder)
        except OSError:
            return True
    if host != socket.gethostname():
        return time.time() - folder.stat().st_mtime < NO_OWNER_STALE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(parent: str | os.PathLike[str]) -> list[Path]:
    """Delete the `.NAME.tmp-*` / `.NAME.old-*` folders in `parent` whose builder is dead (a kill -9 left them).

    A backup whose target is missing (killed between swap_in's two renames) is put back instead."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for child in sorted(parent.iterdir()):
        if child.is_symlink() or not child.is_dir() or not _SIBLING.match(child.name) or _owner_alive(child):
            continue
        name, how = child.name[1:].rsplit(".", 1)
        saved = child / name
        if how.startswith("old-") and saved.is_dir() and not (parent / name).exists():
            os.replace(saved, parent / name)
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed


def _claim(folder: Path) -> Path:
    (folder / STAGING_OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    return folder


def make_staging_dir(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden sibling of `target` to build its new content in (same file system, so renames are atomic);
    stale siblings in the same parent are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target.parent)
    return _claim(Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent)))


def mark(folder: str | os.PathLike[str], kind: str) -> None:
    """Write our marker into `folder`."""
    (Path(folder) / MARKER).write_text(f"{kind}\n{MARKER_FORMAT}\n")


def swap_in(staging: str | os.PathLike[str], target: str | os.PathLike[str], kind: str) -> Path:
    """Mark `staging`, give it the user's umask and put it at `target`, replacing an old one atomically.

    A crash between the two renames leaves the old content in a hidden `.NAME.old-*` sibling, never a mix
    (`remove_stale_siblings` puts it back).
    """
    staging, target = Path(staging), Path(target)
    (staging / STAGING_OWNER).unlink(missing_ok=True)
    mark(staging, kind)
    apply_umask(staging)
    if target.is_dir():
        backup = _claim(Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent)))
        os.replace(target, backup / target.name)
        os.replace(staging, target)
        shutil.rmtree(backup)
    else:
        os.replace(staging, target)
    return target


def remove_leftovers(target: str | os.PathLike[str], prefixes: tuple[str, ...] = ()) -> list[Path]:
    """Delete hidden staging / backup siblings of `target` that an interrupted write left behind."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    starts = (f".{target.name}.tmp-", f".{target.name}.old-", *prefixes)
    removed = []
    for child in sorted(target.parent.iterdir()):
        if child.is_dir() and child.name.startswith(starts):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed
