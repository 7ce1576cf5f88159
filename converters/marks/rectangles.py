"""Rectangles: pairs of parallel stroke segments with matching extents, verified side by side.

A box needs no closed outline: two horizontal (or two vertical) segments of the same extent propose it, and it
is accepted when all four sides are stroked (a side cut off by the image border may be missing, and so may two
at a corner of the image, leaving an L), the frame just
inside and just outside is mostly free of the colour (a ring, not a filled button or banner), it is no cell of
a grid (table borders continue past the corners, or end on interior lines), and it is not a tinted box (a pink
error box has a pale fill of its border's hue that the page around it lacks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters.marks.furniture import is_grid_cell, page_furniture
from converters.marks.layers import MIN_CONTRAST, Layer, stroke_contrast
from converters.marks.model import Array
from converters.marks.strokes import MAX_STROKE, Segment, find_segments

MIN_SIDE = 10
"""Shortest box side (pixels) considered."""
MIN_COVERAGE = 0.72
"""Fraction of a side that must be stroked."""
SMALL_BOX = 40
"""Boxes at most this long on their longer side get the stricter even-sides test."""
FRAME_APART = 70.0
"""Least RGB distance between a box's stroke and a region of its family it is drawn over."""
MIN_STROKE = 1.5
"""Boxes drawn with 1 px lines are a page's own borders (inputs, tables, cards), not marks."""


@dataclass(frozen=True)
class Box:
    """A verified rectangle in layer coordinates: outer bound [x0, x1) x [y0, y1), stroke width, score."""

    x0: int
    y0: int
    x1: int
    y1: int
    stroke: float
    score: float


def find_rectangles(layer: Layer) -> list[Box]:
    """Rectangles of LAYER's colour, best first, not overlapping each other by more than half."""
    hs = [s for s in find_segments(layer.thin, layer.crisp, True, MIN_SIDE) if s.length >= MIN_SIDE]
    vs = [s for s in find_segments(layer.thin, layer.crisp, False, MIN_SIDE) if s.length >= MIN_SIDE]
    proposals: dict[tuple[int, int, int, int], float] = {}
    for a, b in _pairs(hs):
        proposals.setdefault((min(a.start, b.start), a.near, max(a.end, b.end), b.far), (a.thickness + b.thickness) / 2)
    for a, b in _pairs(vs):
        proposals.setdefault((a.near, min(a.start, b.start), b.far, max(a.end, b.end)), (a.thickness + b.thickness) / 2)
    for corner_box, stroke in _corners(hs, vs):  # a side and its neighbour, when the opposite side is broken up
        proposals.setdefault(corner_box, stroke)
    boxes: list[Box] = []
    for proposal, stroke in proposals.items():
        found = _verify(layer, _snap(proposal, hs, vs, stroke), stroke)
        if found is not None:
            boxes.append(found)
    boxes.sort(key=lambda b: -b.score)
    kept: list[Box] = []
    for candidate in boxes:
        if all(_overlap(candidate, k) < 0.5 for k in kept):
            kept.append(candidate)
    return kept


def _pairs(segments: list[Segment]) -> list[tuple[Segment, Segment]]:
    """Pairs (a, b) of parallel segments, a before b, at least MIN_SIDE apart, with matching extents."""
    order = sorted(segments, key=lambda s: s.centre)
    if len(order) > 400:  # a page of ruled lines: keep the longest
        order = sorted(sorted(order, key=lambda s: -s.length)[:400], key=lambda s: s.centre)
    out = []
    starts = np.array([s.start for s in order])
    ends = np.array([s.end for s in order])
    lengths = ends - starts
    for i, a in enumerate(order):
        tol = np.maximum(6.0, 0.08 * np.maximum(lengths[i], lengths)) + a.thickness
        ok = (np.abs(starts - a.start) <= tol) & (np.abs(ends - a.end) <= tol)
        ok[: i + 1] = False
        for j in np.flatnonzero(ok):
            b = order[int(j)]
            if b.far - a.near >= MIN_SIDE and b.near >= a.far:
                out.append((a, b))
                break  # a farther match would hold this one inside it: a table's rule, not a drawn box
    return out


