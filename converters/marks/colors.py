"""Colour evidence: which pixels could belong to a mark of which colour family, and a mark's colour.

Marks are drawn with saturated pens (red, orange, yellow, green, cyan, blue, magenta). A pixel is *strong*
evidence for a family when its chroma (max - min of R, G, B) and brightness are high and its hue lies in the
family's window; anti-aliased and JPEG-blurred edge pixels are *weak* evidence and join the mask only next to
strong pixels (a one-pixel hysteresis), so pale fills such as pink error boxes never leak in. Windows overlap,
so a pen whose hue sits on a boundary is complete in at least one family; the detector drops the duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from converters.marks.model import RGB, Array, Mask

STRONG_CHROMA = 70
"""Chroma (0-255) from which a pixel is strong evidence: a 2 px red line after JPEG q75 keeps ~100."""
WEAK_CHROMA = 36
"""Chroma from which a pixel next to strong evidence joins the mask (anti-aliased edges)."""
CRISP = 60
"""How much stronger in chroma than its 21 x 21 neighbourhood's mean a stroke pixel is."""
PEN_CHROMA = 100
"""Least chroma of a mark's core colour."""
PEN_SATURATION = 0.55
"""Least saturation (chroma / value) of a mark's core colour."""
PEN_VALUE = 150
"""Least brightness (max of R, G, B) of a mark's core colour: pens are bright, shadowed object rims are not."""
MIN_VALUE = 90
"""Strong pixels are at least this bright (max of R, G, B): marks are drawn with bright pens."""


@dataclass(frozen=True)
class Family:
    """A colour family: a window of OpenCV hue (degrees / 2, 0-179), wrapping through 0 when lo > hi."""

    name: str
    hue_lo: int
    hue_hi: int
    pen: bool
    """Marks are drawn in this family (yellow and cyan lines hardly show on a light page: only highlighters)."""
    highlighter: bool
    """Highlighter pens come in this family (red and blue do not: those tints are error boxes and selections)."""

    def hues(self) -> Array:
        """The hues (0-179) in the window."""
        if self.hue_lo <= self.hue_hi:
            return np.arange(self.hue_lo, self.hue_hi + 1)
        return np.concatenate([np.arange(self.hue_lo, 180), np.arange(0, self.hue_hi + 1)])

    def soft_lut(self, taper: int = 12) -> Array:
        """A 256-entry weight table: 255 inside the window, falling linearly to 0 over TAPER hues outside it.

        Weighting chroma with it gives a strength with no step at the window's edge, so a smooth photo gradient
        that crosses the edge does not look like a crisp stroke.
        """
        table = np.zeros(256, np.uint8)
        centre = self.hues()
        for hue in range(180):
            distance = int(np.min(np.minimum(np.abs(centre - hue), 180 - np.abs(centre - hue))))
            table[hue] = round(255 * max(0.0, 1.0 - distance / taper))
        return table

    def lut(self) -> Array:
        """A 256-entry lookup table mapping a hue to 255 inside the window and 0 outside."""
        table = np.zeros(256, np.uint8)
        table[self.hues()] = 255
        return table


FAMILIES: tuple[Family, ...] = (
    Family("red", 168, 12, pen=True, highlighter=False),
    Family("orange", 7, 24, pen=True, highlighter=True),
    Family("yellow", 19, 38, pen=False, highlighter=True),
    Family("green", 33, 90, pen=True, highlighter=True),
    Family("cyan", 80, 102, pen=False, highlighter=True),
    Family("blue", 94, 136, pen=True, highlighter=False),
    Family("magenta", 128, 174, pen=True, highlighter=True),
)


def at_least(plane: Array, threshold: int) -> Mask:
    """255 where the uint8 PLANE is >= THRESHOLD, else 0 (cv2.threshold: much faster than cv2.compare)."""
    out: Mask = cv2.threshold(plane, threshold - 1, 255, cv2.THRESH_BINARY)[1]
    return out


