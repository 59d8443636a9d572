"""Worker processes that make the vectorised sampler's micro-batches ahead of the trainer
(`train.loader_workers`; docs/ARCHITECTURE.md §4).

Micro-batch k is a pure function of (seed, rank, k) (`pretrain.batch_sampler`), so worker w of W makes batches
k ≡ w (mod W) and torch's DataLoader hands them over in order of k, in pinned memory when a GPU takes them. The
trainer sees the same batches as with the sampler in its own process (`VectorisedSampler.next_batch`), and a
resumed run restarts the workers at the saved batch counter.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pretrain.batch_sampler import VectorisedSampler


class _BatchStream(IterableDataset):
    """Micro-batches first, first+1, … of `sampler`, split over the DataLoader's workers by k mod W."""

    def __init__(self, sampler: VectorisedSampler, first: int, batch_size: int) -> None:
        self.sampler, self.first, self.batch_size = sampler, first, batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        k = self.first + worker
        while True:
            yield self.sampler.make_batch(k, self.batch_size)
            k += workers


class BatchLoader:
    """The sampler's micro-batches made by `workers` processes, `prefetch` batches ahead per worker; otherwise
    used like the sampler (next_batch, state_dict, load_state_dict, its attributes)."""

    def __init__(self, sampler: VectorisedSampler, workers: int, pin_memory: bool = False, prefetch: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"a BatchLoader needs at least one worker, got {workers}")
        self.sampler, self.workers, self.pin_memory, self.prefetch = sampler, workers, pin_memory, prefetch
        self._batches: Iterator[dict[str, Any]] | None = None
        self._batch_size: int | None = None

    def __getattr__(self, name: str) -> Any:  # dataset_names, dataset_probs, counters …: the sampler's
        if name == "sampler":
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def _start(self, batch_size: int) -> None:
        self.close()
        loader = DataLoader(_BatchStream(self.sampler, self.sampler.batches, batch_size), batch_size=None,
                            num_workers=self.workers, pin_memory=self.pin_memory, prefetch_factor=self.prefetch,
                            persistent_workers=False)
        self._batches, self._batch_size = iter(loader), batch_size

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The next micro-batch (made by a worker): target [B, N·P] float32, sample_id [B, N] int64."""
        if self._batches is None or batch_size != self._batch_size:
            self._start(batch_size)
        return self.sampler.account(next(self._batches), batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state: batches handed to the trainer so far (not those made ahead)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the saved batch counter (the workers restart there)."""
        self.sampler.load_state_dict(state)
        self.close()

    def close(self) -> None:
        """Stop the worker processes."""
        if self._batches is not None:
            shutdown = getattr(self._batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._batches = None
