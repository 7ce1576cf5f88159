"""Boxes: Label Studio percent <-> pixels of the original image, rotation, clipping, scaling."""

from __future__ import annotations

import pytest

from converters.boxes import Box, PercentRect


def test_percent_becomes_pixels_of_the_image() -> None:
    assert PercentRect(10, 20, 30, 40).to_pixels(200, 100) == Box(20, 20, 80, 60)


def test_pixels_become_percent_and_back() -> None:
    box = Box(13, 7, 150, 91)
    rect = PercentRect.from_pixels(box, 640, 480)
    back = rect.to_pixels(640, 480)
    assert back.rounded() == [13, 7, 150, 91]
    with pytest.raises(ValueError, match="image size must be positive, got 0x480"):
        PercentRect.from_pixels(box, 0, 480)


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        (0, [20, 20, 80, 60]),
        (90, [-20, 20, 20, 80]),  # clockwise about the top-left corner (20, 20): width now points down
        (180, [-40, -20, 20, 20]),
        (360, [20, 20, 80, 60]),
        (45, [-8, 20, 62, 91]),
    ],
)
def test_rotated_rectangles_become_their_axis_aligned_bounds(rotation: float, expected: list[int]) -> None:
    rect = PercentRect(10, 20, 30, 40, rotation)
    assert rect.is_rotated == (rotation % 360 != 0)
    assert rect.to_pixels(200, 100).rounded() == expected


def test_clipping_and_scaling() -> None:
    assert Box(-10, 5, 50, 120).clipped(40, 100) == Box(0, 5, 40, 100)
    assert Box(50, 5, 60, 10).clipped(40, 100) is None
    assert not Box(-10, 5, 50, 120).is_inside(40, 100)
    assert Box(-0.4, 0, 40.3, 100).is_inside(40, 100)
    assert Box(10, 20, 30, 40).scaled(0.5, 2) == Box(5, 40, 15, 80)
    assert Box(1, 2, 4, 6).area == 12
