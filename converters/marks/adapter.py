"""The marks detector as the exporter's ``MarkDetector`` (``converters.export``): boxes with what they mark.

    from converters.export import ExportOptions
    from converters.marks.adapter import MarksDetector

    options = ExportOptions(mark_detector=MarksDetector(), unmark=True)

:class:`MarksDetector` is a small frozen dataclass, so it pickles into the exporter's worker processes. Called on
an image it returns :class:`DetectedMark` s: each is a :class:`~converters.boxes.Box` (so the exporter's
``marks`` grounding rows use it unchanged) that also carries the mark's kind, colour and score, its label's text
when a ``reader`` can read it, and :attr:`DetectedMark.target`, the region the mark points out (what the
annotation text is about). Its :meth:`MarksDetector.remove` inpaints the marks for ``--unmark``.

Text labels (kind ``text``) are attached to the nearest other mark of their colour and are not targets
themselves. Nothing here reads text unless given a ``reader`` (an OCR callable): labelloop ships no OCR, so by
default a label's text is unknown and the exporter falls back to the annotation text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from PIL import Image

from converters.boxes import Box
from converters.marks.colors import hex_to_rgb
from converters.marks.detector import detect_marks
from converters.marks.model import MARK_KINDS, Mark, MarkKind
from converters.marks.removal import remove_marks

LabelReader = Callable[[Image.Image], str | None]
"""Reads the text of a label from its crop (an OCR); returns None or "" when it cannot."""


@dataclass(frozen=True, slots=True)
class DetectedMark(Box):
    """A detected mark's outer box in pixels (``x0, y0, x1, y1``), plus what the exporter needs to know about it.

    Attributes:
        kind: rectangle, ellipse, arrow, highlight or text.
        color: the stroke colour, ``#rrggbb``.
        score: the detector's confidence in [0, 1].
        label: the text of the label written beside the mark, when it was read (see ``MarksDetector.reader``).
        tail: an arrow's tail point, else None.
        head: an arrow's tip, else None.
    """

    kind: MarkKind = "rectangle"
    color: str = "#ff0000"
    score: float = 1.0
    label: str | None = None
    tail: tuple[float, float] | None = None
    head: tuple[float, float] | None = None

    @property
    def target(self) -> Box | None:
        """The region this mark points out: the box itself for boxes, ellipses and highlights; a square around
        an arrow's tip reaching a little past it; None for a text label (it names another mark's target)."""
        if self.kind == "text":
            return None
        if self.kind != "arrow" or self.head is None or self.tail is None:
            return Box(self.x0, self.y0, self.x1, self.y1)
        (tx, ty), (hx, hy) = self.tail, self.head
        length = math.hypot(hx - tx, hy - ty) or 1.0
        side = min(max(0.35 * length, 24.0), 160.0)
        cx, cy = hx + (hx - tx) / length * side / 4, hy + (hy - ty) / length * side / 4
        return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)

    def scaled(self, sx: float, sy: float) -> DetectedMark:
        """The same mark in an image resized by ``sx``, ``sy``."""

        def point(p: tuple[float, float] | None) -> tuple[float, float] | None:
            return None if p is None else (p[0] * sx, p[1] * sy)

        return replace(
            self, x0=self.x0 * sx, y0=self.y0 * sy, x1=self.x1 * sx, y1=self.y1 * sy, tail=point(self.tail),
            head=point(self.head),
        )  # fmt: skip

    def to_mark(self) -> Mark:
        """The public :class:`~converters.marks.Mark` (integer pixels)."""

        def point(p: tuple[float, float] | None) -> tuple[int, int] | None:
            return None if p is None else (round(p[0]), round(p[1]))

        bbox = (math.floor(self.x0), math.floor(self.y0), math.ceil(self.x1), math.ceil(self.y1))
        return Mark(self.kind, bbox, self.color, self.score, point(self.tail), point(self.head))

    @classmethod
    def from_mark(cls, mark: Mark, label: str | None = None) -> DetectedMark:
        """A :class:`~converters.marks.Mark` as a DetectedMark."""
        x0, y0, x1, y1 = (float(v) for v in mark.bbox)
        tail = None if mark.tail is None else (float(mark.tail[0]), float(mark.tail[1]))
        head = None if mark.head is None else (float(mark.head[0]), float(mark.head[1]))
        return cls(x0, y0, x1, y1, mark.kind, mark.color, float(mark.score), label, tail, head)


@dataclass(frozen=True)
class MarksDetector:
    """The exporter's mark detector: ``detector(image)`` -> :class:`DetectedMark` s, ``detector.remove(...)``.

    Attributes:
        min_score: marks scored below this are left out.
        kinds: the kinds kept.
        reader: reads a label's text from its crop (an OCR callable, picklable); None: labels are not read.
    """

    min_score: float = 0.0
    kinds: tuple[MarkKind, ...] = MARK_KINDS
    reader: LabelReader | None = field(default=None, compare=False)

    def __call__(self, image: Image.Image) -> list[DetectedMark]:
        """The marks on IMAGE (pixels of IMAGE), top to bottom; labels' text attached to the mark they name."""
        marks = [m for m in detect_marks(image, min_score=self.min_score) if m.kind in self.kinds]
        labels: dict[int, str] = {}
        if self.reader is not None:
            for index, mark in enumerate(marks):
                if mark.kind != "text":
                    continue
                owner = _owner(mark, marks)
                text = (self.reader(image.crop(mark.bbox)) or "").strip()
                if owner is not None and text and owner not in labels:
                    labels[owner] = text
                if text:
                    labels.setdefault(index, text)
        return [DetectedMark.from_mark(mark, labels.get(i)) for i, mark in enumerate(marks)]

    def remove(self, image: Image.Image, marks: Sequence[Box]) -> Image.Image:
        """IMAGE with MARKS (DetectedMarks in pixels of IMAGE) inpainted away; other boxes are ignored."""
        found = [m.to_mark() for m in marks if isinstance(m, DetectedMark)]
        out = remove_marks(image, found)
        assert isinstance(out, Image.Image)
        return out


def _owner(label: Mark, marks: Sequence[Mark]) -> int | None:
    """Index of the non-text mark nearest to LABEL, of a similar colour, within a few text heights."""
    best: tuple[float, int] | None = None
    height = max(1, label.height)
    lx0, ly0, lx1, ly1 = label.bbox
    for index, mark in enumerate(marks):
        if mark.kind == "text":
            continue
        x0, y0, x1, y1 = mark.bbox
        gap = math.hypot(max(0, max(x0, lx0) - min(x1, lx1)), max(0, max(y0, ly0) - min(y1, ly1)))
        distance = math.dist(hex_to_rgb(mark.color), hex_to_rgb(label.color))
        if gap <= 3 * height + 8 and distance <= 90 and (best is None or gap < best[0]):
            best = (gap, index)
    return None if best is None else best[1]
