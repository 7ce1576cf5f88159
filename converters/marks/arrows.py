"""Arrows: a straight shaft of constant width with a pointed head at one end.

Each candidate component is turned so its principal axis runs along x; its width profile along that axis then
shows a constant shaft, one narrow end (the tail) and one end where the width grows to several shaft widths and
narrows to a point (a filled triangle or an open V). A component merged with a filled same-coloured object (the
arrow touching the button it points at) is retried without that object's filled part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from converters.marks.layers import MAX_CANDIDATES, MIN_CONTRAST, THICK, Components, Layer, largest, stroke_contrast
from converters.marks.model import Array

MIN_LENGTH = 24
"""Shortest arrow, tail to tip (pixels)."""


@dataclass(frozen=True)
class Arrow:
    """A verified arrow in layer coordinates: tail and head (tip) points, box, shaft width, score."""

    tail: tuple[float, float]
    head: tuple[float, float]
    bbox: tuple[int, int, int, int]
    stroke: float
    score: float
    shaft: Array = field(compare=False, repr=False)
    """(3, n, 2) points in layer coordinates: on the shaft's middle, and just beside it on either side."""


def find_arrows(layer: Layer, comps: Components) -> list[tuple[int, Arrow]]:
    """Arrows of LAYER's colour among COMPS (components of the free pixels): (component index, arrow)."""
    stats = comps.stats
    w, h, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
    ok = (np.hypot(w, h) >= MIN_LENGTH) & (area >= 30) & (comps.crisp >= 0.4)
    ok[0] = False
    found: list[tuple[int, Arrow]] = []
    for i in largest(ok, area, MAX_CANDIDATES):
        x, y, cw, ch, ca = (int(v) for v in stats[i, :5])
        comp = comps.mask(int(i))
        arrow = None
        if ca <= 0.55 * cw * ch:
            arrow = _analyse(comp, x, y)
        if arrow is None:
            arrow = _without_filled_parts(layer, comp, x, y)
        if arrow is not None and _shaft_contrast(layer, arrow) >= MIN_CONTRAST:
            found.append((int(i), arrow))
    return found


def _shaft_contrast(layer: Layer, arrow: Arrow) -> float:
    """Colour contrast of the shaft's middle with what lies on either side of it (0 if an object is there)."""
    on, left, right = arrow.shaft
    for beside in (left, right):  # a shaft has background on both sides, not a filled object
        pts = np.rint(beside).astype(np.int64)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < layer.width) & (pts[:, 1] >= 0) & (pts[:, 1] < layer.height)
        if ok.any() and float((layer.mark[pts[ok, 1], pts[ok, 0]] > 0).mean()) > 0.5:
            return 0.0
    return stroke_contrast(layer, on, left, right)