def _corners(hs: list[Segment], vs: list[Segment]) -> list[tuple[tuple[int, int, int, int], float]]:
    """Boxes proposed by a horizontal and a vertical segment meeting at a corner (each at least 20 px long)."""
    hs = [h for h in hs if h.length >= 20]
    vs = [v for v in vs if v.length >= 20]
    out = []
    for h in hs:
        for v in vs:
            tol = max(6.0, 2 * max(h.thickness, v.thickness))
            at_left, at_right = abs(v.near - h.start) <= tol, abs(v.far - h.end) <= tol
            at_top, at_bottom = abs(h.near - v.start) <= tol, abs(h.far - v.end) <= tol
            if not (at_left or at_right) or not (at_top or at_bottom):
                continue
            x0, x1 = (min(h.start, v.near), h.end) if at_left else (h.start, max(h.end, v.far))
            y0, y1 = (min(h.near, v.start), v.end) if at_top else (v.start, max(h.far, v.end))
            out.append(((x0, y0, x1, y1), (h.thickness + v.thickness) / 2))
    return out


def _snap(
    box: tuple[int, int, int, int], hs: list[Segment], vs: list[Segment], stroke: float
) -> tuple[int, int, int, int]:
    """Widen BOX to perpendicular segments just beyond its ends (rounded corners shorten the seeds)."""
    x0, y0, x1, y1 = box
    reach = min(12.0, 0.2 * min(x1 - x0, y1 - y0)) + stroke
    for v in vs:
        if v.near > x1 + reach or v.far < x0 - reach or min(v.end, y1) - max(v.start, y0) < 0.5 * (y1 - y0):
            continue
        if abs(v.near - x0) <= reach and v.far <= x0 + reach + stroke:
            x0 = min(x0, v.near)
        if abs(v.far - x1) <= reach and v.near >= x1 - reach - stroke:
            x1 = max(x1, v.far)
    for h in hs:
        if h.near > y1 + reach or h.far < y0 - reach or min(h.end, x1) - max(h.start, x0) < 0.5 * (x1 - x0):
            continue
        if abs(h.near - y0) <= reach and h.far <= y0 + reach + stroke:
            y0 = min(y0, h.near)
        if abs(h.far - y1) <= reach and h.near >= y1 - reach - stroke:
            y1 = max(y1, h.far)
    return x0, y0, x1, y1


