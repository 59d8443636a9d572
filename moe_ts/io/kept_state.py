"""A training loop's state kept beside its output folder, for `--resume` (`moe-ts finetune`, `moe-ts distill`).

The loop saves its whole state (weights, optimizer, counters, random streams: the caller's choice) at each
validation point into the hidden sibling `.OUT.COMMAND-progress/state.pt`, written atomically (a temporary file,
fsync, rename), so the file is the previous state or the new one whatever kills the process. A rerun with
`resume=True` gets it back and continues. `settings.json` holds what the numbers depend on (the options, the
input weights' SHA-256); a resume with other settings is refused. Loading uses `torch.load(weights_only=True)`:
no code runs. The command removes the folder once OUT is written.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from moe_ts.io.output_dir import fsync_dir

SETTINGS = "settings.json"
STATE = "state.pt"


class ResumeError(ValueError):
    """A resume whose kept state was made with other options, or is unreadable."""


def progress_dir(out: str | os.PathLike[str], command: str) -> Path:
    """Where `command`'s state for output folder `out` is kept."""
    out = Path(out)
    return out.parent / f".{out.name}.{command}-progress"


class KeptState:
    """The kept state of one run of `command` writing `out` (see the module docstring); `unit` names what the
    loop counts ("step", "epoch")."""

    def __init__(self, out: str | os.PathLike[str], command: str, settings: dict[str, Any], resume: bool,
                 unit: str = "step") -> None:
        """Start afresh (an older state is dropped), or with `resume` continue from the kept state if there is
        one; ResumeError if it was made with other `settings`."""
        self.folder = progress_dir(out, command)
        self.unit = unit
        self.settings = json.loads(json.dumps(settings, default=str))
        self.state: dict[str, Any] | None = None
        if resume and (self.folder / SETTINGS).is_file():
            self._load()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            (self.folder / SETTINGS).write_text(json.dumps(self.settings, indent=1, sort_keys=True) + "\n")

    def _load(self) -> None:
        old = json.loads((self.folder / SETTINGS).read_text())
        changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if changed:
            shown = "; ".join(f"{k} was {old.get(k)!r}, now {self.settings.get(k)!r}" for k in changed[:3])
            raise ResumeError(f"--resume: {self.folder} was made with other options ({shown}); rerun with the "
                              f"same options, or without --resume to start over")
        path = self.folder / STATE
        if path.is_file():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                self.state = {**saved, **json.loads(saved.pop("meta_json"))}
            except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
                raise ResumeError(f"{path}: unreadable ({type(err).__name__}); rerun without --resume") from None

    @property
    def count(self) -> int:
        """The loop's count (`unit`s done) at the kept state; 0 when none is kept."""
        return 0 if self.state is None else int(self.state[self.unit])

    def save(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        """Keep the loop's state: `tensors` (state dicts, RNG tensors) and JSON-able `meta` (which holds the
        count under `unit`, and the history, counters, ...)."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save({**tensors, "meta_json": json.dumps(meta)}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / STATE)
            fsync_dir(self.folder)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.state = {**tensors, **meta}

    def interrupted_note(self) -> str:
        if self.state is None:
            return f"no {self.unit} finished, nothing kept; --out untouched"
        return (f"the state at {self.unit} {self.count} is kept in {self.folder}; --out untouched; rerun with "
                f"--resume to continue from it")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
