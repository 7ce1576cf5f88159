"""Highlighter strokes: bands of a light, saturated tint with darker content (text) showing through.

A highlighter multiplies (or blends) its colour into what lies under it: the page turns into the tint and text
stays dark, so the band is the tint with text-shaped holes. Closing the holes gives a filled band of one line's
height. What separates it from a filled widget of the same colour is that something darker shows through it and
nothing white does (a button's white label, a bar with nothing on it). Red and blue tints are not taken for
highlighters: those are error boxes, selections and navigation bars.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.colors import FAMILIES, ColourPlanes, at_least, hex_color
from converters.marks.model import Array

TINT_CHROMA = 40
TINT_VALUE = 110
MIN_HEIGHT, MAX_HEIGHT = 7, 90


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
    _count, _labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    bw, bh, area = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT], stats[:, cv2.CC_STAT_AREA]
    ok = (bh >= MIN_HEIGHT) & (bh <= MAX_HEIGHT) & (bw >= np.maximum(16, 1.2 * bh)) & (area >= 0.8 * bw * bh)
    ok[0] = False
    out: list[Band] = []
    for i in np.flatnonzero(ok):
        bx, by, cw, ch = (int(v) for v in stats[i, :4])
        gx, gy = bx + x0, by + y0
        band = _judge(planes, roi[by : by + ch, bx : bx + cw], (gx, gy, gx + cw, gy + ch))
        if band is not None:
            out.append(band)
    return out


def _judge(planes: ColourPlanes, tinted: Array, box: tuple[int, int, int, int]) -> Band | None:
    """Accept BOX when one highlighter tint covers it, darker content shows through and nothing white does."""
    x0, y0, x1, y1 = box
    value = planes.value[y0:y1, x0:x1]
    chroma = planes.chroma[y0:y1, x0:x1]
    on = tinted > 0
    tint_fraction = float(on.mean())
    if tint_fraction < 0.45:
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
    white = float(((value[rows, cols] >= 225) & (chroma[rows, cols] < 30)).mean()) if core.size else 0.0
    if dark < 0.02 or white > 0.02:
        return None
    score = float(np.clip(0.5 + 0.5 * tint_fraction - 5.0 * white, 0.05, 1.0))
    return Band(box, hex_color(rgb[on]), score, family.name)
