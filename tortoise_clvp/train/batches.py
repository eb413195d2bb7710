"""Which items each training step sees: length-bucketed batches in a seeded order that any step can recompute.

A run that resumes at step s must see the batches an uninterrupted run saw from step s on, without saving any
iterator: the batches of an epoch are a function of (seed, epoch) alone, and step s takes batch s % batches_per_epoch
of epoch s // batches_per_epoch. Within an epoch the items are shuffled, cut into pools of `POOL_BATCHES` batches,
each pool sorted by length and cut into batches (so a batch holds items of similar length and pads little), and the
batches are shuffled again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

POOL_BATCHES = 50  # batches per sorted pool: larger pads less, smaller keeps batches more random


def _generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


class BucketedBatches:
    """Length-bucketed batches of item indices (into `lengths`), `batch_size` items each (the last of an epoch may
    hold fewer)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        if not len(lengths):
            raise ValueError("no training items to make batches of")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size = min(batch_size, len(lengths))
        self.seed = seed
        self.per_epoch = -(-len(lengths) // self.batch_size)
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """Every batch of `epoch`, in training order."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = _generator(self.seed, epoch)
            order = rng.permutation(len(self.lengths))
            pool = self.batch_size * POOL_BATCHES
            batches = []
            for start in range(0, len(order), pool):
                chunk = order[start : start + pool]
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            self._epoch = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._epoch[1]

    def batch(self, step: int) -> list[int]:
        """The item indices of training step `step`."""
        epoch, position = divmod(step, self.per_epoch)
        return self.epoch(epoch)[position].tolist()
