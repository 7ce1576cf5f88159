"""A detection before it becomes a public :class:`~converters.marks.model.Mark`, and frame sums on masks."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.model import Array, BBox, MarkKind, Point


@dataclass(frozen=True)
class Found:
    """One detected mark in image coordinates, with the stroke width it was drawn with (for NMS and drawing)."""

    kind: MarkKind
    bbox: BBox
    score: float
    color: str
    stroke: float
    family: str
    tail: Point | None = None
    head: Point | None = None


class BoxSums:
    """Constant-time pixel counts of a binary mask inside any box (a summed-area table)."""

    def __init__(self, mask: Array) -> None:
        self.height, self.width = mask.shape[:2]
        self.table: Array = cv2.integral((mask > 0).view(np.uint8), sdepth=cv2.CV_32S)

    def count(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int]:
        """(set pixels, all pixels) in the box clipped to the mask."""
        x0, x1 = max(0, min(x0, self.width)), max(0, min(x1, self.width))
        y0, y1 = max(0, min(y0, self.height)), max(0, min(y1, self.height))
        if x1 <= x0 or y1 <= y0:
            return 0, 0
        t = self.table
        inside = int(t[y1, x1] - t[y0, x1] - t[y1, x0] + t[y0, x0])
        return inside, (x1 - x0) * (y1 - y0)

    def frame(self, box: tuple[int, int, int, int], outer: int, inner: int) -> float:
        """Fraction of set pixels in the frame between BOX inset by OUTER and by INNER pixels (negative: out).

        Returns 0.0 when the frame is empty (off the mask).
        """
        x0, y0, x1, y1 = box
        big = self.count(x0 + outer, y0 + outer, x1 - outer, y1 - outer)
        small = (0, 0)
        if x1 - inner > x0 + inner and y1 - inner > y0 + inner:
            small = self.count(x0 + inner, y0 + inner, x1 - inner, y1 - inner)
        total = big[1] - small[1]
        return (big[0] - small[0]) / total if total > 0 else 0.0
