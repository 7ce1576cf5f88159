"""Train/val split, grouped by image and seeded, decided one row at a time.

Each group key (the sha256 of the written image) is hashed with the seed into a number in [0, 1); groups below
``val_fraction`` go to val. The decision needs no other row, so the exporter streams, every row of an image
lands in the same file, and the same seed gives the same split on every run and machine. The val share is
``val_fraction`` in expectation: a handful of images can all land on one side.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val"]


def split_of(group: str, *, seed: int, val_fraction: float) -> Split:
    """``train`` or ``val`` for the group ``group`` (e.g. an image's sha256).

    Raises:
        ValueError: ``val_fraction`` is outside [0, 1).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if position < val_fraction else "train"
