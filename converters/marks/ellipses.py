"""Ellipses: robust conic fits to thin-stroke components, verified by how much of the curve is stroked.

A component that encloses a hole is filled and opened with a disc, which strips whatever thin content it merged
with (a chart line running through it, an arrow touching it); the outline of what remains is the ellipse's outer
edge. A component without a hole (an arc broken by JPEG, by a filled object it touches, or by the image border)
is fitted directly. Either way the fit is accepted only when the stroke covers most of the curve (the part inside
the image), the colour does not fill it or surround it, and the outline is not a glyph in a line of text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.conics import Ellipse, fit_ellipse, robust_fit
from converters.marks.labels import in_text_line
from converters.marks.layers import MAX_CANDIDATES, MIN_CONTRAST, Layer, largest, stroke_contrast
from converters.marks.model import Array

MIN_EXTENT = 14
"""Smallest longer side (pixels) of an ellipse's box."""
MIN_MINOR = 12
"""Shortest minor axis (outer, pixels) of an ellipse."""
MIN_COVERAGE = 0.85
"""Fraction of the curve (inside the image) that must be stroked."""
MAX_POINTS = 1500
MAX_ARCS = 40
"""Largest number of unexplained arcs considered for joining."""
MAX_GROUPS = 8
"""Largest number of groups of arcs fitted together (the biggest first)."""
SMALL = 40
"""Ellipses at most this wide are held to a stricter ring test."""


@dataclass(frozen=True)
class Oval:
    """A verified ellipse in layer coordinates: the stroke's centre line, its width and the score."""

    centre_line: Ellipse
    stroke: float
    score: float

    def outer(self) -> Ellipse:
        """The outer edge of the stroke."""
        return self.centre_line.grown(self.stroke / 2)

    def bbox(self) -> tuple[int, int, int, int]:
        """Outer bound [x0, x1) x [y0, y1) in layer coordinates (not clipped)."""
        e = self.outer()
        hx, hy = e.extent()
        return (
            math.floor(e.cx - hx + 0.5),
            math.floor(e.cy - hy + 0.5),
            math.ceil(e.cx + hx + 0.5),
            math.ceil(e.cy + hy + 0.5),
        )


def find_ellipses(layer: Layer) -> list[Oval]:
    """Ellipses of LAYER's colour: one per thin-stroke component, or one per group of arcs of one ellipse."""
    comps = layer.components(layer.thin)
    stats = comps.stats
    sizes = stats[:, cv2.CC_STAT_WIDTH : cv2.CC_STAT_HEIGHT + 1]
    area = stats[:, cv2.CC_STAT_AREA]
    candidates = (sizes.max(axis=1) >= MIN_EXTENT) & (sizes.min(axis=1) >= 5) & (area >= 24)
    candidates &= (area <= 0.7 * sizes[:, 0] * sizes[:, 1]) & (comps.crisp >= 0.3)
    candidates[0] = False
    if layer.used.any():  # components a rectangle already explains
        taken = np.bincount(comps.labels[layer.used > 0], minlength=len(stats))
        candidates &= taken < 0.5 * area
    found: list[Oval] = []
    arcs: list[Arc] = []
    for i in largest(candidates, area, MAX_CANDIDATES):
        x, y, w, h = (int(v) for v in stats[i, :4])
        if h <= SMALL and in_text_line(layer, (x, y, x + w, y + h), same_hue=True):
            continue  # a letter
        comp = comps.mask(int(i))
        if not _stands_out(layer, comp, x, y):
            continue  # speckle or a rim
        oval = _closed_fit(layer, comp, x, y)
        if oval is None:
            ys, xs = np.nonzero(comp)
            arc = Arc(int(i), xs + x, ys + y, _stroke_width(comp), None)
            fit = _fit_pixels(layer, arc.xs, arc.ys, arc.stroke, 0.75)
            if isinstance(fit, Oval):
                oval = fit
            elif max(sizes[i]) >= 2 * MIN_EXTENT and comps.crisp[i] >= 0.6:
                arcs.append(Arc(arc.index, arc.xs, arc.ys, arc.stroke, fit))
        if oval is not None:
            found.append(oval)
    found.extend(_joined_arcs(layer, arcs))
    return found


@dataclass(frozen=True)
class Arc:
    """A thin component no single ellipse explained: its pixels, stroke width, and its own (unverified) fit."""

    index: int
    xs: Array
    ys: Array
    stroke: float
    fit: Ellipse | None


