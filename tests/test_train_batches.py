"""Length-bucketed batches: every item once per epoch, similar lengths together, the same batches for a step on
every run (what makes a resumed run see what an uninterrupted one saw)."""

from __future__ import annotations

import numpy as np
import pytest

from tortoise_clvp.train.batches import POOL_BATCHES, BucketedBatches


def test_an_epoch_covers_every_item_once_in_batches_of_the_size():
    lengths = np.random.default_rng(0).integers(1, 200, size=103)
    batches = BucketedBatches(lengths, 8, seed=3)
    epoch = batches.epoch(0)
    assert len(epoch) == batches.per_epoch == 13
    assert sorted(i for batch in epoch for i in batch.tolist()) == list(range(103))
    assert sorted(len(batch) for batch in epoch)[1:] == [8] * 12  # one short batch at most


def test_batches_hold_items_of_similar_length():
    lengths = np.random.default_rng(1).integers(1, 1000, size=8 * POOL_BATCHES)  # one pool: sorted as a whole
    batches = BucketedBatches(lengths, 8, seed=0)
    spread = np.mean([np.ptp(lengths[batch]) for batch in batches.epoch(0)])
    assert spread < 0.1 * np.ptp(lengths)


def test_a_step_gives_the_same_batch_on_every_run_and_epochs_differ():
    lengths = list(range(50))
    first, second = BucketedBatches(lengths, 5, seed=7), BucketedBatches(lengths, 5, seed=7)
    assert [first.batch(step) for step in range(25)] == [second.batch(step) for step in reversed(range(25))][::-1]
    assert first.batch(3) != first.batch(13)  # step 13 is step 3 of the next epoch, reshuffled
    assert BucketedBatches(lengths, 5, seed=8).epoch(0)[0].tolist() != first.epoch(0)[0].tolist()


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="no training items"):
        BucketedBatches([], 4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        BucketedBatches([1, 2], 0, seed=0)
