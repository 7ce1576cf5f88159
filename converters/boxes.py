"""Boxes: pixels of the original image inside labelloop, Label Studio percent at the edge.

Inside labelloop a box is a :class:`Box`, ``(x0, y0, x1, y1)`` in pixels of the original (EXIF-oriented) image,
x0 <= x1 and y0 <= y1. Label Studio stores a rectangle as a :class:`PercentRect`: the top-left corner, width and
height in percent of the image, plus a clockwise rotation in degrees around that top-left corner. Conversion
happens only here; a model family's convention (norm-1000, resized pixels) is the business of ``rows.py`` and
the ML backend's ``regions.py``.

Example::

    >>> PercentRect(x=10, y=20, width=30, height=40).to_pixels(200, 100)
    Box(x0=20.0, y0=20.0, x1=80.0, y1=60.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels, ``x0 <= x1`` and ``y0 <= y1``."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        """x1 - x0."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """y1 - y0."""
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        """Width times height (0 for a degenerate box)."""
        return max(0.0, self.width) * max(0.0, self.height)

    def scaled(self, sx: float, sy: float) -> Box:
        """The same box in an image resized by ``sx`` horizontally and ``sy`` vertically."""
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def clipped(self, width: float, height: float) -> Box | None:
        """The part of the box inside a ``width`` x ``height`` image, or None when nothing is inside."""
        box = Box(
            min(max(self.x0, 0.0), width),
            min(max(self.y0, 0.0), height),
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
        )
        if box.width <= 0 or box.height <= 0:
            return None
        return box

    def is_inside(self, width: float, height: float, tolerance: float = 0.5) -> bool:
        """True when the box lies within the image, allowing ``tolerance`` pixels of rounding."""
        return (
            self.x0 >= -tolerance
            and self.y0 >= -tolerance
            and self.x1 <= width + tolerance
            and self.y1 <= height + tolerance
        )

    def rounded(self) -> list[int]:
        """``[x0, y0, x1, y1]`` as integers (ms-swift's ``bbox`` with ``bbox_type: real``)."""
        return [round(self.x0), round(self.y0), round(self.x1), round(self.y1)]


@dataclass(frozen=True, slots=True)
class PercentRect:
    """A Label Studio rectangle: percent of the image, rotated clockwise by ``rotation`` degrees around (x, y)."""

    x: float
    y: float
    width: float
    height: float
    rotation: float = 0.0

    @property
    def is_rotated(self) -> bool:
        """True when the rectangle is turned by more than a rounding error."""
        return abs(math.remainder(self.rotation, 360.0)) > 1e-6

    def to_pixels(self, image_width: float, image_height: float) -> Box:
        """The axis-aligned bounds in pixels of an ``image_width`` x ``image_height`` image.

        A rotated rectangle becomes the smallest axis-aligned box holding its four corners (the rotation is
        applied in pixels, not in percent, because percent axes have different units). The result is not
        clipped: callers decide what to do with boxes that reach outside the image.
        """
        x = self.x * image_width / 100.0
        y = self.y * image_height / 100.0
        w = self.width * image_width / 100.0
        h = self.height * image_height / 100.0
        if not self.is_rotated:
            return Box(min(x, x + w), min(y, y + h), max(x, x + w), max(y, y + h))
        theta = math.radians(self.rotation)
        cos, sin = math.cos(theta), math.sin(theta)
        xs, ys = [], []
        for dx, dy in ((0.0, 0.0), (w, 0.0), (w, h), (0.0, h)):
            xs.append(x + dx * cos - dy * sin)
            ys.append(y + dx * sin + dy * cos)
        return Box(min(xs), min(ys), max(xs), max(ys))

    @classmethod
    def from_pixels(cls, box: Box, image_width: float, image_height: float) -> PercentRect:
        """The Label Studio rectangle (no rotation) for a pixel box of an ``image_width`` x ``image_height`` image.

        Raises:
            ValueError: the image size is not positive.
        """
        if image_width <= 0 or image_height <= 0:
            raise ValueError(f"image size must be positive, got {image_width}x{image_height}")
        return cls(
            x=box.x0 * 100.0 / image_width,
            y=box.y0 * 100.0 / image_height,
            width=box.width * 100.0 / image_width,
            height=box.height * 100.0 / image_height,
        )
