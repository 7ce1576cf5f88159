"""Hand-made screenshots for the marks tests: a page, the marks a screenshot tool draws, the distractors.

Everything is drawn in code (no binary fixtures). Marks are drawn at 4x and downsampled, as anti-aliasing
screenshot tools do; ``jpeg`` and ``rescale`` reproduce what happens to an upload.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from converters.marks import Mark
from converters.marks.model import iou

Box = tuple[float, float, float, float]
SS = 4  # supersampling factor for anti-aliased marks

COLORS = {"red": "#ff0000", "blue": "#0000ff", "green": "#00c000", "magenta": "#ff00ff", "orange": "#ff8000"}


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans if installed, else Pillow's built-in scalable font."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path("/usr/share/fonts/truetype/dejavu") / name
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def page(width: int = 720, height: int = 480, lines: int = 12, background: str = "#fafafa") -> Image.Image:
    """A light page with dark grey text lines, like a document or a settings screen."""
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    words = [
        "status",
        "total",
        "amount",
        "invoice",
        "pending",
        "export",
        "report",
        "update",
        "account",
        "billing",
        "user",
        "settings",
    ]
    for i in range(lines):
        text = " ".join(words[(i * 3 + k) % len(words)] for k in range(7))
        draw.text((30, 24 + i * 34), text.capitalize(), font=font(15), fill="#333333")
    return image


def _stamp(
    image: Image.Image,
    color: str,
    box: Box,
    paint: Callable[[ImageDraw.ImageDraw, Callable[..., tuple[float, ...]]], None],
) -> Image.Image:
    """Paint (at 4x, anti-aliased) into a coverage layer over BOX and composite COLOR through it."""
    x0, y0 = max(0, int(box[0]) - 8), max(0, int(box[1]) - 8)
    x1, y1 = min(image.width, int(box[2]) + 8), min(image.height, int(box[3]) + 8)
    layer = Image.new("L", ((x1 - x0) * SS, (y1 - y0) * SS), 0)

    def at(*xy: float) -> tuple[float, ...]:
        return tuple((v - (x0 if k % 2 == 0 else y0)) * SS for k, v in enumerate(xy))

    paint(ImageDraw.Draw(layer), at)
    alpha = layer.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    out = image.copy()
    out.paste(Image.new("RGB", alpha.size, color), (x0, y0), alpha)
    return out


def rectangle(image: Image.Image, box: Box, color: str = "#ff0000", width: int = 3) -> Image.Image:
    """IMAGE with an outlined rectangle whose outer bound is BOX [x0, y0, x1, y1)."""

    def paint(d: ImageDraw.ImageDraw, at: Callable[..., tuple[float, ...]]) -> None:
        d.rectangle(at(box[0], box[1], box[2] - 0.25, box[3] - 0.25), outline=255, width=width * SS)

    return _stamp(image, color, box, paint)


def ellipse(image: Image.Image, box: Box, color: str = "#ff0000", width: int = 3) -> Image.Image:
    """IMAGE with an outlined axis-aligned ellipse whose outer bound is BOX."""

    def paint(d: ImageDraw.ImageDraw, at: Callable[..., tuple[float, ...]]) -> None:
        d.ellipse(at(box[0], box[1], box[2] - 0.25, box[3] - 0.25), outline=255, width=width * SS)

    return _stamp(image, color, box, paint)


def arrow(image: Image.Image, tail: tuple[float, float], head: tuple[float, float], color: str = "#ff0000",
          width: int = 3, style: str = "filled") -> Image.Image:  # fmt: skip
    """IMAGE with an arrow from TAIL to HEAD (the tip), with a filled triangular or an open V head."""
    ux, uy = head[0] - tail[0], head[1] - tail[1]
    n = math.hypot(ux, uy)
    ux, uy = ux / n, uy / n
    length, half = 3.2 * width + 7, 2.2 * width + 5

    def paint(d: ImageDraw.ImageDraw, at: Callable[..., tuple[float, ...]]) -> None:
        bx, by = head[0] - ux * length, head[1] - uy * length
        if style == "filled":
            d.line(at(*tail, bx + ux * 2, by + uy * 2), fill=255, width=width * SS)
            d.polygon([at(*head), at(bx - uy * half, by + ux * half), at(bx + uy * half, by - ux * half)], fill=255)
        else:
            d.line(at(*tail, *head), fill=255, width=width * SS)
            for sign in (-1, 1):
                d.line(at(*head, bx + sign * uy * half, by - sign * ux * half), fill=255, width=width * SS)

    pad = length + half
    box = (min(tail[0], head[0]) - pad, min(tail[1], head[1]) - pad, max(tail[0], head[0]) + pad,
           max(tail[1], head[1]) + pad)  # fmt: skip
    return _stamp(image, color, box, paint)


def label(
    image: Image.Image, xy: tuple[float, float], text: str, color: str = "#ff0000", size: int = 18
) -> tuple[Image.Image, Box]:
    """IMAGE with TEXT written at XY in COLOR (bold), and the text's ink box."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    draw.text(xy, text, font=font(size, bold=True), fill=color)
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font(size, bold=True))
    return out, (x0, y0, x1, y1)


def highlight(image: Image.Image, box: Box, color: str = "#ffff00") -> Image.Image:
    """IMAGE with a highlighter band over BOX, multiplied in the way a highlighter pen does."""
    arr = np.asarray(image, dtype=np.float32).copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    tint = np.asarray(Image.new("RGB", (1, 1), color).getpixel((0, 0)), np.float32) / 255.0
    arr[y0:y1, x0:x1] *= tint
    return Image.fromarray(arr.astype(np.uint8))


def shadow(image: Image.Image, draw: Callable[[Image.Image], Image.Image], offset: int = 4) -> Image.Image:
    """IMAGE with DRAW's mark preceded by a blurred grey drop shadow offset by OFFSET pixels."""
    blank = Image.new("RGB", image.size, "white")
    mask = np.asarray(draw(blank).convert("L"), np.float32) < 250
    shade = Image.fromarray((mask * 120).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    shade = shade.transform(shade.size, Image.Transform.AFFINE, (1, 0, -offset, 0, 1, -offset))
    arr = np.asarray(image, np.float32) * (1 - np.asarray(shade, np.float32)[..., None] / 255.0 * 0.5)
    return draw(Image.fromarray(arr.astype(np.uint8)))


def jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    """IMAGE after a JPEG round trip (4:2:0 chroma subsampling, like most uploads)."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def rescale(image: Image.Image, factor: float) -> Image.Image:
    """IMAGE resized by FACTOR (area averaging when shrinking)."""
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC)


def only(marks: list[Mark], kind: str) -> Mark:
    """The single mark found, which must be of KIND."""
    assert [m.kind for m in marks] == [kind], marks
    return marks[0]


def matches(mark: Mark, box: Box, min_iou: float = 0.85) -> bool:
    """Whether MARK's box overlaps BOX by at least MIN_IOU."""
    return iou(mark.bbox, box) >= min_iou
