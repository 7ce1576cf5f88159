"""What the detector returns: :class:`Mark`, one mark a person drew on a screenshot, and the array types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

MarkKind = Literal["rectangle", "ellipse", "arrow", "highlight", "text"]
MARK_KINDS: tuple[MarkKind, ...] = ("rectangle", "ellipse", "arrow", "highlight", "text")

Array = npt.NDArray[Any]
"""Any numpy array (shapes and dtypes are given in the docstrings)."""
Mask = npt.NDArray[np.uint8]
"""A binary mask: uint8, 0 or 255, (height, width)."""
RGB = npt.NDArray[np.uint8]
"""An RGB image: uint8, (height, width, 3), C-contiguous."""
Floats = npt.NDArray[np.float64]
BBox = tuple[int, int, int, int]
Point = tuple[int, int]


@dataclass(frozen=True)
class Mark:
    """One mark: its kind, its box, its colour, how sure the detector is, and for arrows where it points.

    ``bbox`` is ``(x0, y0, x1, y1)`` in pixels of the image that was given, the outer bound of the stroke
    (anti-aliased edge included), with ``x1``/``y1`` exclusive, so ``x1 - x0`` is the width. ``color`` is the
    stroke colour as ``#rrggbb`` (for a highlight, the tint it leaves on a light background). ``score`` is in
    [0, 1]. ``tail``/``head`` are ``(x, y)`` pixel points, set for arrows only (``head`` is the tip).
    """

    kind: MarkKind
    bbox: BBox
    color: str
    score: float
    tail: Point | None = None
    head: Point | None = None

    @property
    def width(self) -> int:
        """Width of the box in pixels."""
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> int:
        """Height of the box in pixels."""
        return self.bbox[3] - self.bbox[1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: kind, bbox, color, score (3 decimals), and tail/head for arrows."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "bbox": list(self.bbox),
            "color": self.color,
            "score": round(float(self.score), 3),
        }
        if self.tail is not None and self.head is not None:
            out["tail"] = list(self.tail)
            out["head"] = list(self.head)
        return out


def iou(a: BBox | tuple[float, float, float, float], b: BBox | tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0.0 when either is empty)."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