def _verify(layer: Layer, box: tuple[int, int, int, int], stroke: float) -> Box | None:
    """BOX as a drawn rectangle (stroked on all sides, not a page's own box), or None."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    band = round(stroke) + 2
    if min(w, h) < max(MIN_SIDE, 2 * band + 4) or not MIN_STROKE <= stroke <= MAX_STROKE:
        return None
    corner = min(round(stroke) + int(min(12.0, 0.2 * min(w, h))), min(w, h) // 3)
    left, top, right, bottom = layer.at_image_edge(box)
    edge = (top, left, bottom, right)
    sides = _side_coverage(layer.grown, box, band, corner, edge)
    if sides is None:
        return None
    present, missing = sides
    inside = layer.sums.frame(box, band + 1, band + 5)
    outside = layer.sums.frame(box, -5, -1)
    if (
        (inside > 0.5 and not _frame_apart(layer, box, band, (band + 1, band + 5)))
        or (outside > 0.5 and not _frame_apart(layer, box, band, (-5, -1)))
        or _side_blocked(layer, box, band, edge)
    ):
        return None  # a filled button or banner, or the rim of one
    skip = [i for i in range(4) if edge[i] or i in missing]
    if not _shaped_like_a_box(layer, box, stroke, band=band, corner=corner, skip=skip):
        return None
    if page_furniture(layer, box, stroke, band):
        return None
    score = 0.55 + 0.45 * min(present) - 0.3 * max(inside, outside) - (0.1 if missing else 0.0)
    return Box(x0, y0, x1, y1, stroke, float(np.clip(score, 0.05, 1.0)))


def _side_coverage(
    grown: Array, box: tuple[int, int, int, int], band: int, corner: int, edge: tuple[bool, ...]
) -> tuple[list[float], list[int]] | None:
    """Coverage of the sides that are stroked, and the sides (at the image border) that are missing: one, or
    two that meet at a corner of the image."""
    x0, y0, x1, y1 = box
    cover = (
        float(grown[y0 : y0 + band, x0 + corner : x1 - corner].any(axis=0).mean()),
        float(grown[y0 + corner : y1 - corner, x0 : x0 + band].any(axis=1).mean()),
        float(grown[y1 - band : y1, x0 + corner : x1 - corner].any(axis=0).mean()),
        float(grown[y0 + corner : y1 - corner, x1 - band : x1].any(axis=1).mean()),
    )
    missing = [i for i in range(4) if cover[i] < MIN_COVERAGE]
    corner_cut = len(missing) == 2 and (0 in missing or 2 in missing) and (1 in missing or 3 in missing)
    if any(not edge[i] for i in missing) or (len(missing) > 1 and not corner_cut):
        return None
    present = [cover[i] for i in range(4) if i not in missing]
    if sum(present) / len(present) < 0.85:
        return None
    return present, missing


def _shaped_like_a_box(
    layer: Layer, box: tuple[int, int, int, int], stroke: float, *, band: int, corner: int, skip: list[int]
) -> bool:
    """Even sides with corners, standing out in colour: not a cell of a grid, not an ellipse or a badge."""
    x0, y0, x1, y1 = box
    left, top, right, bottom = layer.at_image_edge(box)
    if is_grid_cell(layer, box, band) or not _even_sides(layer.mark, box, corner, band, skip):
        return False
    diagonal = float(np.hypot(x1 - x0, y1 - y0))
    if _deep_corners(layer.mark, box, (top, left, bottom, right), 0.12 * diagonal / 2 + 1.5) >= 2:
        return False  # corners cut as deep as an ellipse's: leave it to the ellipse finder
    return _box_fill(layer.mark, box, skip) >= 0.9 and _contrast(layer, box, stroke, corner, skip) >= MIN_CONTRAST


def _side_blocked(layer: Layer, box: tuple[int, int, int, int], band: int, edge: tuple[bool, ...]) -> bool:
    """Whether some side has a region of its own colour filling the strip right beside it, inside or out: the
    rim of a filled button or banner is no side of a drawn box (a pen stroke over a paler region of its hue is)."""
    x0, y0, x1, y1 = box
    sides = (
        (
            (x0, y0, x1, y0 + band),
            (x0, y0 - 4, x1, y0 - 1),
            (x0 + band, y0 + band + 1, x1 - band, y0 + band + 4),
            edge[0],
        ),
        (
            (x0, y0, x0 + band, y1),
            (x0 - 4, y0, x0 - 1, y1),
            (x0 + band + 1, y0 + band, x0 + band + 4, y1 - band),
            edge[1],
        ),
        (
            (x0, y1 - band, x1, y1),
            (x0, y1 + 1, x1, y1 + 4),
            (x0 + band, y1 - band - 4, x1 - band, y1 - band - 1),
            edge[2],
        ),
        (
            (x1 - band, y0, x1, y1),
            (x1 + 1, y0, x1 + 4, y1),
            (x1 - band - 4, y0 + band, x1 - band - 1, y1 - band),
            edge[3],
        ),
    )
    for side, out, inn, at_edge in sides:
        for strip, skip in ((out, at_edge), (inn, False)):
            hit, total = layer.sums.count(*strip)
            if skip or total == 0 or hit <= 0.7 * total:
                continue
            if _colour_distance(layer, side, strip) < 60:
                return True
    return False


def _frame_apart(layer: Layer, box: tuple[int, int, int, int], band: int, frame: tuple[int, int]) -> bool:
    """Whether the mask's pixels in FRAME (insets of BOX, negative: outside) differ in colour from the stroke's
    (the outer BAND px of BOX, less their blended edges) by at least FRAME_APART: a pen stroke over a region of
    a paler or darker shade of its family (a red box on a pink photo), not the rim of a region of one colour."""
    rgb = layer.view(layer.planes.rgb)
    x0, y0, x1, y1 = box
    if min(x1 - x0, y1 - y0) < 4 * band + 12:
        return False  # too small for a stroke and a region inside it: a badge, a filled chip
    medians = []
    for outer, inner in ((1, max(2, band - 2)), frame):  # the stroke's core, not its blended outer edge
        pixels = _ring_pixels(rgb, layer.mark, box, outer, inner)
        if len(pixels) == 0:
            return False
        medians.append(np.median(pixels.astype(np.float64), axis=0))
    return float(np.linalg.norm(medians[0] - medians[1])) >= FRAME_APART


def _ring_pixels(rgb: Array, mark: Array, box: tuple[int, int, int, int], outer: int, inner: int) -> Array:
    """(n, 3) colours of MARK's pixels in the frame of BOX between insets OUTER and INNER (negative: outside),
    gathered from its four strips (corners once)."""
    x0, y0, x1, y1 = box
    h, w = mark.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0 + outer), max(0, y0 + outer), min(w, x1 - outer), min(h, y1 - outer)
    bx0, by0, bx1, by1 = max(ax0, x0 + inner), max(ay0, y0 + inner), min(ax1, x1 - inner), min(ay1, y1 - inner)
    if ax1 - ax0 < 3 or ay1 - ay0 < 3:
        return np.zeros((0, 3), np.uint8)
    if bx1 <= bx0 or by1 <= by0:
        strips = [(slice(ay0, ay1), slice(ax0, ax1))]
    else:
        strips = [
            (slice(ay0, by0), slice(ax0, ax1)),
            (slice(by1, ay1), slice(ax0, ax1)),
            (slice(by0, by1), slice(ax0, bx0)),
            (slice(by0, by1), slice(bx1, ax1)),
        ]
    parts = [rgb[rows, cols][mark[rows, cols] > 0] for rows, cols in strips]
    out: Array = np.concatenate(parts) if parts else np.zeros((0, 3), np.uint8)
    return out


def _colour_distance(layer: Layer, a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """RGB distance between the median colours of the mask's pixels in boxes A and B (layer coordinates)."""
    rgb = layer.view(layer.planes.rgb)
    medians = []
    for box in (a, b):
        x0, y0 = max(0, box[0]), max(0, box[1])
        x1, y1 = min(layer.width, box[2]), min(layer.height, box[3])
        on = layer.mark[y0:y1, x0:x1] > 0
        if not on.any():
            return 255.0
        medians.append(np.median(rgb[y0:y1, x0:x1][on].astype(np.float64), axis=0))
    return float(np.linalg.norm(medians[0] - medians[1]))


