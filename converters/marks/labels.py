"""Text labels: glyphs in a mark's colour, set in a line, just beside a box, ellipse or arrow of that colour.

Red text is everywhere in user interfaces, so text counts as a mark only when it sits next to another mark of
the same pen: outside it, within about two text heights, and in the same colour (not merely the same hue
family). Glyph-shaped outlines inside a line of text are also what keeps an "O" from being taken for an
ellipse (``in_text_line``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.colors import hex_color, hex_to_rgb, vivid
from converters.marks.layers import Components, Layer

MAX_COLOUR_DISTANCE = 35.0
"""Largest RGB distance between a label's colour and its mark's colour (UI reds are often within 50 of a pen's)."""
MAX_GLYPH = 60
"""Tallest glyph (pixels) of a label."""


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
    glyphs = [
        (int(st[i, 0]), int(st[i, 1]), int(st[i, 0] + st[i, 2]), int(st[i, 1] + st[i, 3])) for i in np.flatnonzero(ok)
    ]
    lines = _group(glyphs)
    rgb = layer.view(layer.planes.rgb)
    out: list[tuple[Glyphs, str, float]] = []
    for line in lines:
        height = line.y1 - line.y0
        if height < 5 or (line.count == 1 and (line.x1 - line.x0) < 0.15 * height):
            continue
        best: tuple[float, Anchor] | None = None
        for anchor in anchors:
            gap = _gap((line.x0, line.y0, line.x1, line.y1), anchor.box)
            if gap < 0 or gap > 2.2 * height + 6:
                continue
            if best is None or gap < best[0]:
                best = (gap, anchor)
        if best is None:
            continue
        region = layer.mark[line.y0 : line.y1, line.x0 : line.x1] > 0
        color = hex_color(rgb[line.y0 : line.y1, line.x0 : line.x1][region])
        if not vivid(color):
            continue
        distance = float(np.linalg.norm(np.subtract(hex_to_rgb(color), hex_to_rgb(best[1].color))))
        if distance > MAX_COLOUR_DISTANCE:
            continue
        score = float(np.clip(0.9 - distance / 200.0 - best[0] / (10.0 * height), 0.05, 1.0))
        out.append((line, color, score))
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


def in_text_line(layer: Layer, box: tuple[int, int, int, int]) -> bool:
    """Whether BOX (layer coordinates) has same-coloured glyphs of its height right beside it, like a letter."""
    x0, y0, x1, y1 = box
    h = y1 - y0
    reach = max(3, int(0.4 * h))
    strong = layer.view(layer.planes.strong)  # any colour: a glyph's neighbours may fall outside the family
    for xa, xb in ((max(0, x0 - reach), max(0, x0)), (min(layer.width, x1), min(layer.width, x1 + reach))):
        if xb <= xa:
            continue
        rows = np.flatnonzero(strong[y0:y1, xa:xb].any(axis=1))
        if len(rows) and rows[-1] - rows[0] + 1 >= 0.4 * h:
            return True
    return False
