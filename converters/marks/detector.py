"""The detector: colour families in, marks out.

For every pen colour family, the pixels that stand out in that colour from their surroundings ("crisp") are
grouped into regions; in each region the family's mask is searched for rectangles (segment pairs), then ellipses
(conic fits), then arrows, text labels and numbered step circles among the pixels those did not explain.
Highlighter bands are searched separately on tints. Overlapping detections of one object (from neighbouring
families, or a box that is also an ellipse, or a letter of a label seen as a label of its own) are reduced to the
best one, and every mark's colour must be a pen's (vivid and bright).
"""

from __future__ import annotations

import math
from os import PathLike

import cv2
import numpy as np
from PIL import Image

from converters.marks.arrows import find_arrows
from converters.marks.colors import CRISP, FAMILIES, ColourPlanes, Family, at_least, hex_color, vivid
from converters.marks.ellipses import find_ellipses
from converters.marks.found import Found
from converters.marks.highlights import find_highlights
from converters.marks.images import MAX_PIXELS, as_rgb, open_image
from converters.marks.labels import Anchor, find_labels, find_steps, in_text_line
from converters.marks.layers import Layer
from converters.marks.model import Array, Mark, Mask, iou
from converters.marks.rectangles import find_rectangles

MIN_CRISP_PIXELS = 40
"""A family with fewer crisp pixels than this holds no mark."""
CELL = 16
"""Side of the grid cells crisp pixels are grouped on."""
MARGIN = 24
"""Pixels around a family's crisp pixels kept in its region."""
SMALL = 48
"""Boxes and ellipses at most this tall are checked for being a letter in a line of text."""


def detect_marks(image: Image.Image | Array, *, min_score: float = 0.0) -> list[Mark]:
    """The marks drawn on IMAGE, top to bottom, left to right.

    Args:
        image: a Pillow image in any mode, or an (h, w), (h, w, 3) RGB or (h, w, 4) RGBA array.
        min_score: drop marks scored below this.

    Returns:
        One :class:`Mark` per detected mark; an empty list for a clean image or one smaller than 8 x 8.

    Raises:
        ImageError: an array of unsupported shape or dtype, or an image mode that cannot be converted.
    """
    rgb = as_rgb(image)
    height, width = rgb.shape[:2]
    if height < 8 or width < 8:
        return []
    planes = ColourPlanes(rgb)
    found: list[Found] = []
    for family in FAMILIES:
        if family.pen:
            for layer in _layers(planes, family):
                found.extend(_detect_in_layer(layer))
    for band in find_highlights(planes):
        found.append(Found("highlight", band.bbox, band.score, band.color, 0.0, band.family))
    marks = [_to_mark(f, width, height) for f in _suppress(found) if f.score >= min_score]
    return sorted(marks, key=lambda m: (m.bbox[1], m.bbox[0], m.kind))


def detect_marks_in_file(path: str | PathLike[str], *, max_pixels: int = MAX_PIXELS) -> list[Mark]:
    """Open the image at PATH (checking it, see :func:`open_image`) and detect its marks.

    Raises:
        ImageError: the file is missing, not an image, truncated, or larger than MAX_PIXELS.
    """
    with open_image(path, max_pixels=max_pixels) as image:
        return detect_marks(image)


_SOFT = {family.name: family.soft_lut() for family in FAMILIES}


