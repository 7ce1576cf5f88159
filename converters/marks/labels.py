"""Text labels: glyphs in a mark's colour, set in a line, just beside a box, ellipse or arrow of that colour.

Red text is everywhere in user interfaces, so text counts as a mark only when it sits next to another mark of
the same pen: outside it, within about two text heights, and in the same colour (not merely the same hue
family). "The same colour" is judged with a mixing model rather than a distance: anti-aliasing, JPEG and
rescaling blend a thin glyph with the page behind it, so its pixels lie on the segment from the background's
colour to the pen's; a UI's own red (a darker or bluer red) lies off it. Glyph-shaped outlines inside a line of
text are also what keeps an "O" from being taken for an ellipse (``in_text_line``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.colors import hex_color, hex_to_rgb, vivid
from converters.marks.layers import Components, Layer
from converters.marks.model import Array

MAX_RESIDUAL = 34.0
"""Largest median RGB distance of a label's core pixels from the background-to-pen mixing segment. A UI red such
as #dc3545 lies 37-40 off a pen red's segment; a 16 px label after JPEG at quality 75 (4:2:0) drifts about 36."""
MIN_REACH = 0.7
"""A label's strongest pixels reach at least this far from the background towards the pen colour."""
MAX_ASPECT = 11.0
"""Widest label, in text heights (about 15 characters): longer runs of coloured text are the page's own."""
MAX_GLYPH = 60
"""Tallest glyph (pixels) of a label."""
GLYPH_HUE = 12
"""Most hue difference (OpenCV units, 0-180) between a letter and the neighbours that make it one of a line."""


@dataclass(frozen=True)
class Glyphs:
    """A line of glyph components in layer coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int
    count: int


@dataclass(frozen=True)
class Anchor:
    """A detected mark a label may belong to: its box in layer coordinates and its colour."""

    box: tuple[int, int, int, int]
    color: str


def find_labels(layer: Layer, comps: Components, anchors: list[Anchor]) -> list[tuple[Glyphs, str, float]]:
    """Lines of glyphs next to one of ANCHORS and of its colour: (glyphs, colour, score).

    COMPS are the components of the free thin-stroke pixels (glyphs are strokes; badges and buttons are not).
    """
    if not anchors:
        return []
    lines = _merge_words(_group(_glyph_boxes(layer, comps, anchors)), layer.mark)
    rgb = layer.view(layer.planes.rgb)
    out: list[tuple[Glyphs, str, float]] = []
    for line in lines:
        height = line.y1 - line.y0
        if height < 5 or (line.count == 1 and (line.x1 - line.x0) < 0.15 * height):
            continue
        if line.count == 1 and line.x1 - line.x0 > 1.15 * height and _convex(layer.mark, line):
            continue  # wider than any one character and convex: a pill with a number in it, not letters
        if line.x1 - line.x0 > MAX_ASPECT * height or _enclosed(layer.mark, line):
            continue  # a line of the page's own text (labels are a few words), or a button's label
        best = _nearest((line.x0, line.y0, line.x1, line.y1), anchors, 2.2 * height + 6)
        if best is None:
            continue
        region = layer.mark[line.y0 : line.y1, line.x0 : line.x1] > 0
        color = hex_color(rgb[line.y0 : line.y1, line.x0 : line.x1][region])
        if not vivid(color):
            continue
        residual = pen_residual(rgb, layer.mark, (line.x0, line.y0, line.x1, line.y1), best[1].color)
        if residual > MAX_RESIDUAL:
            continue
        score = float(np.clip(0.9 - residual / 150.0 - best[0] / (10.0 * height), 0.05, 1.0))
        out.append((line, color, score))
    return out


def _nearest(box: tuple[int, int, int, int], anchors: list[Anchor], reach: float) -> tuple[float, Anchor] | None:
    """(gap, anchor) of the anchor nearest to BOX within REACH, with BOX outside it; None when there is none."""
    best: tuple[float, Anchor] | None = None
    for anchor in anchors:
        gap = _gap(box, anchor.box)
        if 0 <= gap <= reach and (best is None or gap < best[0]):
            best = (gap, anchor)
    return best


def find_steps(
    layer: Layer, comps: Components, anchors: list[Anchor], labels: list[Glyphs]
) -> list[tuple[Glyphs, str, float]]:
    """Numbered step circles beside ANCHORS: a filled disc of the anchor's colour with a light number in it.

    COMPS are the components of the free mask, filled parts included. The disc is round (its pixels with the
    number's holes filled cover a disc's share of its box), 14-60 px across, the number is lighter than the
    disc and covers 3-45% of it, the disc is of the anchor's colour (within 30 RGB: UI badges are mostly of
    other reds), and it sits outside a mark of its colour within about its own size. A bold "o" is a disc with
    a light hole too: a disc in one of the text LABELS is a letter, and so is one whose hole is one convex blob.
    """
    st = comps.stats
    w, h, area = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT], st[:, cv2.CC_STAT_AREA]
    ok = (w >= 14) & (w <= 60) & (np.abs(w - h) <= 0.2 * np.maximum(w, h)) & (area >= 0.45 * w * h)
    ok[0] = False
    rgb = layer.view(layer.planes.rgb)
    out: list[tuple[Glyphs, str, float]] = []
    for i in np.flatnonzero(ok):
        x, y, cw, ch = (int(v) for v in st[i, :4])
        box = (x, y, x + cw, y + ch)
        best = _nearest(box, anchors, 0.8 * max(cw, ch) + 8)
        if best is None or any(_gap(box, (g.x0, g.y0, g.x1, g.y1)) == 0 for g in labels):
            continue
        disc = comps.mask(int(i)) > 0
        filled = _fill_holes(disc)
        number = filled & ~disc
        share = float(number.sum()) / max(1.0, float(filled.sum()))
        if not (0.72 <= float(filled.mean()) <= 0.86 and 0.03 <= share <= 0.45) or _letter_hole(number):
            continue  # a disc covers pi/4 of its box
        pixels = rgb[y : y + ch, x : x + cw]
        luma = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lighter = float(np.median(luma[number])) - float(np.median(luma[disc]))
        inner = pixels[number].astype(np.int16)
        neutral = float(np.median(inner.max(axis=1) - inner.min(axis=1))) < 60
        color = hex_color(pixels[disc])
        distance = float(np.linalg.norm(np.subtract(hex_to_rgb(color), hex_to_rgb(best[1].color))))
        if lighter < 40 or not neutral or not vivid(color) or distance > 30:
            continue
        out.append((Glyphs(x, y, x + cw, y + ch, 1), color, float(np.clip(0.85 - distance / 200.0, 0.05, 1.0))))
    return out


def _letter_hole(hole: Array) -> bool:
    """Whether HOLE (bool) is one convex blob, as in an "o" or an "a", rather than a number's strokes."""
    contours, _ = cv2.findContours(hole.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) != 1:
        return False
    area = cv2.contourArea(contours[0])
    hull = cv2.contourArea(cv2.convexHull(contours[0]))
    return hull > 0 and area / hull >= 0.85


