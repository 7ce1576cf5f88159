"""Duplicate images: exact (same source bytes) and near (perceptual hash within a Hamming distance).

The first task to show an image keeps it; later tasks with the same or a near-identical image are duplicates of
it. Near-duplicate search compares a new hash with every kept hash in one vectorised numpy operation
(``bitwise_count`` of the XOR), so 20,000 images cost a few hundred milliseconds in total, and memory is 16
bytes per kept image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Why an image is a duplicate: ``kind``, the task that kept the original, and the Hamming distance."""

    kind: Literal["exact", "near"]
    of_task: int
    distance: int = 0


class Deduplicator:
    """Remembers kept images and says whether a new one duplicates one of them.

    Args:
        exact: detect identical source bytes (by sha256).
        near_distance: largest Hamming distance between 64-bit perceptual hashes that counts as a near
            duplicate; None or a negative number switches near-duplicate detection off (0 finds only identical
            hashes).
    """

    def __init__(self, *, exact: bool = True, near_distance: int | None = 4) -> None:
        self.exact = exact
        self.near_distance = near_distance if near_distance is not None and near_distance >= 0 else None
        self._by_digest: dict[str, int] = {}
        self._hashes: npt.NDArray[np.uint64] = np.zeros(1024, dtype=np.uint64)
        self._owners: npt.NDArray[np.int64] = np.zeros(1024, dtype=np.int64)
        self._count = 0

    def __len__(self) -> int:
        return max(self._count, len(self._by_digest))

    def check(self, digest: str, phash: int, task_id: int) -> Duplicate | None:
        """Return the duplicate found for this image, or None after remembering it as kept by ``task_id``.

        Args:
            digest: sha256 of the source bytes.
            phash: 64-bit perceptual hash of the pixels.
            task_id: the task that would keep the image.
        """
        if self.exact:
            owner = self._by_digest.get(digest)
            if owner is not None:
                return Duplicate("exact", owner)
        if self.near_distance is not None and self._count:
            distances = np.bitwise_count(self._hashes[: self._count] ^ np.uint64(phash))
            best = int(np.argmin(distances))
            if int(distances[best]) <= self.near_distance:
                return Duplicate("near", int(self._owners[best]), int(distances[best]))
        if self.exact:
            self._by_digest[digest] = task_id
        if self.near_distance is not None:
            if self._count == len(self._hashes):
                self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
                self._owners = np.concatenate([self._owners, np.zeros_like(self._owners)])
            self._hashes[self._count] = np.uint64(phash)
            self._owners[self._count] = task_id
            self._count += 1
        return None
