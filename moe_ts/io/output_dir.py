"""Safe output folders: never destroy what we did not write.

A folder written by moe-ts holds a marker file (`.moe-ts-output`, one line naming what it is). Writing to
an existing folder is allowed when it is empty or carries our marker; a non-empty folder without the marker
belongs to the user and is refused unless `overwrite=True`; a path that is a file is always an error.
Our folders are replaced atomically: the new content is built in a hidden sibling folder, then swapped
in with two renames. Files and folders get the user's umask (tempfile creates them 0600 / 0700).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".moe-ts-output"


class OutputDirError(ValueError):
    """An output path is a file, or a folder holding someone else's files."""


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


def check_output_dir(path: str | os.PathLike[str], overwrite: bool = False,
                     remedy: str = "pass --overwrite to replace it") -> None:
    """Raise OutputDirError unless writing a moe-ts folder at `path` cannot destroy a user's files."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputDirError(f"{path}: is a broken symbolic link; pick another output folder")
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path}: is a file, not a folder; pick another output folder")
    if not path.exists() or is_ours(path) or overwrite:
        return
    foreign = sorted(p.name for p in path.iterdir())
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputDirError(f"{path}: folder is not empty and was not written by moe-ts (holds {shown}); "
                             f"pick another output folder or {remedy}")


def make_staging_dir(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden sibling of `target` to build its new content in (same file system, so renames are atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def mark(folder: str | os.PathLike[str], kind: str) -> None:
    """Write our marker into `folder`."""
    (Path(folder) / MARKER).write_text(f"{kind}\n")


def swap_in(staging: str | os.PathLike[str], target: str | os.PathLike[str], kind: str) -> Path:
    """Mark `staging`, give it the user's umask and put it at `target`, replacing an old one atomically.

    A crash between the two renames leaves the old content in a hidden `.NAME.old-*` sibling, never a mix.
    """
    staging, target = Path(staging), Path(target)
    mark(staging, kind)
    apply_umask(staging)
    if target.is_dir():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
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
