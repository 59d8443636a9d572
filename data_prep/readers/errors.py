"""The one error type readers raise for malformed input: names the file, the line (when known) and the reason."""
from __future__ import annotations

import os


class DataFormatError(ValueError):
    """Malformed input file. str() is one line: 'FILE:LINE: REASON' (or 'FILE: REASON')."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")
