"""A page's own boxes that look like drawn rectangles: table cells and outlines, tinted error boxes, inputs and
outlined buttons.

Each test takes a candidate box (layer coordinates) and the width of the band its stroke occupies. Tables give
themselves away by rules that run on past a cell's corners or end on its outline; error boxes by a pale fill of
their border's hue right inside the border; inputs and outlined buttons by a hairline border with rounded corners
or a centred label of the border's colour.
"""

from __future__ import annotations

import cv2
import numpy as np

from converters.marks.colors import WEAK_CHROMA, at_least, below
from converters.marks.layers import Layer
from converters.marks.model import Array
from converters.marks.strokes import MAX_STROKE

TINTED_BORDER = 4.5
"""Boxes with a pale fill of their hue and a border thinner than this are UI error boxes, not marks."""
HAIRLINE = 2.8
"""Strokes this thin are a UI's 1 px borders (inputs, outlined buttons) when rounded or framing a label."""


def page_furniture(layer: Layer, box: tuple[int, int, int, int], stroke: float, band: int) -> bool:
    """A page's own box: a table's outline, a tinted error box, a rounded input or an outlined button."""
    if _inner_rules(layer, box, band)[0] > 0:
        return True
    if stroke < TINTED_BORDER and _is_tinted_box(layer, box, band):
        return True
    if stroke <= HAIRLINE and _rounded(layer.mark, box):
        return True
    return stroke <= 1.6 and _labelled_inside(layer, box, band)


def _rounded(mark: Array, box: tuple[int, int, int, int]) -> bool:
    """Whether at least three corners are cut off: the corner pixel and its two neighbours along the sides
    hold no stroke."""
    x0, y0, x1, y1 = box
    cut = 0
    for cx, cy, dx, dy in ((x0, y0, 1, 1), (x1 - 1, y0, -1, 1), (x0, y1 - 1, 1, -1), (x1 - 1, y1 - 1, -1, -1)):
        cut += not (mark[cy, cx] or mark[cy, cx + dx] or mark[cy + dy, cx])
    return cut >= 3


def _labelled_inside(layer: Layer, box: tuple[int, int, int, int], band: int) -> bool:
    """Whether the box holds a centred line of its own colour (an outlined button's label)."""
    x0, y0, x1, y1 = box
    inner = layer.thin[y0 + band : y1 - band, x0 + band : x1 - band]
    if inner.size == 0:
        return False
    ys, xs = np.nonzero(inner)
    if len(xs) < 0.02 * inner.size:
        return False
    w, h = inner.shape[1], inner.shape[0]
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    return bool(abs(cx - w / 2) <= 0.15 * w and abs(cy - h / 2) <= 0.2 * h)


def is_grid_cell(layer: Layer, box: tuple[int, int, int, int], band: int) -> bool:
    """Table borders run on past a cell's corners; a drawn box's sides stop there."""
    x0, y0, x1, y1 = box
    reach = 2 * band + 4
    m = layer.thin  # a rule is a thin line; a filled region of the colour beside a corner is not
    stubs = (
        m[y0 : y0 + band, max(0, x0 - reach) : x0 - 1],  # top side, left of the box
        m[y0 : y0 + band, x1 + 1 : x1 + reach],  # top side, right
        m[y1 - band : y1, max(0, x0 - reach) : x0 - 1],  # bottom side, left
        m[y1 - band : y1, x1 + 1 : x1 + reach],  # bottom side, right
        m[max(0, y0 - reach) : y0 - 1, x0 : x0 + band],  # left side, above
        m[y1 + 1 : y1 + reach, x0 : x0 + band],  # left side, below
        m[max(0, y0 - reach) : y0 - 1, x1 - band : x1],  # right side, above
        m[y1 + 1 : y1 + reach, x1 - band : x1],  # right side, below
    )
    runs = 0
    for stub in stubs:
        if stub.size == 0:
            continue
        along = stub.any(axis=0) if stub.shape[1] > stub.shape[0] else stub.any(axis=1)
        if along.mean() >= 0.8:
            runs += 1
    # a block of cells also has rules crossing it from one neighbour cell to the other
    return runs >= 3 or (runs >= 2 and _inner_rules(layer, box, band)[1] > 0)