def below(plane: Array, threshold: int) -> Mask:
    """255 where the uint8 PLANE is < THRESHOLD, else 0."""
    out: Mask = cv2.threshold(plane, threshold - 1, 255, cv2.THRESH_BINARY_INV)[1]
    return out


class ColourPlanes:
    """Hue, chroma and value of an RGB image, computed once and shared by every family."""

    def __init__(self, rgb: RGB) -> None:
        self.rgb = rgb
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        self.hue, saturation, self.value = cv2.split(hsv)
        self.chroma: Array = cv2.multiply(saturation, self.value, scale=1.0 / 255.0)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.hue.shape[0]), int(self.hue.shape[1])

    @cached_property
    def strong(self) -> Mask:
        """Pixels saturated and bright enough to be strong evidence for some family."""
        out: Mask = cv2.bitwise_and(at_least(self.chroma, STRONG_CHROMA), at_least(self.value, MIN_VALUE))
        return out

    @cached_property
    def weak(self) -> Mask:
        """Pixels saturated enough to extend strong evidence next to them."""
        return at_least(self.chroma, WEAK_CHROMA)

    @cached_property
    def strong_hue_histogram(self) -> Array:
        """How many strong pixels have each hue (180 bins)."""
        hist: Array = cv2.calcHist([self.hue], [0], self.strong, [180], [0, 180]).ravel()
        return hist

    def strong_count(self, family: Family) -> int:
        """How many strong pixels fall in FAMILY's hue window."""
        return int(self.strong_hue_histogram[family.hues()].sum())

    def family_mask(self, family: Family, roi: tuple[int, int, int, int] | None = None) -> tuple[Mask, Array]:
        """FAMILY's mark pixels (strong, plus weak next to strong) within ROI ``(x0, y0, x1, y1)``.

        Returns the mask and the family's *strength* there: the chroma of pixels in the hue window, else 0.
        """
        x0, y0, x1, y1 = roi if roi is not None else (0, 0, self.shape[1], self.shape[0])
        in_hue = cv2.LUT(self.hue[y0:y1, x0:x1], family.lut())
        strong = cv2.bitwise_and(in_hue, self.strong[y0:y1, x0:x1])
        weak = cv2.bitwise_and(in_hue, self.weak[y0:y1, x0:x1])
        grown = cv2.dilate(strong, np.ones((3, 3), np.uint8))
        strength = cv2.bitwise_and(self.chroma[y0:y1, x0:x1], in_hue)
        return cv2.bitwise_or(strong, cv2.bitwise_and(weak, grown)), strength


def hex_color(pixels: Array) -> str:
    """The pen colour of a stroke from its pixels ((n, 3) uint8 RGB) as ``#rrggbb``.

    The most saturated tenth of the pixels (at least a few) is the stroke's core (edges are blended with the
    background, and a thin stroke after JPEG has little core left); its per-channel median is the colour. An
    empty set gives ``#000000``.
    """
    if len(pixels) == 0:
        return "#000000"
    px = pixels.reshape(-1, 3).astype(np.int16)
    chroma = px.max(axis=1) - px.min(axis=1)
    if len(px) > 8:
        core = px[chroma >= np.percentile(chroma, 90 if len(px) >= 60 else 75)]
        px = core if len(core) else px
    r, g, b = (int(v) for v in np.median(px, axis=0).round())
    return f"#{r:02x}{g:02x}{b:02x}"


def vivid(color: str) -> bool:
    """Whether COLOR could be a pen's: saturated and bright (see PEN_CHROMA, PEN_SATURATION, PEN_VALUE).

    Screenshot tools draw with vivid colours; a muted chart palette, a photo's tones are not marks.
    """
    r, g, b = hex_to_rgb(color)
    top, low = max(r, g, b), min(r, g, b)
    return top - low >= PEN_CHROMA and (top - low) >= PEN_SATURATION * top and top >= PEN_VALUE


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)
