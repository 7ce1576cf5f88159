"""Highlighter strokes: bands of a light, saturated tint with darker content (text) showing through.

A highlighter multiplies (or blends) its colour into what lies under it: the page turns into the tint and text
stays dark, so the band is the tint with text-shaped holes. Closing the holes gives a filled band of one line's
height. What separates it from a filled widget of the same colour is that text shows through it (darker than
the tint on a light page; on a dark page, light text blended with the tint) and nothing white does (a button's
white label, a bar with nothing on it). Red and blue tints are not taken for highlighters: those are error
boxes, selections and navigation bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.colors import FAMILIES, ColourPlanes, at_least, hex_color
from converters.marks.model import Array

TINT_CHROMA = 36
"""Least chroma of a tint: a pink highlighter at 30% opacity on white keeps about 38."""
TINT_VALUE = 100
"""Least brightness of a tint: yellow at 40% opacity over a #202124 dark page is about 120."""
MIN_HEIGHT, MAX_HEIGHT = 7, 90
CUT_SHARE = 0.7
"""Least share of a larger tinted shape a band cut out of it must have."""
CUT_TINT = 0.75
"""Least tinted fraction of a band cut out of a larger tinted shape (a band on its own needs 0.45)."""


@dataclass(frozen=True)
class Band:
    """A highlighter band in image coordinates."""

    bbox: tuple[int, int, int, int]
    color: str
    score: float
    family: str


def find_highlights(planes: ColourPlanes) -> list[Band]:
    """Highlighter bands in any highlighter colour family."""
    lut = np.zeros(256, np.uint8)
    for family in FAMILIES:
        if family.highlighter:
            lut[family.hues()] = 255
    tint = cv2.bitwise_and(at_least(planes.chroma, TINT_CHROMA), at_least(planes.value, TINT_VALUE))
    tint = cv2.bitwise_and(tint, cv2.LUT(planes.hue, lut))
    x, y, w, h = cv2.boundingRect(tint)
    if w < 16 or h < MIN_HEIGHT:
        return []
    x0, y0 = max(0, x - 4), max(0, y - 4)
    x1, y1 = min(tint.shape[1], x + w + 4), min(tint.shape[0], y + h + 4)
    roi = tint[y0:y1, x0:x1]
    closed = cv2.morphologyEx(roi, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    boxes = [(int(v[0]), int(v[1]), int(v[2]), int(v[3]), 0.45) for v in stats[1:] if _band_shaped(v)]
    # tinted content touching a band (text of the tint's hue running on past the band's end, a link of a nearby
    # hue just above it) is thin: opening by a band-high block strips it, and the band is most of what remains
    loose = (stats[:, cv2.CC_STAT_HEIGHT] >= MIN_HEIGHT) & (stats[:, cv2.CC_STAT_WIDTH] >= 16)
    loose &= stats[:, cv2.CC_STAT_AREA] >= 16 * MIN_HEIGHT / CUT_SHARE  # room for a band that is most of it
    loose[0] = False
    for i in np.flatnonzero(loose):
        if _band_shaped(stats[i]):
            continue
        sx, sy, sw, sh, sa = (int(v) for v in stats[i])
        part = (labels[sy : sy + sh, sx : sx + sw] == i).view(np.uint8)
        opened = cv2.morphologyEx(part, cv2.MORPH_OPEN, np.ones((MIN_HEIGHT, 9), np.uint8))
        n, _, sub, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        if n > 1:
            k = 1 + int(np.argmax(sub[1:, cv2.CC_STAT_AREA]))
            if sub[k, cv2.CC_STAT_AREA] >= CUT_SHARE * sa and _band_shaped(sub[k]):
                # cut out of a larger shape, it must be tinted all over: a line of coloured text (code, links)
                # closes into a band too, with the page showing between its glyphs
                boxes.append((sx + int(sub[k, 0]), sy + int(sub[k, 1]), int(sub[k, 2]), int(sub[k, 3]), CUT_TINT))
    out: list[Band] = []
    for bx, by, cw, ch, least in boxes:
        gx, gy = bx + x0, by + y0
        band = _judge(planes, roi[by : by + ch, bx : bx + cw], (gx, gy, gx + cw, gy + ch), least)
        if band is not None:
            out.append(band)
    return out


def _band_shaped(stat: Array) -> bool:
    """Whether a component (an OpenCV stats row) is a filled band of one line's height."""
    bw, bh, area = int(stat[cv2.CC_STAT_WIDTH]), int(stat[cv2.CC_STAT_HEIGHT]), int(stat[cv2.CC_STAT_AREA])
    return MIN_HEIGHT <= bh <= MAX_HEIGHT and bw >= max(16, 1.2 * bh) and area >= 0.8 * bw * bh


def _judge(planes: ColourPlanes, tinted: Array, box: tuple[int, int, int, int], least: float) -> Band | None:
    """Accept BOX when one highlighter tint covers at least LEAST of it, darker content shows through and
    nothing white does."""
    x0, y0, x1, y1 = box
    value = planes.value[y0:y1, x0:x1]
    chroma = planes.chroma[y0:y1, x0:x1]
    on = tinted > 0
    tint_fraction = float(on.mean())
    if tint_fraction < least:
        return None
    hue = int(np.median(planes.hue[y0:y1, x0:x1][on]))
    family = next((f for f in FAMILIES if f.highlighter and hue in f.hues()), None)
    if family is None:
        return None
    rgb = planes.rgb[y0:y1, x0:x1]
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # red text under a tint is dark in luminance, not in value
    tint_luma = float(np.median(luma[on]))
    h, w = on.shape
    rows = slice(h // 4, h - h // 4)
    cols = slice(min(h // 2, w // 4), w - min(h // 2, w // 4))  # away from the (maybe rounded) ends
    core = luma[rows, cols]
    dark = float((core < tint_luma - 60).mean()) if core.size else 0.0
    # On a dark page the text is light and, under a translucent pen, tinted as much as the page around it (the
    # pen adds the same colour to both): lighter than the band and at least about as coloured. A button's
    # label is white; JPEG bleeds some of the button's colour into it, not as much.
    light = 0.0
    if core.size and _page_luma(planes, box) < tint_luma - 40:
        lighter = core > tint_luma + 50
        if int(lighter.sum()) >= 0.02 * core.size:
            band_chroma = float(np.median(chroma[on]))
            if float(np.median(chroma[rows, cols][lighter])) >= 0.8 * band_chroma:
                light = float(lighter.mean())
    white = float(((value[rows, cols] >= 225) & (chroma[rows, cols] < 30)).mean()) if core.size else 0.0
    if max(dark, light) < 0.02 or white > 0.02:
        return None
    score = float(np.clip(0.5 + 0.5 * tint_fraction - 5.0 * white, 0.05, 1.0))
    return Band(box, hex_color(rgb[on]), score, family.name)


def _page_luma(planes: ColourPlanes, box: tuple[int, int, int, int]) -> float:
    """Median brightness (max of R, G, B) of a 6 px ring around BOX: the page the band lies on."""
    x0, y0, x1, y1 = box
    ring = [
        planes.value[max(0, y0 - 6) : y0, max(0, x0 - 6) : x1 + 6].ravel(),
        planes.value[y1 : y1 + 6, max(0, x0 - 6) : x1 + 6].ravel(),
        planes.value[y0:y1, max(0, x0 - 6) : x0].ravel(),
        planes.value[y0:y1, x1 : x1 + 6].ravel(),
    ]
    values = np.concatenate(ring)
    return float(np.median(values)) if values.size else 255.0