def _even_sides(mark: Array, box: tuple[int, int, int, int], corner: int, band: int, skip: list[int]) -> bool:
    """The sides are strokes of similar width, measured inward from the outer edge (sides in SKIP are not).

    Content of the colour touching a side from inside lengthens its runs here and there; what matters is the
    thinnest typical run (the stroke itself). A small box is held to more: a filled badge with a digit, a
    letter's bowl have sides whose width varies all along.
    """
    x0, y0, x1, y1 = box
    depth = 2 * band + 2
    sides = (
        mark[y0 : y0 + depth, x0 + corner : x1 - corner],
        mark[y0 + corner : y1 - corner, x0 : x0 + depth].T,
        mark[max(y0, y1 - depth) : y1, x0 + corner : x1 - corner][::-1],
        mark[y0 + corner : y1 - corner, max(x0, x1 - depth) : x1].T[::-1],
    )
    small = max(x1 - x0, y1 - y0) <= SMALL_BOX
    widths = []
    for i, side in enumerate(sides):
        if i in skip or side.size == 0:
            continue
        on = side > 0
        first = np.argmax(on, axis=0)
        stroked = on.any(axis=0) & (first <= 2)
        if stroked.sum() < 3:
            return False
        rows = np.arange(on.shape[0])[:, None]
        filled = on | (rows < first[None, :])
        run = (np.where(filled.all(axis=0), on.shape[0], np.argmin(filled, axis=0)) - first)[stroked]
        if small:
            typical = float(np.median(run))
            if float((np.abs(run - typical) <= 1 + 0.35 * typical).mean()) < 0.7:
                return False
        else:
            typical = float(np.percentile(run, 25))
        widths.append(typical)
    if not small:  # a big box's side may run along a region of its colour; only a small one must be even
        return bool(widths)
    return bool(widths) and max(widths) <= 2.2 * min(widths) + 2


