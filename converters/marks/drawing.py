"""Drawing detected marks over an image, for ``labelloop marks detect --draw`` and for eyeballing results."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from converters.marks.images import as_rgb
from converters.marks.model import Array, Mark

OUTLINE = {"rectangle": "#00e5ff", "ellipse": "#00e676", "arrow": "#ffea00", "highlight": "#ff9100", "text": "#d500f9"}


def draw_marks(image: Image.Image | Array, marks: Sequence[Mark]) -> Image.Image:
    """An RGB copy of IMAGE with each mark's box outlined and labelled with its kind and score.

    Arrows also get a line from tail to head and a dot on the head.

    Raises:
        ImageError: IMAGE is an array of unsupported shape or dtype.
    """
    out = Image.fromarray(as_rgb(image))
    draw = ImageDraw.Draw(out)
    for mark in marks:
        color = OUTLINE[mark.kind]
        x0, y0, x1, y1 = mark.bbox
        draw.rectangle((x0 - 2, y0 - 2, x1 + 1, y1 + 1), outline="black", width=1)
        draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=color, width=1)
        if mark.tail is not None and mark.head is not None:
            draw.line((*mark.tail, *mark.head), fill=color, width=1)
            hx, hy = mark.head
            draw.ellipse((hx - 3, hy - 3, hx + 3, hy + 3), outline="black", fill=color)
        caption = f"{mark.kind} {mark.score:.2f}"
        ty = y0 - 12 if y0 >= 12 else y1 + 2
        box = draw.textbbox((x0, ty), caption)
        draw.rectangle(box, fill="black")
        draw.text((x0, ty), caption, fill=color)
    return out