def _fill_holes(mask: Array) -> Array:
    """MASK (bool) with its holes filled."""
    padded = np.pad(mask, 1).view(np.uint8) * 255
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 128)
    filled: Array = (outside != 128)[1:-1, 1:-1]
    return filled


def _glyph_boxes(layer: Layer, comps: Components, anchors: list[Anchor]) -> list[tuple[int, int, int, int]]:
    """Boxes of the components that could be glyphs of a label near one of ANCHORS."""
    st = comps.stats
    w, h, area = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT], st[:, cv2.CC_STAT_AREA]
    filled = (area > 0.85 * w * h) & (np.minimum(w, h) > 5)  # a blob; an "l" or an "i" fills its box but is thin
    ok = (h >= 3) & (h <= MAX_GLYPH) & (w <= 4 * h + 4) & (area >= 4) & ~filled & (comps.crisp >= 0.5)
    ok[0] = False
    # only glyphs near some anchor matter
    x0, y0 = st[:, 0], st[:, 1]
    near = np.zeros(len(st), bool)
    for anchor in anchors:
        ax0, ay0, ax1, ay1 = anchor.box
        reach = 2.2 * MAX_GLYPH + 6
        near |= (x0 + w >= ax0 - reach) & (x0 <= ax1 + reach) & (y0 + h >= ay0 - reach) & (y0 <= ay1 + reach)
    ok &= near
    if not ok.any():
        return []
    # what touches a mark (the badge an arrow points at) is no label beside it; connectivity through the
    # strokes and rims only, not through a background of the colour
    count, joined = cv2.connectedComponents(cv2.bitwise_or(layer.thin, layer.used), connectivity=8)
    marked = np.zeros(count, bool)
    marked[joined[layer.used > 0]] = True
    marked[0] = False
    ok[np.unique(comps.labels[marked[joined]])] = False
    for i in np.flatnonzero(ok):  # glyphs are strokes: a round badge with a number in it is a blob
        depth = (float(cv2.distanceTransform(np.pad(comps.mask(int(i)), 1), cv2.DIST_L2, 3).max()) - 1.2) / h[i]
        badge = depth >= 0.16 and area[i] >= 0.75 * w[i] * h[i] and w[i] <= 1.3 * h[i]  # wide pills: _convex
        ok[i] = depth <= 0.3 and not badge
    return [
        (int(st[i, 0]), int(st[i, 1]), int(st[i, 0] + st[i, 2]), int(st[i, 1] + st[i, 3])) for i in np.flatnonzero(ok)
    ]


