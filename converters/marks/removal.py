"""Taking marks off an image (the exporter's optional ``--unmark``): inpaint strokes, un-tint highlights.

A stroke's pixels are those inside its box whose colour is close to the mark's (or anti-aliased between it and
the background); they are grown by two pixels and filled by OpenCV's Telea inpainting from what surrounds
them. A highlighter band is not inpainted (that would erase the text under it): it is divided out, the way a
multiplying pen put it in.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from converters.marks.colors import hex_to_rgb
from converters.marks.images import as_rgb
from converters.marks.model import RGB, Array, Mark

STROKE_DISTANCE = 110.0
"""Pixels within this RGB distance of a mark's colour belong to its stroke."""


def remove_marks(image: Image.Image | Array, marks: Sequence[Mark]) -> Image.Image | Array:
    """IMAGE with MARKS taken off, as the same type (Pillow RGB image, or uint8 RGB array).

    Args:
        image: the image the marks were detected on.
        marks: marks from :func:`~converters.marks.detect_marks` on that image.

    Returns:
        A new image; IMAGE is not modified. With no marks, an unchanged RGB copy.

    Raises:
        ImageError: IMAGE is an array of unsupported shape or dtype.
    """
    rgb = as_rgb(image).copy()
    strokes = np.zeros(rgb.shape[:2], np.uint8)
    for mark in marks:
        if mark.kind == "highlight":
            _untint(rgb, mark)
        else:
            _stroke_pixels(rgb, mark, strokes)
    if strokes.any():
        strokes = cv2.dilate(strokes, np.ones((5, 5), np.uint8))
        rgb = cv2.inpaint(rgb, strokes, 3, cv2.INPAINT_TELEA)
    return Image.fromarray(rgb) if isinstance(image, Image.Image) else rgb


def _stroke_pixels(rgb: RGB, mark: Mark, out: Array) -> None:
    """Set OUT where MARK's stroke is: pixels in its box near its colour."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = mark.bbox
    x0, y0, x1, y1 = max(0, x0 - 2), max(0, y0 - 2), min(width, x1 + 2), min(height, y1 + 2)
    if x1 <= x0 or y1 <= y0:
        return
    roi = rgb[y0:y1, x0:x1].astype(np.float32)
    distance = np.linalg.norm(roi - np.asarray(hex_to_rgb(mark.color), np.float32), axis=2)
    out[y0:y1, x0:x1] |= (distance <= STROKE_DISTANCE).astype(np.uint8) * 255


def _untint(rgb: RGB, mark: Mark) -> None:
    """Divide a highlighter's tint out of its band, in place."""
    x0, y0, x1, y1 = mark.bbox
    band = rgb[y0:y1, x0:x1].astype(np.float32)
    tint = np.maximum(np.asarray(hex_to_rgb(mark.color), np.float32), 1.0)
    restored = np.clip(band * (255.0 / tint), 0, 255)
    dead = tint < 40  # a channel the pen removed entirely (blue under yellow): borrow the others
    if dead.any() and not dead.all():
        restored[..., dead] = restored[..., ~dead].mean(axis=-1, keepdims=True)
    rgb[y0:y1, x0:x1] = (restored + 0.5).astype(np.uint8)
