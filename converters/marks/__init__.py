"""Detect the marks people draw on screenshots: boxes, ellipses, arrows, highlighter strokes and their labels.

    from converters.marks import detect_marks_in_file, remove_marks

    marks = detect_marks_in_file("bug-report.png")          # [Mark(kind='rectangle', bbox=(...), ...), ...]
    [m.to_dict() for m in marks]                             # the JSON shape of `labelloop marks detect --json`

Classical image processing (numpy + OpenCV), no model: colour families (``colors``), stroke and fill masks per
family (``layers``), straight segments (``strokes``), and one finder per kind (``rectangles``, ``ellipses``,
``arrows``, ``highlights``, ``labels``: text labels and numbered step circles), put together in ``detector``.
``adapter.MarksDetector`` plugs the detector into the exporter (``ExportOptions.mark_detector``).
"""

from __future__ import annotations

from converters.errors import ImageError
from converters.marks.detector import detect_marks, detect_marks_in_file
from converters.marks.drawing import draw_marks
from converters.marks.images import MAX_PIXELS, as_rgb, open_image
from converters.marks.model import MARK_KINDS, Mark, MarkKind
from converters.marks.removal import remove_marks

__all__ = [
    "MARK_KINDS",
    "MAX_PIXELS",
    "ImageError",
    "Mark",
    "MarkKind",
    "as_rgb",
    "detect_marks",
    "detect_marks_in_file",
    "draw_marks",
    "open_image",
    "remove_marks",
]