def pen_residual(rgb: Array, mark: Array, box: tuple[int, int, int, int], pen: str) -> float:
    """How far BOX's mark pixels lie from the mixing segment between the background around them and PEN.

    The background is the median of the unmarked pixels in BOX (grown by 3 px). Each marked pixel is projected on
    the segment; the result is the median distance of the pixels at least half-way to the pen (the glyphs'
    cores), or infinity when too few get there or the strongest do not reach ``MIN_REACH`` of the way.
    """
    h, w = mark.shape[:2]
    x0, y0, x1, y1 = max(0, box[0] - 3), max(0, box[1] - 3), min(w, box[2] + 3), min(h, box[3] + 3)
    on = mark[y0:y1, x0:x1] > 0
    near = cv2.dilate(on.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    pixels = rgb[y0:y1, x0:x1].astype(np.float64)
    if int(on.sum()) < 4:
        return float("inf")
    background = np.median(pixels[~near], axis=0) if (~near).sum() >= 8 else np.full(3, 255.0)
    towards = np.asarray(hex_to_rgb(pen), np.float64) - background
    length2 = float(towards @ towards)
    if length2 < 60.0**2:
        return float("inf")  # the pen is the background's colour: nothing to tell
    px = pixels[on] - background
    alpha = np.clip(px @ towards / length2, 0.0, 1.0)
    residual = np.linalg.norm(px - alpha[:, None] * towards, axis=1)
    core = alpha >= 0.5
    if int(core.sum()) < 3 or float(np.percentile(alpha, 90)) < MIN_REACH:
        return float("inf")
    return float(np.median(residual[core]))


def _convex(mark: Array, line: Glyphs) -> bool:
    """Whether the outline of the colour in LINE's box is convex (solidity >= 0.92): a pill or a badge."""
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mark[line.y0 : line.y1, line.x0 : line.x1]), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return False
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(outline))
    return hull > 0 and cv2.contourArea(outline) >= 0.92 * hull


def _enclosed(mark: Array, line: Glyphs) -> bool:
    """Whether the colour runs along at least three sides of LINE within a text height (an outlined button)."""
    h = line.y1 - line.y0
    reach = h + 2
    hh, ww = mark.shape[:2]
    strips = (
        mark[max(0, line.y0 - reach) : line.y0 - 1, line.x0 : line.x1].any(axis=0),
        mark[line.y1 + 1 : min(hh, line.y1 + reach), line.x0 : line.x1].any(axis=0),
        mark[line.y0 : line.y1, max(0, line.x0 - reach) : line.x0 - 1].any(axis=1),
        mark[line.y0 : line.y1, line.x1 + 1 : min(ww, line.x1 + reach)].any(axis=1),
    )
    return sum(bool(strip.size) and float(strip.mean()) >= 0.6 for strip in strips) >= 3


def _merge_words(lines: list[Glyphs], mark: Array) -> list[Glyphs]:
    """Join lines of one band (words of one label) separated by a gap of up to a text height, or up to twice
    that when something of the colour fills part of the gap (a glyph merged with a stroke behind it)."""
    out: list[Glyphs] = []
    for line in sorted(lines, key=lambda g: (g.x0, g.y0)):
        for k, prev in enumerate(out):
            h = max(line.y1 - line.y0, prev.y1 - prev.y0)
            low = min(line.y1 - line.y0, prev.y1 - prev.y0)  # a word without ascenders is shorter: "fix me"
            overlap = min(line.y1, prev.y1) - max(line.y0, prev.y0)
            gap = line.x0 - prev.x1
            if overlap < 0.7 * low or gap < 0 or gap > 2 * h or low < 0.45 * h:
                continue
            band = mark[max(line.y0, prev.y0) : min(line.y1, prev.y1), prev.x1 : line.x0]
            if gap <= h or (band.size and float((band > 0).mean()) >= 0.08):
                out[k] = Glyphs(prev.x0, min(prev.y0, line.y0), line.x1, max(prev.y1, line.y1), prev.count + line.count)
                break
        else:
            out.append(line)
    return out


