"""Duplicates: identical bytes, perceptual hashes within a distance, the first task keeps the image."""

from __future__ import annotations

import numpy as np

from converters.dedup import Deduplicator, Duplicate


def test_exact_duplicates_are_found_by_digest() -> None:
    dedup = Deduplicator(exact=True, near_distance=None)
    assert dedup.check("aa", 0b1111, task_id=1) is None
    assert dedup.check("aa", 0, task_id=2) == Duplicate("exact", 1)
    assert dedup.check("bb", 0b1111, task_id=3) is None  # same hash, near detection off


def test_near_duplicates_are_within_the_hamming_distance() -> None:
    dedup = Deduplicator(exact=True, near_distance=3)
    assert dedup.check("a", 0xFFFF_0000_FFFF_0000, task_id=1) is None
    assert dedup.check("b", 0xFFFF_0000_FFFF_0007, task_id=2) == Duplicate("near", 1, 3)
    assert dedup.check("c", 0xFFFF_0000_FFFF_000F, task_id=3) is None  # 4 bits from task 1
    assert dedup.check("d", 0xFFFF_0000_FFFF_001F, task_id=4) == Duplicate("near", 3, 1)


def test_switching_both_off_keeps_everything() -> None:
    dedup = Deduplicator(exact=False, near_distance=-1)
    assert [dedup.check("same", 7, task_id=n) for n in range(3)] == [None, None, None]


def test_many_hashes_grow_the_store_and_stay_searchable() -> None:
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, 3000, dtype=np.int64)]
    dedup = Deduplicator(exact=False, near_distance=0)
    kept = sum(dedup.check(str(n), h, task_id=n) is None for n, h in enumerate(hashes))
    assert kept == len(set(hashes)) and len(dedup) == kept
    assert dedup.check("again", hashes[2500], task_id=9999) == Duplicate("near", 2500, 0)