def _contrast(layer: Layer, box: tuple[int, int, int, int], stroke: float, corner: int, skip: list[int]) -> float:
    """Colour contrast of the sides (but those in SKIP, cut by the image border) with what lies beside them."""
    x0, y0, x1, y1 = box
    half, step = stroke / 2, stroke + 3
    xs = np.linspace(x0 + corner, x1 - corner - 1, 24)
    ys = np.linspace(y0 + corner, y1 - corner - 1, 24)
    on: list[Array] = []
    inside: list[Array] = []
    outside: list[Array] = []
    sides = ((0, y0, xs, 1, True), (2, y1 - 1, xs, -1, True), (1, x0, ys, 1, False), (3, x1 - 1, ys, -1, False))
    for index, fixed, along, sign, horizontal in sides:
        if index in skip and len(skip) < 4:
            continue
        for offset, out in ((half, on), (step, inside), (-3.0, outside)):
            c = np.full(len(along), fixed + sign * offset)
            out.append(np.stack([along, c], 1) if horizontal else np.stack([c, along], 1))
    return stroke_contrast(layer, np.concatenate(on), np.concatenate(inside), np.concatenate(outside))


def _box_fill(mark: Array, box: tuple[int, int, int, int], skip: list[int]) -> float:
    """How much of the box the outline encloses, along rows or columns (whichever is more): 1 for a box,
    pi/4 for an ellipse. Sides in SKIP (at the image border) count as stroked."""
    x0, y0, x1, y1 = box
    on = mark[y0:y1, x0:x1] > 0
    if skip:
        on = on.copy()
        for index, edge in (
            (0, (0, slice(None))),
            (2, (-1, slice(None))),
            (1, (slice(None), 0)),
            (3, (slice(None), -1)),
        ):
            if index in skip:
                on[edge] = True
    best = 0.0
    for m in (on, on.T):
        rows = m.any(axis=1)
        if not rows.any():
            continue
        first = np.argmax(m, axis=1)
        last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=1)
        spans = np.where(rows, last - first + 1, 0)
        best = max(best, float(spans.mean()) / m.shape[1])
    return best


def _deep_corners(
    mark: Array, box: tuple[int, int, int, int], edge: tuple[bool, bool, bool, bool], limit: float
) -> int:
    """How many corners inside the image are cut off deeper than LIMIT along the diagonal."""
    x0, y0, x1, y1 = box
    top, left, bottom, right = edge
    reach = min(x1 - x0, y1 - y0) // 2
    steps = np.arange(reach)
    deep = 0
    corners = (
        (x0, y0, 1, 1, top or left),
        (x1 - 1, y0, -1, 1, top or right),
        (x0, y1 - 1, 1, -1, bottom or left),
        (x1 - 1, y1 - 1, -1, -1, bottom or right),
    )
    for cx, cy, dx, dy, clipped in corners:
        if clipped:
            continue
        hits = np.flatnonzero(mark[cy + dy * steps, cx + dx * steps])
        deep += (float(hits[0]) if len(hits) else float(reach)) > limit
    return deep


def _overlap(a: Box, b: Box) -> float:
    ix = min(a.x1, b.x1) - max(a.x0, b.x0)
    iy = min(a.y1, b.y1) - max(a.y0, b.y0)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / ((a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter)