def _group(glyphs: list[tuple[int, int, int, int]]) -> list[Glyphs]:
    """Chain glyph boxes that overlap vertically and sit close horizontally into lines; fold in i-dots."""
    glyphs = sorted(glyphs)
    lines: list[list[int]] = []  # x0, y0, x1, y1, count
    for gx0, gy0, gx1, gy1 in glyphs:
        gh = gy1 - gy0
        for line in reversed(lines):
            lh = line[3] - line[1]
            overlap = min(gy1, line[3]) - max(gy0, line[1])
            if overlap >= 0.4 * min(gh, lh) and gx0 - line[2] <= 0.8 * max(gh, lh) and gx0 >= line[0]:
                line[0], line[1] = min(line[0], gx0), min(line[1], gy0)
                line[2], line[3] = max(line[2], gx1), max(line[3], gy1)
                line[4] += 1
                break
        else:
            lines.append([gx0, gy0, gx1, gy1, 1])
    tall = [line for line in lines if line[4] > 1 or line[3] - line[1] >= 8]
    out = []
    for line in lines:
        lh = line[3] - line[1]
        host = None
        if line[4] == 1:
            for other in tall:
                oh = other[3] - other[1]
                beside = other is not line and lh <= 0.4 * oh and other[0] <= line[0] and line[2] <= other[2] + 2
                if beside and (0 <= other[1] - line[3] <= 0.5 * oh or 0 <= line[1] - other[3] <= 0.3 * oh):
                    host = other
                    break
        if host is None:
            out.append(line)
        else:
            host[1], host[3] = min(host[1], line[1]), max(host[3], line[3])
    return [Glyphs(*line) for line in out]


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Distance between two boxes; -1 when A lies mostly inside B."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix > 0 and iy > 0:
        if ix * iy > 0.3 * (a[2] - a[0]) * (a[3] - a[1]):
            return -1.0
        return 0.0
    dx = max(0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0, max(a[1], b[1]) - min(a[3], b[3]))
    return float(np.hypot(dx, dy))


def in_text_line(layer: Layer, box: tuple[int, int, int, int], *, same_hue: bool = False) -> bool:
    """Whether BOX (layer coordinates) has glyphs of its height right beside it, like a letter.

    Glyphs are strong pixels of any family (a glyph's anti-aliased neighbours may fall outside it); with SAME_HUE
    only those of the hue of the box's own pixels count: the letters of one line share a colour, while a box
    drawn around a button or a chart's markers has content of other colours right beside it.
    """
    x0, y0, x1, y1 = box
    h = y1 - y0
    reach = max(3, int(0.4 * h))
    strong = layer.view(layer.planes.strong)
    hue = layer.view(layer.planes.hue)
    centre = _mean_hue(hue[y0:y1, x0:x1][layer.mark[y0:y1, x0:x1] > 0]) if same_hue else None
    for xa, xb in ((max(0, x0 - reach), max(0, x0)), (min(layer.width, x1), min(layer.width, x1 + reach))):
        if xb <= xa:
            continue
        glyphs = strong[y0:y1, xa:xb] > 0
        if centre is not None:
            apart = np.abs(hue[y0:y1, xa:xb].astype(np.int16) - centre)
            glyphs = glyphs & (np.minimum(apart, 180 - apart) <= GLYPH_HUE)
        rows = np.flatnonzero(glyphs.any(axis=1))
        if len(rows) and rows[-1] - rows[0] + 1 >= 0.4 * h:
            return True
    return False


def _mean_hue(hues: Array) -> int | None:
    """Circular mean of OpenCV hues (0-180), or None for no pixels."""
    if not len(hues):
        return None
    angle = hues.astype(np.float64) * (np.pi / 90.0)
    return round(float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) * 90.0 / np.pi) % 180
