"""Error types shared by the pretraining modules (kept apart so that none of them imports another for it)."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed here."""
