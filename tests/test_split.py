"""Train/val split: seeded, grouped by image, decided per row."""

from __future__ import annotations

import pytest

from converters.split import split_of


def test_the_same_group_and_seed_always_land_on_the_same_side() -> None:
    assert {split_of("image-1", seed=3, val_fraction=0.5) for _ in range(5)} == {
        split_of("image-1", seed=3, val_fraction=0.5)
    }


def test_the_val_share_follows_the_fraction_and_the_seed_changes_the_assignment() -> None:
    keys = [f"image-{n}" for n in range(10_000)]
    seed0 = [split_of(key, seed=0, val_fraction=0.1) for key in keys]
    seed1 = [split_of(key, seed=1, val_fraction=0.1) for key in keys]
    assert 900 <= seed0.count("val") <= 1100
    assert seed0 != seed1
    assert all(split_of(key, seed=0, val_fraction=0.0) == "train" for key in keys[:100])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_of("x", seed=0, val_fraction=fraction)
