"""One colour family's evidence in one region of the image: its mark mask, filled parts and thin strokes.

A mark is a thin stroke (1-11 px after rescaling); buttons, bars, banners and objects in photos are filled.
``thick`` is the morphological opening of the mask with a square larger than any stroke, i.e. the parts a
filled square fits in; ``thin`` is the rest. Marks drawn over same-coloured filled content keep their stroke in
``thin`` where they run outside it, which is what lets line and ellipse fitting see through the merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from converters.marks.colors import ColourPlanes, Family
from converters.marks.found import BoxSums
from converters.marks.model import Array, Mask

MIN_CONTRAST = 110.0
"""Median RGB distance between a stroke and what lies beside it: pens stand out, photo speckle does not."""
THICK = 12
"""Side of the square that fits in filled regions but in no stroke (strokes are at most ~11 px wide)."""
MAX_CANDIDATES = 60
"""Most components of one layer a finder analyses (the largest): bounds the time a page full of the colour takes."""


def largest(candidates: Array, area: Array, limit: int) -> Array:
    """Indices of the CANDIDATES (a flag per component), the LIMIT largest by AREA, in index order."""
    index = np.flatnonzero(candidates)
    if len(index) > limit:
        index = np.sort(index[np.argsort(-area[index], kind="stable")[:limit]])
    out: Array = index
    return out


@dataclass(frozen=True)
class Components:
    """A connected-component labelling: labels image, OpenCV stats rows, crisp fraction per component."""

    labels: Array
    stats: Array
    crisp: Array

    def __len__(self) -> int:
        return len(self.stats)

    def mask(self, i: int) -> Array:
        """Component I cropped to its box, as a 0/1 uint8 array."""
        x, y, w, h = (int(v) for v in self.stats[i, :4])
        out: Array = (self.labels[y : y + h, x : x + w] == i).view(np.uint8)
        return out


@dataclass
class Layer:
    """FAMILY's evidence within the region ``(x0, y0)``..``(x0 + width, y0 + height)`` of PLANES."""

    family: Family
    planes: ColourPlanes
    x0: int
    y0: int
    mark: Mask
    strength: Array
    """Chroma of pixels in the family's hue window, 0 elsewhere."""
    crisp: Mask
    """Pixels that stand out from their 21 x 21 neighbourhood in this colour: strokes, glyphs, edges.

    A stroke on any background is far stronger in its colour than the mean around it; the speckle of a noisy
    photo region whose colour hovers at the threshold, or the inside of a filled object, is not.
    """
    used: Mask = field(init=False)
    """Pixels already explained by an accepted mark (arrows and labels skip them)."""

    def __post_init__(self) -> None:
        self.used = np.zeros_like(self.mark)

    @property
    def height(self) -> int:
        """Rows in the region."""
        return int(self.mark.shape[0])

    @property
    def width(self) -> int:
        """Columns in the region."""
        return int(self.mark.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the whole image."""
        return self.planes.shape[1], self.planes.shape[0]

    def view(self, plane: Array) -> Array:
        """PLANE (a whole-image array) cropped to the region."""
        return plane[self.y0 : self.y0 + self.height, self.x0 : self.x0 + self.width]

    @cached_property
    def thick(self) -> Mask:
        """Filled parts: the opening of the mask by a THICK x THICK square."""
        kernel = np.ones((THICK, THICK), np.uint8)
        out: Mask = cv2.morphologyEx(self.mark, cv2.MORPH_OPEN, kernel)
        return out

    @cached_property
    def thin(self) -> Mask:
        """Stroke-like parts: the mask without its filled parts, near crisp pixels; plus crisp pixels inside
        filled parts (a stroke running over a paler region of its colour stands out there)."""
        outside = cv2.bitwise_and(cv2.bitwise_and(self.mark, cv2.bitwise_not(self.thick)), self.near_crisp)
        out: Mask = cv2.bitwise_or(outside, cv2.bitwise_and(self.crisp, self.mark))
        return out

    def free(self, thin: bool) -> Mask:
        """Mask pixels no accepted mark has used (nor touches), near crisp ones or filled; THIN: strokes only.

        Filled parts are kept whole (an object stays a blob, not a hollow rim); speckle is dropped.
        """
        taken = cv2.dilate(self.used, np.ones((5, 5), np.uint8))
        base = self.thin if thin else cv2.bitwise_and(self.mark, cv2.bitwise_or(self.near_crisp, self.thick))
        out: Mask = cv2.bitwise_and(base, cv2.bitwise_not(taken))
        return out

    @cached_property
    def near_crisp(self) -> Mask:
        """Pixels within two pixels of a crisp one: where strokes can be."""
        out: Mask = cv2.dilate(self.crisp, np.ones((5, 5), np.uint8))
        return out

    def components(self, mask: Mask) -> Components:
        """Connected components (8-connected) of MASK, a layer-sized mask."""
        _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        return Components(labels, stats, self.crisp_fraction(labels, stats))

    def crisp_fraction(self, labels: Array, stats: Array) -> Array:
        """For each component of a labelling of (part of) the mask, the fraction of its pixels that are crisp."""
        counts = np.bincount(labels[self.crisp > 0], minlength=len(stats)).astype(np.float64)
        out: Array = counts / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
        return out

    @cached_property
    def sums(self) -> BoxSums:
        """Constant-time counts of mask pixels in boxes and frames."""
        return BoxSums(self.mark)

    @cached_property
    def grown(self) -> Mask:
        """The mask dilated by one pixel, for tolerant coverage tests."""
        out: Mask = cv2.dilate(self.mark, np.ones((3, 3), np.uint8))
        return out

    def at_image_edge(self, box: tuple[int, int, int, int]) -> tuple[bool, bool, bool, bool]:
        """Whether a region-local box touches the image's left, top, right, bottom border."""
        width, height = self.image_size
        x0, y0, x1, y1 = box
        return (
            x0 + self.x0 <= 1,
            y0 + self.y0 <= 1,
            x1 + self.x0 >= width - 1,
            y1 + self.y0 >= height - 1,
        )


def stroke_contrast(layer: Layer, on: Array, inside: Array, outside: Array) -> float:
    """Median over sample points of the RGB distance from the stroke (ON) to the farther of its two sides.

    ON, INSIDE and OUTSIDE are matching (n, 2) arrays of layer (x, y) points: on the stroke's centre line and
    just beside it. Points off the layer are ignored; with none left the contrast is 0.
    """
    rgb = layer.view(layer.planes.rgb)
    h, w = rgb.shape[:2]
    pts = [np.rint(p).astype(np.int64) for p in (on, inside, outside)]
    ok = np.ones(len(on), bool)
    for p in pts:
        ok &= (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    if not ok.any():
        return 0.0
    i, o = (rgb[p[ok, 1], p[ok, 0]].astype(np.float64) for p in pts[1:])
    # the stroke's colour: its strongest pixel around each centre-line point (thin strokes are unforgiving)
    px, py = pts[0][ok, 0], pts[0][ok, 1]
    nx = np.clip(px[:, None] + np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1]), 0, w - 1)
    ny = np.clip(py[:, None] + np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1]), 0, h - 1)
    best = np.argmax(layer.strength[ny, nx], axis=1)
    rows = np.arange(len(px))
    c = rgb[ny[rows, best], nx[rows, best]].astype(np.float64)
    far = np.maximum(np.linalg.norm(c - i, axis=1), np.linalg.norm(c - o, axis=1))
    return float(np.median(far))
