"""The marks API the exporter and the backend build on: Mark, its JSON shape, removing and drawing marks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from marks_conftest_helpers import arrow, highlight, page, rectangle
from PIL import Image

from converters.marks import Mark, detect_marks
from converters.marks.drawing import draw_marks
from converters.marks.removal import remove_marks


def test_a_mark_is_frozen_and_its_dict_is_the_json_shape() -> None:
    box = Mark("rectangle", (10, 20, 110, 70), "#ff0000", 0.96789)
    assert box.to_dict() == {"kind": "rectangle", "bbox": [10, 20, 110, 70], "color": "#ff0000", "score": 0.968}
    assert (box.width, box.height) == (100, 50)
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.score = 0.5  # type: ignore[misc]
    tip = Mark("arrow", (0, 0, 50, 40), "#0000ff", 1.0, tail=(48, 38), head=(2, 3))
    assert tip.to_dict()["tail"] == [48, 38] and tip.to_dict()["head"] == [2, 3]


def test_detected_boxes_are_inside_the_image_and_sorted_top_to_bottom() -> None:
    image = arrow(rectangle(page(), (-30, 300, 200, 460)), (600, 200), (420, 60))
    marks = detect_marks(image)
    assert [m.kind for m in marks] == ["arrow", "rectangle"]
    for m in marks:
        x0, y0, x1, y1 = m.bbox
        assert 0 <= x0 < x1 <= 720 and 0 <= y0 < y1 <= 480
        assert all(isinstance(v, int) for v in m.bbox)


def test_removing_marks_leaves_the_page_without_them() -> None:
    clean = page()
    image = highlight(arrow(rectangle(clean, (100, 60, 400, 170)), (600, 420), (420, 260)), (26, 260, 330, 286))
    marks = detect_marks(image)
    assert len(marks) == 3
    removed = remove_marks(image, marks)
    assert isinstance(removed, Image.Image) and removed.size == image.size
    assert detect_marks(removed) == []
    before = np.abs(np.asarray(image, np.int16) - np.asarray(clean, np.int16)).mean()
    after = np.abs(np.asarray(removed, np.int16) - np.asarray(clean, np.int16)).mean()
    assert after < 0.25 * before
    assert np.array_equal(np.asarray(image), np.asarray(highlight(arrow(rectangle(clean, (100, 60, 400, 170)),
                                                                        (600, 420), (420, 260)), (26, 260, 330, 286))))  # fmt: skip


def test_removing_from_an_array_returns_an_array_and_nothing_to_remove_changes_nothing() -> None:
    rgb = np.asarray(page())
    out = remove_marks(rgb, [])
    assert isinstance(out, np.ndarray) and np.array_equal(out, rgb) and out is not rgb


def test_drawing_outlines_each_mark() -> None:
    image = rectangle(page(), (100, 60, 400, 170))
    marks = detect_marks(image)
    drawn = draw_marks(image, marks)
    assert drawn.size == image.size and drawn.mode == "RGB"
    assert drawn.getpixel((99, 120)) != image.getpixel((99, 120))
    assert draw_marks(image, []).tobytes() == image.tobytes()
