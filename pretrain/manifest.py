"""A corpus is usable for pretraining only when `moe-ts prepare` finished it: its manifest.json says so.

`moe-ts prepare` writes manifest.json last, with `"complete": true` (see data_prep/prepare.py); a folder
without it is an interrupted or foreign build and may still hold evaluation test windows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pretrain.data import CorpusError

MANIFEST = "manifest.json"


def check_manifest(path: str | Path) -> dict[str, Any]:
    """The corpus manifest; CorpusError naming the fix when it is missing, unreadable or incomplete."""
    path = Path(path)
    manifest = path / MANIFEST
    fix = f"rebuild it with `moe-ts prepare --out {path}`, then `moe-ts check --corpus {path}`"
    if not manifest.is_file():
        raise CorpusError(f"{path}: no {MANIFEST}, so this corpus was not finished by `moe-ts prepare` "
                          f"(interrupted?) and may hold evaluation test windows; {fix}")
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"{manifest}: not valid JSON ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("complete") is not True:
        raise CorpusError(f"{manifest}: does not mark the corpus complete (an interrupted or older build); {fix}")
    return data


def corpus_fingerprint(path: str | Path) -> str:
    """SHA-256 of the manifest and the Arrow state file: changes whenever the corpus is rebuilt differently."""
    digest = hashlib.sha256()
    for name in (MANIFEST, "state.json"):
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def corpus_datasets(manifest: dict[str, Any]) -> list[str]:
    """Names of the sources that contributed series."""
    return [s["name"] for s in manifest.get("sources", []) if s.get("series")]