def _joined_arcs(layer: Layer, arcs: list[Arc]) -> list[Oval]:
    """Ellipses broken into arcs (by objects or background of their colour, by faint sharp ends): arcs that
    touch, or that lie on one another's fitted ellipse, are fitted together."""
    arcs = sorted([a for a in arcs if a.fit is not None], key=lambda a: -len(a.xs))[:MAX_ARCS]
    if len(arcs) < 2:
        return []
    pad = 12
    boxes = np.array([(a.xs.min() - pad, a.ys.min() - pad, a.xs.max() + pad, a.ys.max() + pad) for a in arcs])
    group = list(range(len(arcs)))

    def root(k: int) -> int:
        while group[k] != k:
            group[k] = group[group[k]]
            k = group[k]
        return k

    def on(a: Arc, b: Arc) -> bool:
        if a.fit is None:
            return False
        step = max(1, len(b.xs) // 200)
        d = a.fit.distances(b.xs[::step].astype(np.float64), b.ys[::step].astype(np.float64))
        return float((d <= max(3.0, a.stroke)).mean()) >= 0.6

    for i in range(len(arcs)):
        for j in range(i + 1, len(arcs)):
            touching = (boxes[i, 0] < boxes[j, 2] and boxes[j, 0] < boxes[i, 2]
                        and boxes[i, 1] < boxes[j, 3] and boxes[j, 1] < boxes[i, 3])  # fmt: skip
            if touching or on(arcs[i], arcs[j]) or on(arcs[j], arcs[i]):
                group[root(i)] = root(j)
    members: dict[int, list[Arc]] = {}
    for k, arc in enumerate(arcs):
        members.setdefault(root(k), []).append(arc)
    groups = [parts for parts in members.values() if len(parts) >= 2]
    # Far-apart arcs of one ellipse whose own fits are too short to predict each other: try the big curved ones
    # two by two.
    curved = [a for a in arcs if a.fit is not None and a.fit.b > 2 * a.stroke and max(np.ptp(a.xs), np.ptp(a.ys)) >= 40]
    for i in range(min(len(curved), 6)):
        for j in range(i + 1, min(len(curved), 6)):
            if root(arcs.index(curved[i])) != root(arcs.index(curved[j])):
                groups.append([curved[i], curved[j]])
    out: list[Oval] = []
    for parts in sorted(groups, key=lambda g: -sum(len(a.xs) for a in g))[:MAX_GROUPS]:
        xs = np.concatenate([a.xs for a in parts])
        ys = np.concatenate([a.ys for a in parts])
        oval = _fit_pixels(layer, xs, ys, float(np.median([a.stroke for a in parts])), 0.6)
        if isinstance(oval, Oval):
            out.append(oval)
    return out


def _stands_out(layer: Layer, comp: Array, x: int, y: int) -> bool:
    """Whether COMP's pixels differ in colour from what lies a few pixels away on at least one side."""
    ys, xs = np.nonzero(comp)
    step = max(1, len(xs) // 48)
    on = np.stack([xs[::step] + x, ys[::step] + y], axis=1).astype(np.float64)
    best = np.zeros(len(on))
    rgb = layer.view(layer.planes.rgb)
    h, w = rgb.shape[:2]
    centre = rgb[on[:, 1].astype(np.int64), on[:, 0].astype(np.int64)].astype(np.float64)
    for dx, dy in ((4, 0), (-4, 0), (0, 4), (0, -4)):
        px = np.clip(on[:, 0] + dx, 0, w - 1).astype(np.int64)
        py = np.clip(on[:, 1] + dy, 0, h - 1).astype(np.int64)
        best = np.maximum(best, np.linalg.norm(centre - rgb[py, px], axis=1))
    return float(np.median(best)) >= 0.8 * MIN_CONTRAST


def _stroke_width(comp: Array) -> float:
    """Mean width of a thin component: twice its area over its outline length."""
    contours, _ = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    length = sum(cv2.arcLength(c, True) for c in contours)
    return float(np.clip(2.0 * float(comp.sum()) / max(length, 1.0), 1.0, 14.0))


def _closed_fit(layer: Layer, comp: Array, x: int, y: int) -> Oval | None:
    """Fit a component that encloses holes, trying the outline of its opened fill and its largest holes.

    The opened fill's outline is the ellipse's outer edge when the component merged with thin content; a hole's
    outline is its inner edge when it merged with another closed shape (a box, an object's rim). The best
    verified fit wins.
    """
    h, w = comp.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = comp
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 1)
    filled = (outside[1:-1, 1:-1] == 0) | (comp > 0)
    holes = filled & (comp == 0)
    if int(holes.sum()) < max(20, 0.08 * float(filled.sum())):
        return None  # a ring's inside is most of it; loops in a chart line or glyph bowls are not
    if float(filled.sum()) > 0.92 * h * w:
        return None  # fills its box: a table, a banner, a box
    ys, xs = np.nonzero(comp)
    px, py = (xs + x).astype(np.float64), (ys + y).astype(np.float64)
    outlines: list[tuple[Array, float]] = []  # (points, +0.5 for an outer edge / -0.5 for an inner edge)
    d = int(np.clip(0.35 * min(w, h), 5, 15)) | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))
    opened = cv2.morphologyEx(filled.view(np.uint8), cv2.MORPH_OPEN, disc)
    contours, _ = cv2.findContours(opened, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if contours:
        outlines.append((max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64), 0.5))
    hole_contours, _ = cv2.findContours(holes.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in sorted(hole_contours, key=cv2.contourArea, reverse=True)[:2]:
        if cv2.contourArea(contour) >= max(20.0, 0.05 * float(filled.sum())):
            outlines.append((contour.reshape(-1, 2).astype(np.float64), -0.5))
    best: Oval | None = None
    for points, side in outlines:
        if len(points) < 12:
            continue
        oval = _fit_edge(layer, points[:, 0] + x, points[:, 1] + y, side=side, px=px, py=py)
        if oval is not None and (best is None or oval.score > best.score):
            best = oval
            if best.score >= 0.9:
                break
    return best


def _fit_edge(layer: Layer, ex: Array, ey: Array, *, side: float, px: Array, py: Array) -> Oval | None:
    """Fit an edge of the stroke (SIDE +0.5: outer, -0.5: inner), estimate the stroke from the component's
    pixels (PX, PY) and refit its centre line on them."""
    fit = robust_fit(ex, ey, tolerance=1.5)
    if fit is None:
        return None
    edge = fit[0].grown(side)
    dist = edge.distances(px, py)
    near = dist[dist <= 14]
    if len(near) < 10:
        return None
    stroke = float(np.clip(2.0 * np.median(near), 1.0, 14.0))
    centre = edge.grown(-stroke / 2 if side > 0 else stroke / 2)
    # The opening rounds off the sharp ends of a long thin ellipse: refit the stroke's own pixels near the curve.
    close = centre.distances(px, py) <= max(3.0 * stroke, 8.0)
    if close.sum() > MAX_POINTS:
        close[np.flatnonzero(close)[np.random.default_rng(0).permutation(int(close.sum()))[MAX_POINTS:]]] = False
    refit = robust_fit(px[close], py[close], tolerance=stroke / 2 + 1.5)
    if refit is not None and refit[1].mean() >= 0.6:
        centre = refit[0]
        # pixels spread evenly across a stroke of width s lie at |d| <= s/2, with median s/4
        spread = centre.distances(px[close], py[close])[refit[1]]
        stroke = float(np.clip(4.0 * np.median(spread), 1.0, stroke))
    return _verify(layer, centre, stroke)


def _fit_pixels(layer: Layer, xs: Array, ys: Array, stroke: float, min_inliers: float) -> Oval | Ellipse | None:
    """Fit the centre line of a stroke to its pixels (XS, YS), which must mostly (MIN_INLIERS) lie on it.

    Returns the verified ellipse, or the unverified fit when verification fails, or None when nothing fits.
    """
    if len(xs) > MAX_POINTS:
        pick = np.linspace(0, len(xs) - 1, MAX_POINTS).astype(np.int64)
        xs, ys = xs[pick], ys[pick]
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    tolerance = stroke / 2 + 1.5
    step = max(1, len(fx) // 120)
    quick = fit_ellipse(fx[::step], fy[::step])  # a cheap look first: most candidates are no arc at all
    if quick is None or float((quick.distances(fx[::step], fy[::step]) <= 3 * tolerance).mean()) < 0.5:
        return None
    fit = robust_fit(fx, fy, tolerance=tolerance)
    if fit is None:
        return None
    ellipse, inliers = fit
    if inliers.mean() < min_inliers:
        return None
    return _verify(layer, ellipse, stroke) or ellipse


def _sample(layer: Layer, mask: Array, pts: Array) -> tuple[Array, Array]:
    """(inside-the-image flags, MASK values) at PTS (layer coordinates); points off the layer read 0."""
    width, height = layer.image_size
    gx, gy = pts[:, 0] + layer.x0, pts[:, 1] + layer.y0
    inside_image = (gx >= 0) & (gx <= width - 1) & (gy >= 0) & (gy <= height - 1)
    xi = np.rint(pts[:, 0]).astype(np.int64)
    yi = np.rint(pts[:, 1]).astype(np.int64)
    h, w = mask.shape
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    values = np.zeros(len(pts), bool)
    values[ok] = mask[yi[ok], xi[ok]] > 0
    return inside_image, values


def _verify(layer: Layer, centre: Ellipse, stroke: float) -> Oval | None:
    """CENTRE (a stroke's centre line) as a drawn ellipse, or None."""
    outer = centre.grown(stroke / 2)
    width, height = layer.image_size
    if (
        centre.a < 4
        or centre.b - stroke / 2 < 2.0  # no room inside: a line, a dot
        or centre.a > 60 * centre.b
        or 2 * max(outer.extent()) < MIN_EXTENT
        or 2 * outer.b < MIN_MINOR  # flatter than any line of text it could go round: an underlined word
        or outer.a > 1.5 * max(width, height)
    ):
        return None
    n = int(np.clip(centre.perimeter() / 2, 48, 720))
    on_curve = centre.points(n)
    visible, covered = _sample(layer, layer.grown, on_curve)
    coverage = float(covered[visible].mean()) if visible.mean() >= 0.6 else 0.0
    if coverage < MIN_COVERAGE:
        return None
    inside = centre.grown(-stroke / 2 - min(3.0, (centre.b - stroke / 2) / 2)).points(n)
    outside = centre.grown(stroke / 2 + 3).points(n)
    ring = max(_fraction(layer, inside), _fraction(layer, outside))
    if ring > 0.5 or not _clean_hole(layer, centre, stroke, outer, inside) or _filled_alike(layer, on_curve, inside):
        return None
    if _blended_rim(layer, on_curve, inside, outside):
        return None
    if stroke_contrast(layer, on_curve, inside, outside) < MIN_CONTRAST:
        return None
    score = 0.5 + 0.5 * (coverage - MIN_COVERAGE) / (1 - MIN_COVERAGE) - 0.3 * ring
    return Oval(centre, stroke, float(np.clip(score, 0.05, 1.0)))


SAME_INK = 60.0
"""RGB distance within which a pixel inside a ring is of the ring's own ink."""


def _filled_alike(layer: Layer, on_curve: Array, inside: Array) -> bool:
    """Whether the inside of the ring is mostly of the ring's own colour: a filled dot or disc, whose rim alone a
    hue window may have kept (a crimson chart dot's edges fall in the magenta window, its middle does not)."""
    rgb = layer.view(layer.planes.rgb)
    h, w = rgb.shape[:2]
    _inside_image, on = _sample(layer, layer.mark, on_curve)
    pts = np.rint(on_curve[on]).astype(np.int64)
    pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)]
    if len(pts) < 8:
        return False
    ink = np.median(rgb[pts[:, 1], pts[:, 0]].astype(np.float64), axis=0)
    q = np.rint(inside).astype(np.int64)
    q = q[(q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)]
    if len(q) == 0:
        return False
    alike = np.linalg.norm(rgb[q[:, 1], q[:, 0]].astype(np.float64) - ink, axis=1) <= SAME_INK
    return float(alike.mean()) > 0.5