def _without_filled_parts(layer: Layer, comp: Array, x: int, y: int) -> Arrow | None:
    """Retry COMP with its large filled parts (an object the arrow touches) taken out."""
    thick = cv2.bitwise_and(layer.thick[y : y + comp.shape[0], x : x + comp.shape[1]], comp * 255)
    if not thick.any():
        return None
    count, labels, stats, _ = cv2.connectedComponentsWithStats(thick, connectivity=8)
    big = np.isin(labels, [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 4 * THICK * THICK])
    if not big.any():
        return None
    big = cv2.dilate(big.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
    rest = ((comp > 0) & ~big).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    best: Arrow | None = None
    for i in range(1, count):
        sx, sy, sw, sh, area = (int(v) for v in stats[i])
        if math.hypot(sw, sh) < MIN_LENGTH or area < 30 or area > 0.55 * sw * sh:
            continue
        part = (labels[sy : sy + sh, sx : sx + sw] == i).view(np.uint8)
        arrow = _analyse(part, x + sx, y + sy)
        if arrow is not None and (best is None or arrow.score > best.score):
            best = arrow
    return best


@dataclass(frozen=True)
class Profile:
    """A component turned so its principal axis runs along +x, and its width along that axis."""

    pts: Array  # (n, 2) pixel coordinates in the component's box
    rot: Array  # 2 x 3 affine: component box -> turned canvas
    c0: int  # first canvas column holding the component
    strip: Array  # the turned component, columns c0.. only
    top: Array  # per column: first row set
    bottom: Array  # per column: last row set
    extent: Array  # per column: bottom - top + 1 (0 where empty)
    mid: Array  # per column: middle row (nan where empty)

    @property
    def length(self) -> int:
        """Columns from one end to the other."""
        return int(self.strip.shape[1])


def _profile(comp: Array) -> Profile | None:
    """COMP's width profile along its principal axis, or None when it is not elongated."""
    ys, xs = np.nonzero(comp)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    vals, vecs = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    if vals[1] < 4.0 * max(vals[0], 0.25):
        return None
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
    h, w = comp.shape
    diag = math.ceil(math.hypot(w, h)) + 4
    middle = ((w - 1) / 2.0, (h - 1) / 2.0)  # turn about the box's middle so no end falls off the canvas
    rot = cv2.getRotationMatrix2D(middle, angle, 1.0)
    rot[0, 2] += diag / 2 - middle[0]
    rot[1, 2] += diag / 2 - middle[1]
    turned = cv2.warpAffine(comp * 255, rot, (diag, diag), flags=cv2.INTER_NEAREST) > 0
    cols = np.flatnonzero(turned.any(axis=0))
    if len(cols) == 0:
        return None
    c0 = int(cols[0])
    strip = turned[:, c0 : int(cols[-1]) + 1]
    present = strip.any(axis=0)
    top = np.argmax(strip, axis=0)
    bottom = strip.shape[0] - 1 - np.argmax(strip[::-1], axis=0)
    extent = np.where(present, bottom - top + 1, 0).astype(np.float64)
    mid = np.where(present, (top + bottom) / 2.0, np.nan)
    return Profile(pts, rot, c0, strip, top, bottom, extent, mid)


def _shaft(p: Profile) -> tuple[float, float] | None:
    """(width, row) of a straight shaft of constant width through the profile's middle, or None."""
    length = p.length
    if length < MIN_LENGTH or float((p.extent > 0).mean()) < 0.9:
        return None
    middle = slice(int(length * 0.3), int(length * 0.7) + 1)
    width = float(np.median(p.extent[middle]))
    if width < 1 or width > 12 or length < 5 * width:
        return None
    line = float(np.nanmedian(p.mid[middle]))
    # straight where it is alone; where it crosses something of its colour it may bulge
    span = slice(int(length * 0.2), int(length * 0.8) + 1)
    alone = p.extent[span] <= 1.8 * width + 2
    straight = np.abs(p.mid[span][alone] - line) <= 1.5 + 0.25 * width
    if alone.mean() < 0.6 or straight.mean() < 0.9:
        return None
    return width, line


def _analyse(comp: Array, x: int, y: int) -> Arrow | None:
    """COMP (a component at (x, y)) as an arrow, or None."""
    p = _profile(comp)
    shaft = _shaft(p) if p is not None else None
    if p is None or shaft is None:
        return None
    width, line = shaft
    length = p.length
    found = []
    for reverse in (False, True):  # tail at the profile's start (head at its end), or the other way round
        ext = p.extent[::-1] if reverse else p.extent
        up = line - (p.top[::-1] if reverse else p.top)
        down = (p.bottom[::-1] if reverse else p.bottom) - line
        if float(ext[: max(3, int(width))].max()) > 1.8 * width + 3:
            continue  # the tail end is no plain line end
        tip = _head(ext, up, down, width)
        if tip is not None:
            found.append((length - 1 - tip[0] if reverse else tip[0], length - 1 if reverse else 0, tip[1]))
    if len(found) != 1:
        return None
    tip_col, tail_col, score = found[0]
    inv = cv2.invertAffineTransform(p.rot)

    def back(col: int) -> tuple[float, float]:
        rows = np.flatnonzero(p.strip[:, col])
        px, py = inv @ np.array([col + p.c0, float(rows.mean()) if len(rows) else line, 1.0])
        return float(px + x), float(py + y)

    # the box holds the arrow only, not what its tip touches
    along = p.pts @ p.rot[0, :2] + p.rot[0, 2] - p.c0
    keep = (along >= min(tip_col, tail_col) - 1) & (along <= max(tip_col, tail_col) + 1)
    bx0, by0 = p.pts[keep].min(axis=0)
    bx1, by1 = p.pts[keep].max(axis=0)
    bbox = (int(bx0) + x, int(by0) + y, int(bx1) + x + 1, int(by1) + y + 1)
    # points across the shaft's middle, for the contrast test
    cols = np.linspace(min(tail_col, tip_col) + 0.3 * length, max(tail_col, tip_col) - 0.4 * length, 24).astype(int)
    cols = cols[(p.extent[cols] > 0) & (p.extent[cols] <= 1.8 * width + 2)]
    rows = np.nan_to_num(p.mid[cols], nan=line)
    side = width / 2 + 3
    samples = [
        (inv @ np.stack([cols + p.c0, rows + offset, np.ones(len(cols))], axis=0)).T + np.array([x, y])
        for offset in (0.0, -side, side)
    ]
    return Arrow(back(tail_col), back(tip_col), bbox, width, score, np.stack(samples))


def _head(ext: Array, up: Array, down: Array, shaft: float) -> tuple[int, float] | None:
    """Where a pointed head ends (its tip column) in a width profile running from tail (0) to head, and a score.

    Walking from the tail, the shaft keeps its width until the head's base, where the width jumps to several shaft
    widths; from there it narrows steadily to the tip: the profile's end, or the narrowest point before whatever
    the tip touches. The head is about symmetric about the shaft. Wide stretches are tried from the far end, so
    something the shaft crosses on its way is not taken for the head. A chart's round or square marker, a flag,
    a descender touching an underline fail one of these.
    """
    n = len(ext)
    start = int(n * 0.4)
    wide = np.flatnonzero(ext[start:] >= 2.0 * shaft + 2) + start
    if len(wide) == 0:
        return None
    runs = np.split(wide, np.flatnonzero(np.diff(wide) > 1) + 1)
    for run in reversed(runs):
        found = _wedge(ext, up, down, shaft, int(run[0]))
        if found is not None:
            return found
    return None


def _wedge(ext: Array, up: Array, down: Array, shaft: float, base: int) -> tuple[int, float] | None:
    """A head whose base is at BASE: (tip column, score), or None."""
    n = len(ext)
    reach = max(3, int(shaft))
    peak = base + int(np.argmax(ext[base : base + reach]))
    widest = float(ext[peak])
    sides = (float(up[peak]), float(down[peak]))
    if min(sides) < 0.35 * max(sides):
        return None  # lopsided
    window = ext[peak : min(n, peak + int(3 * widest) + 5)]
    # the head narrows until the tip, or until what the tip touches makes it widen again
    rises = np.flatnonzero(window - np.minimum.accumulate(window) > max(2.0, 0.15 * widest))
    window = window[: int(rises[0])] if len(rises) else window
    tip = peak + int(np.argmin(window))
    span = tip - peak
    if span < max(2, 0.4 * shaft, 0.35 * widest) or float(ext[tip]) > max(shaft + 1, 0.5 * widest):
        return None
    beyond = ext[tip + 1 :]
    if len(beyond) > 0.5 * span and float(beyond.max()) <= 0.6 * widest:
        return None  # narrows, then runs on as a line: a bulge, not a head
    halfway = float(ext[peak + span // 2])
    if not 0.25 * widest <= halfway <= 0.85 * widest:
        return None  # not narrowing steadily
    plateau = ext[peak : tip + 1] >= 0.8 * widest
    # A head's base is abrupt: the width jumps from the shaft's to the head's within a pixel or two (a filled
    # triangle's base, an open V's arm ends). A round marker on a chart line swells as gradually as it shrinks.
    before = np.flatnonzero(ext[:peak] <= 1.4 * shaft + 1)
    swells = len(before) > 0 and peak - int(before[-1]) > max(3.0, 0.3 * span, 0.25 * widest)
    if int(np.argmin(plateau)) > max(2, 0.5 * span) or swells:
        return None  # a block, or a round blob, not a wedge
    return tip, float(np.clip(0.6 + 0.1 * min(widest / shaft, 4.0), 0.0, 1.0))