def _layers(planes: ColourPlanes, family: Family) -> list[Layer]:
    """FAMILY's evidence in the regions around clusters of its crisp pixels (none when too few to hold a mark).

    Crispness is measured in the family's own colour (chroma weighted by closeness of hue), so a blue arrow on
    a saturated green photo stands out though every pixel around it is saturated too. Crisp pixels more than
    about 3 cells of 16 px apart go to separate regions, so a photo's scattered rims do not make one region of
    the whole image.
    """
    if planes.strong_count(family) < MIN_CRISP_PIXELS:
        return []
    height, width = planes.shape
    in_hue = cv2.LUT(planes.hue, family.lut())
    x, y, w, h = cv2.boundingRect(cv2.bitwise_and(in_hue, planes.strong))
    x0, y0, x1, y1 = max(0, x - MARGIN), max(0, y - MARGIN), min(width, x + w + MARGIN), min(height, y + h + MARGIN)
    roi = (slice(y0, y1), slice(x0, x1))
    strength = cv2.multiply(planes.chroma[roi], cv2.LUT(planes.hue[roi], _SOFT[family.name]), scale=1.0 / 255.0)
    crisp = at_least(cv2.subtract(strength, cv2.blur(strength, (21, 21))), CRISP)
    crisp = cv2.bitwise_and(cv2.bitwise_and(crisp, planes.strong[roi]), in_hue[roi])
    if cv2.countNonZero(crisp) < MIN_CRISP_PIXELS:
        return []
    layers = []
    for cx0, cy0, cx1, cy1 in _clusters(crisp):
        ax0, ay0 = max(x0, x0 + cx0 - MARGIN), max(y0, y0 + cy0 - MARGIN)
        ax1, ay1 = min(x1, x0 + cx1 + MARGIN), min(y1, y0 + cy1 + MARGIN)
        inner = (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
        part = crisp[inner]
        if cv2.countNonZero(part) < MIN_CRISP_PIXELS:
            continue
        mark, _ = planes.family_mask(family, (ax0, ay0, ax1, ay1))
        # a thin stroke over a busy background may fall short of the chroma threshold yet stand out around it
        layers.append(Layer(family, planes, ax0, ay0, cv2.bitwise_or(mark, part), strength[inner], part))
    return layers


def _clusters(crisp: Mask) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) around groups of crisp pixels, on a grid of CELL px cells joined across 2 cells."""
    h, w = crisp.shape
    gh, gw = (h + CELL - 1) // CELL, (w + CELL - 1) // CELL
    padded = np.zeros((gh * CELL, gw * CELL), np.uint8)
    padded[:h, :w] = crisp
    cells = padded.reshape(gh, CELL, gw, CELL).max(axis=(1, 3))
    joined = cv2.dilate(cells, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    return [
        (int(sx) * CELL, int(sy) * CELL, min(w, int(sx + sw) * CELL), min(h, int(sy + sh) * CELL))
        for sx, sy, sw, sh, _ in stats[1:count]
    ]


def _glyph_sized(box: tuple[int, int, int, int]) -> bool:
    """Whether BOX could be a letter or a word: at most SMALL tall and not very much wider than tall."""
    return box[3] - box[1] <= SMALL and box[2] - box[0] <= 6 * (box[3] - box[1])


def _stroke_colour(layer: Layer, paint: Array) -> str:
    """Colour of the mask pixels under PAINT (a layer-sized mask of where the mark's stroke runs)."""
    on = (paint > 0) & (layer.mark > 0)
    return hex_color(layer.view(layer.planes.rgb)[on])


def _detect_in_layer(layer: Layer) -> list[Found]:
    out: list[Found] = []
    anchors: list[Anchor] = []
    ox, oy = layer.x0, layer.y0
    name = layer.family.name
    for box in find_rectangles(layer):
        local = (box.x0, box.y0, box.x1, box.y1)
        if _glyph_sized(local) and in_text_line(layer, local, same_hue=True):
            continue
        paint = np.zeros_like(layer.mark)
        s = round(box.stroke)
        half = s // 2
        cv2.rectangle(paint, (box.x0 + half, box.y0 + half), (box.x1 - 1 - half, box.y1 - 1 - half), 255, s + 4)
        color = _stroke_colour(layer, paint)
        if not vivid(color):
            continue
        layer.used |= paint
        anchors.append(Anchor(local, color))
        out.append(Found("rectangle", (box.x0 + ox, box.y0 + oy, box.x1 + ox, box.y1 + oy), box.score, color,
                         box.stroke, name))  # fmt: skip
    for oval in find_ellipses(layer):
        local = oval.bbox()
        if any(iou(local, a.box) >= 0.5 for a in anchors):
            continue
        e = oval.centre_line
        paint = np.zeros_like(layer.mark)
        cv2.ellipse(paint, (round(e.cx), round(e.cy)), (round(e.a), round(e.b)), math.degrees(e.angle), 0, 360, 255,
                    round(oval.stroke) + 4)  # fmt: skip
        color = _stroke_colour(layer, paint)
        if not vivid(color):
            continue
        layer.used |= paint
        anchors.append(Anchor(local, color))
        out.append(Found("ellipse", (local[0] + ox, local[1] + oy, local[2] + ox, local[3] + oy), oval.score, color,
                         oval.stroke, name))  # fmt: skip
    comps = layer.components(layer.free(thin=False))
    arrows = find_arrows(layer, comps)
    for _, arrow in arrows:
        paint = np.zeros_like(layer.mark)
        tail = (round(arrow.tail[0]), round(arrow.tail[1]))
        head = (round(arrow.head[0]), round(arrow.head[1]))
        cv2.line(paint, tail, head, 255, round(3 * arrow.stroke) + 6)
        color = _stroke_colour(layer, paint)
        if not vivid(color):
            continue
        layer.used |= paint
        anchors.append(Anchor(arrow.bbox, color))
        x0, y0, x1, y1 = arrow.bbox
        out.append(Found("arrow", (x0 + ox, y0 + oy, x1 + ox, y1 + oy), arrow.score, color, arrow.stroke, name,
                         (tail[0] + ox, tail[1] + oy), (head[0] + ox, head[1] + oy)))  # fmt: skip
    if not anchors:
        return out
    labels = find_labels(layer, layer.components(layer.free(thin=True)), anchors)
    for line, color, score in [*labels, *find_steps(layer, comps, anchors, [line for line, _, _ in labels])]:
        out.append(Found("text", (line.x0 + ox, line.y0 + oy, line.x1 + ox, line.y1 + oy), score, color, 0.0, name))
    return out


_SHAPES = frozenset({"rectangle", "ellipse"})


def _suppress(found: list[Found]) -> list[Found]:
    """Keep the best of detections that are one object seen twice (two families, or box and ellipse)."""
    kept: list[Found] = []
    # texts last, the longest first: a piece of a label (found in a neighbouring family) goes inside it
    for f in sorted(found, key=lambda f: (f.kind == "text", -_area(f.bbox) if f.kind == "text" else 0, -f.score)):
        duplicate = False
        for k in kept:
            overlap = iou(f.bbox, k.bbox)
            same = f.kind == k.kind or {f.kind, k.kind} <= _SHAPES
            if (same and overlap >= 0.5) or overlap >= 0.75 or (f.kind == k.kind == "text" and _inside(f.bbox, k.bbox)):
                duplicate = True  # a text inside another mark's box is a letter of a label, not a label
                break
        if not duplicate:
            kept.append(f)
    return kept


def _area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _inside(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether at least 70% of box A lies inside box B."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix > 0 and iy > 0 and area > 0 and ix * iy >= 0.7 * area


def _to_mark(f: Found, width: int, height: int) -> Mark:
    x0, y0, x1, y1 = f.bbox
    bbox = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))

    def clip(p: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if p is None else (min(max(p[0], 0), width - 1), min(max(p[1], 0), height - 1))

    return Mark(f.kind, bbox, f.color, round(f.score, 4), clip(f.tail), clip(f.head))