BLEND = 30.0
"""Largest RGB distance of a ring's colour from the mix of what lies inside and outside it for it to be a rim."""


def _blended_rim(layer: Layer, on_curve: Array, inside: Array, outside: Array) -> bool:
    """Whether the ring's colour is a mix of the colours inside and outside it: the anti-aliased rim of a filled
    disc on a background of another colour (a red badge on a blue bar has a magenta rim), not a pen's stroke."""
    rgb = layer.view(layer.planes.rgb)
    h, w = rgb.shape[:2]
    medians = []
    for pts in (on_curve, inside, outside):
        q = np.rint(pts).astype(np.int64)
        q = q[(q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)]
        if len(q) < 8:
            return False
        medians.append(np.median(rgb[q[:, 1], q[:, 0]].astype(np.float64), axis=0))
    ink, a, b = medians
    span = b - a
    if float(np.linalg.norm(span)) < 80:
        return False  # one colour inside and out: a stroke drawn over it
    t = float(np.clip(np.dot(ink - a, span) / np.dot(span, span), 0.0, 1.0))
    return float(np.linalg.norm(ink - (a + t * span))) < BLEND


def _fraction(layer: Layer, pts: Array) -> float:
    """Fraction of the points inside the image that fall on the colour (0 when none is inside)."""
    visible, hit = _sample(layer, layer.mark, pts)
    return float(hit[visible].mean()) if visible.any() else 0.0


def _clean_hole(layer: Layer, centre: Ellipse, stroke: float, outer: Ellipse, inside: Array) -> bool:
    """A small ring's inside edge must be clean all round: a badge's digit or a letter's bowl is not."""
    if 2 * max(outer.extent()) > SMALL:
        return True
    edge = centre.grown(-stroke / 2 - 1.0).points(len(inside)) if centre.b - stroke / 2 > 2.5 else inside
    return _fraction(layer, edge) <= 0.15