def _inner_rules(layer: Layer, box: tuple[int, int, int, int], band: int) -> tuple[int, int]:
    """Thin rules spanning the box's inside: (how many end on its outline, how many cross it).

    A table's outline has rules inside that end on it (T-junctions); a line under a drawn box crosses it.
    """
    x0, y0, x1, y1 = box
    m = layer.mark
    inner = m[y0 + band + 1 : y1 - band - 1, x0 + band : x1 - band]
    ending = crossing = 0
    if inner.size == 0:
        return ending, crossing
    for axis in (1, 0):
        fill = (inner > 0).mean(axis=axis)
        full = fill >= 0.9
        if not full.any():
            continue
        idx = np.flatnonzero(full)
        for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
            beside = fill[max(0, int(run[0]) - 3) : max(0, int(run[0]) - 1)].tolist()
            beside += fill[int(run[-1]) + 2 : int(run[-1]) + 4].tolist()
            if len(run) > MAX_STROKE or (beside and max(beside) > 0.3):
                continue  # too thick, or part of something filled: not a thin rule
            if axis == 1:  # a horizontal rule at rows run + y0 + band + 1
                rows = slice(int(run[0]) + y0 + band + 1, int(run[-1]) + y0 + band + 2)
                out_l, out_r = m[rows, max(0, x0 - 6) : x0], m[rows, x1 : x1 + 6]
            else:
                cols = slice(int(run[0]) + x0 + band, int(run[-1]) + x0 + band + 1)
                out_l, out_r = m[max(0, y0 - 6) : y0, cols], m[y1 : y1 + 6, cols]
            if out_l.size > 0 and out_r.size > 0 and out_l.any() and out_r.any():
                crossing += 1
            else:
                ending += 1
    return ending, crossing


def _is_tinted_box(layer: Layer, box: tuple[int, int, int, int], band: int) -> bool:
    """A pale fill of the border's hue inside (pink error box) that the page just outside does not have."""
    x0, y0, x1, y1 = box
    rx0, ry0 = max(0, x0 - 8), max(0, y0 - 8)
    rx1, ry1 = min(layer.width, x1 + 8), min(layer.height, y1 + 8)
    hue = layer.view(layer.planes.hue)[ry0:ry1, rx0:rx1]
    chroma = layer.view(layer.planes.chroma)[ry0:ry1, rx0:rx1]
    tinted = cv2.bitwise_and(cv2.LUT(hue, layer.family.lut()), at_least(chroma, 10))
    pale = cv2.bitwise_and(tinted, below(chroma, WEAK_CHROMA + 30))
    x0, x1, y0, y1 = x0 - rx0, x1 - rx0, y0 - ry0, y1 - ry0
    inner = _frame_pixels(pale, (x0 + band, y0 + band, x1 - band, y1 - band), 3)  # right inside the stroke
    outer = _frame_pixels(tinted, (x0 - 7, y0 - 7, x1 + 7, y1 + 7), 5)
    if inner.size == 0:
        return False
    return float((inner > 0).mean()) >= 0.5 and (outer.size == 0 or float((outer > 0).mean()) <= 0.25)


def _frame_pixels(mask: Array, box: tuple[int, int, int, int], depth: int) -> Array:
    """Pixels of MASK in the DEPTH-wide frame just inside BOX (clipped to the mask)."""
    x0, y0, x1, y1 = box
    h, w = mask.shape
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 - cx0 <= 2 * depth or cy1 - cy0 <= 2 * depth:
        return mask[cy0:cy1, cx0:cx1].ravel()
    parts = [
        mask[cy0 : cy0 + depth, cx0:cx1].ravel() if y0 >= 0 else np.empty(0, np.uint8),
        mask[cy1 - depth : cy1, cx0:cx1].ravel() if y1 <= h else np.empty(0, np.uint8),
        mask[cy0 + depth : cy1 - depth, cx0 : cx0 + depth].ravel() if x0 >= 0 else np.empty(0, np.uint8),
        mask[cy0 + depth : cy1 - depth, cx1 - depth : cx1].ravel() if x1 <= w else np.empty(0, np.uint8),
    ]
    return np.concatenate(parts)
