"""`moe-ts eval --resume` (docs/ARCHITECTURE.md §6): the datasets an interrupted evaluation finished, kept beside
--out so a rerun skips them.

While `moe-ts eval --out DIR` runs, each finished dataset's task results go to one JSON file in the hidden
sibling `.DIR.eval-progress/`, written atomically (a temporary file, fsync, rename): a file there is a whole
dataset or absent, whatever killed the process. `settings.json` holds the options the numbers depend on; a resume
with other options is refused (its numbers would mix two evaluations). Each task's sampling seeds depend only on
the task (eval/runner.py: `seed + chunk`), so the skipped datasets' kept results equal what a rerun would give and
the final results.csv equals an uninterrupted run's. The folder is removed once --out is written.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import MetricValue
from eval.runner import PlotExample, TaskResult
from moe_ts.io.output_dir import fsync_dir

SETTINGS = "settings.json"
FORMAT = 1
# Options that change nothing in the numbers (where files go, how many processes, whether resuming).
_NOT_SETTINGS = frozenset({"out", "overwrite", "resume", "n_jobs", "list"})


class ResumeError(ValueError):
    """A resume whose kept results were made with other options."""


def progress_dir(out: str | os.PathLike[str]) -> Path:
    """The hidden sibling of `out` holding the finished datasets' results."""
    out = Path(out)
    return out.parent / f".{out.name}.eval-progress"


def eval_settings(args: argparse.Namespace, weights_sha256: str | None) -> dict[str, Any]:
    """What the numbers depend on: every option but the output's, and the evaluated weights' SHA-256."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())
                if k not in _NOT_SETTINGS}
    return {"format": FORMAT, "weights_sha256": weights_sha256, **settings}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "data": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot record {type(value).__name__}")


def _array(record: dict[str, Any]) -> np.ndarray:
    return np.asarray(record["data"], dtype=record["dtype"])


def task_to_record(task: TaskResult) -> dict[str, Any]:
    return asdict(task)


def task_from_record(record: dict[str, Any]) -> TaskResult:
    """A TaskResult from `task_to_record`'s dict (after a JSON round trip: floats are exact)."""
    values = dict(record)
    values["metrics"] = {role: {name: MetricValue(**mv) for name, mv in metrics.items()}
                         for role, metrics in record["metrics"].items()}
    values["examples"] = [PlotExample(e["item_id"], _array(e["context"]), _array(e["truth"]), _array(e["quantiles"]))
                          for e in record["examples"]]
    return TaskResult(**values)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)  # the rename itself survives a crash


def _file_name(suite: str, dataset: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{suite}--{dataset}") + ".json"


class EvalProgress:
    """The finished datasets of one evaluation (see the module docstring)."""

    def __init__(self, out: str | os.PathLike[str], settings: dict[str, Any], resume: bool) -> None:
        """Start afresh (an older record is dropped), or with `resume` continue the record if there is one;
        ResumeError if its settings differ from `settings`."""
        self.folder = progress_dir(out)
        self.settings = json.loads(json.dumps(settings, default=_jsonable))
        self.kept: dict[str, list[TaskResult]] = {}
        self.resumed = 0
        if resume and (self.folder / SETTINGS).is_file():
            self._load()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            _write_atomic(self.folder / SETTINGS, json.dumps(self.settings, indent=1, sort_keys=True) + "\n")

    def _load(self) -> None:
        path = self.folder / SETTINGS
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ResumeError(f"{path}: unreadable ({err}); rerun without --resume") from None
        changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if changed:
            shown = "; ".join(f"{k} was {old.get(k)!r}, now {self.settings.get(k)!r}" for k in changed[:3])
            raise ResumeError(f"--resume: {self.folder} was made with other options ({shown}); rerun with the "
                              f"same options, or without --resume to start over")
        for child in sorted(self.folder.iterdir()):
            if child.name.startswith(".tmp-"):  # a write a kill interrupted: never renamed into place
                child.unlink()
            elif child.name != SETTINGS:
                try:
                    record = json.loads(child.read_text())
                    self.kept[record["key"]] = [task_from_record(t) for t in record["tasks"]]
                except (OSError, ValueError, KeyError, TypeError) as err:
                    raise ResumeError(f"{child}: unreadable ({err}); rerun without --resume") from None
        self.resumed = len(self.kept)

    def finished(self, suite: str, dataset: str) -> list[TaskResult] | None:
        """The kept task results of `dataset` in `suite`, or None if it has yet to run."""
        return self.kept.get(f"{suite}/{dataset}")

    def record(self, suite: str, dataset: str, tasks: list[TaskResult]) -> None:
        """Keep a finished dataset's results (atomically)."""
        key = f"{suite}/{dataset}"
        text = json.dumps({"key": key, "tasks": [task_to_record(t) for t in tasks]}, default=_jsonable)
        _write_atomic(self.folder / _file_name(suite, dataset), text)
        self.kept[key] = tasks

    def interrupted_note(self) -> str:
        """What an interrupted run kept, for the one line `moe-ts eval` prints."""
        if not self.kept:
            return "no dataset finished; --out untouched"
        return (f"{len(self.kept)} finished dataset(s) kept in {self.folder}; --out untouched; rerun with --resume "
                f"to skip them")

    def remove(self) -> None:
        """Drop the record (--out is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
