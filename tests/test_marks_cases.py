"""The marks detector on the cases that used to fail: same-coloured merges, labels, boxes cut at an image corner,
thin strokes shrunk, highlighters on dark pages, numbered step circles, and the look-alikes that must stay out."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from marks_conftest_helpers import arrow, ellipse, font, jpeg, label, matches, only, page, rectangle, rescale
from PIL import Image, ImageDraw

from converters.marks import Mark, detect_marks
from converters.marks.detector import _suppress
from converters.marks.found import Found
from converters.marks.model import iou


def kinds(marks: list[Mark]) -> list[str]:
    return sorted(m.kind for m in marks)


def dark_page(width: int = 720, height: int = 480) -> Image.Image:
    """A dark-mode page: light grey text on #202124."""
    image = Image.new("RGB", (width, height), "#202124")
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.text((30, 24 + i * 34), "Status total amount invoice pending export", font=font(15), fill="#e8eaed")
    return image


def translucent(image: Image.Image, box: tuple[int, int, int, int], color: str, opacity: float) -> Image.Image:
    """IMAGE with a semi-transparent filled box (a highlighter box of a snipping tool)."""
    arr = np.asarray(image, np.float32).copy()
    x0, y0, x1, y1 = box
    pen = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], np.float32)
    arr[y0:y1, x0:x1] = arr[y0:y1, x0:x1] * (1 - opacity) + pen * opacity
    return Image.fromarray(arr.round().astype(np.uint8))


# ------------------------------------------------------------------------------------------------ same colour


def red_line_chart(width: int = 720, height: int = 480) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    xs = np.linspace(30, width - 30, 40)
    ys = height / 2 + 120 * np.sin(xs / 90)
    ImageDraw.Draw(image).line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill="#d62728", width=3)
    return image


def test_a_box_and_an_ellipse_crossed_by_a_red_series_are_both_found() -> None:
    image = rectangle(red_line_chart(), (60, 150, 250, 330), width=4)
    image = ellipse(image, (420, 120, 660, 360), width=4)
    marks = detect_marks(jpeg(image, 85))
    assert kinds(marks) == ["ellipse", "rectangle"]
    assert matches(next(m for m in marks if m.kind == "rectangle"), (60, 150, 250, 330))
    assert matches(next(m for m in marks if m.kind == "ellipse"), (420, 120, 660, 360))


@pytest.mark.parametrize("x", [340, 352])
def test_a_label_crossed_by_a_red_rule_is_found_whole(x: int) -> None:
    image = Image.new("RGB", (720, 480), "white")
    ImageDraw.Draw(image).line((x, 100, x, 260), fill="#d62728", width=2)  # a chart's red marker line
    image = ellipse(image, (420, 120, 660, 360), width=3)
    image, ink = label(image, (296, 170), "Click here", size=20)  # the rule runs through one of its letters
    marks = detect_marks(image)
    assert kinds(marks) == ["ellipse", "text"]
    assert matches(next(m for m in marks if m.kind == "text"), ink, 0.9)


# ------------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("quality", [None, 80])
def test_a_thin_label_keeps_its_colour_through_jpeg_chroma_subsampling(quality: int | None) -> None:
    image = rectangle(page(), (120, 200, 360, 300), "#ff3b30", width=5)
    image, ink = label(image, (375, 235), "Fix this", color="#ff3b30", size=16)
    marks = detect_marks(jpeg(image, quality) if quality else image)
    assert kinds(marks) == ["rectangle", "text"]
    assert matches(next(m for m in marks if m.kind == "text"), ink, 0.6)


def test_red_badges_and_a_long_red_line_of_text_beside_a_box_are_no_labels() -> None:
    image = page()
    draw = ImageDraw.Draw(image)
    for k, number in enumerate(("42", "33", "7")):  # notification pills with white numbers
        x = 420 + k * 90
        draw.rounded_rectangle((x, 60, x + 30, 81), radius=10, fill="#dc3545")
        draw.text((x + 15, 70), number, font=font(12, bold=True), fill="white", anchor="mm")
    draw.text((40, 300), "Jumps cancel brown approved pending search results", font=font(16, True), fill="#ff3b30")
    image = rectangle(image, (300, 40, 400, 100), width=3)
    image = rectangle(image, (40, 330, 300, 400), "#ff3b30", width=3)
    assert kinds(detect_marks(jpeg(image, 90))) == ["rectangle", "rectangle"]


def test_a_numbered_step_circle_beside_a_box_is_a_text_mark() -> None:
    arr = np.asarray(rectangle(page(), (200, 150, 420, 260), width=3)).copy()
    cv2.circle(arr, (183, 163), 13, (255, 0, 0), -1, cv2.LINE_AA)
    cv2.putText(arr, "2", (178, 169), cv2.FONT_HERSHEY_SIMPLEX, 13 / 22, (255, 255, 255), 2, cv2.LINE_AA)
    marks = detect_marks(jpeg(Image.fromarray(arr), 90))
    assert kinds(marks) == ["rectangle", "text"]
    assert iou(next(m for m in marks if m.kind == "text").bbox, (170, 150, 197, 177)) >= 0.6


def test_the_round_letters_of_a_bold_label_are_no_step_circles() -> None:
    image = rectangle(page(), (100, 200, 400, 300), "#ff8000", width=5)
    image, ink = label(image, (120, 150), "Too slow", color="#ff8000", size=28)
    marks = detect_marks(image)
    assert kinds(marks) == ["rectangle", "text"]
    assert matches(next(m for m in marks if m.kind == "text"), ink, 0.7)


# ------------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_a_box_cut_by_two_borders_at_a_corner_is_found_as_the_l_that_shows(corner: str) -> None:
    boxes = {"top-left": (-60, -40, 200, 150), "top-right": (560, -30, 800, 140),
             "bottom-left": (-50, 380, 180, 560), "bottom-right": (600, 400, 800, 560)}  # fmt: skip
    x0, y0, x1, y1 = boxes[corner]
    mark = only(detect_marks(jpeg(rectangle(page(), boxes[corner], width=4), 85)), "rectangle")
    assert matches(mark, (max(0, x0), max(0, y0), min(720, x1), min(480, y1)), 0.9)


def test_an_l_shaped_red_frame_at_a_corner_with_nothing_drawn_is_no_mark() -> None:
    image = page()
    ImageDraw.Draw(image).rectangle((0, 0, 719, 40), fill="#dc3545")  # a red title bar along the top edge
    assert detect_marks(image) == []


@pytest.mark.parametrize("encode", ["png", "jpeg"])
def test_three_pixel_strokes_shrunk_to_60_percent_are_found(encode: str) -> None:
    image = rectangle(page(), (60, 80, 330, 200), width=3)
    image = ellipse(image, (400, 220, 650, 400), "#0000ff", width=3)
    image = arrow(image, (600, 60), (420, 150), "#00c000", width=3)
    small = rescale(image, 0.6)
    marks = detect_marks(jpeg(small, 85) if encode == "jpeg" else small)
    assert kinds(marks) == ["arrow", "ellipse", "rectangle"]
    box = next(m for m in marks if m.kind == "rectangle")
    assert matches(box, tuple(v * 0.6 for v in (60, 80, 330, 200)), 0.8)
    tip = next(m for m in marks if m.kind == "arrow").head
    assert tip is not None and math.dist(tip, (420 * 0.6, 150 * 0.6)) <= 4


# ------------------------------------------------------------------------------------------------ highlighters


@pytest.mark.parametrize("color", ["#fff200", "#76ff03", "#18ffff", "#ff80ab"])
def test_a_translucent_highlighter_on_a_dark_page_is_found(color: str) -> None:
    box = (26, 90, 330, 116)
    mark = only(detect_marks(jpeg(translucent(dark_page(), box, color, 0.45), 85)), "highlight")
    assert matches(mark, box, 0.8)


def test_a_translucent_pink_highlighter_on_a_light_page_is_found() -> None:
    box = (26, 90, 330, 116)
    assert matches(only(detect_marks(translucent(page(), box, "#ff80ab", 0.35)), "highlight"), box, 0.8)


def test_green_buttons_with_white_labels_on_a_dark_page_are_no_highlights() -> None:
    image = dark_page()
    draw = ImageDraw.Draw(image)
    for k, word in enumerate(("Update", "Report", "Customer")):
        x = 40 + k * 150
        draw.rounded_rectangle((x, 420, x + 120, 456), radius=6, fill=(25, 135, 84))
        draw.text((x + 60, 438), word, font=font(16), fill="white", anchor="mm")
    assert detect_marks(jpeg(image, 79)) == []


# ------------------------------------------------------------------------------------------------ look-alikes


def test_a_chart_line_with_round_markers_has_no_arrows() -> None:
    arr = np.full((480, 720, 3), 255, np.uint8)
    rng = np.random.default_rng(4)
    xs = np.linspace(40, 680, 14)
    ys = 240 + np.cumsum(rng.normal(0, 25, 14))
    points = np.stack([xs, ys], 1).astype(np.int32)
    cv2.polylines(arr, [points], False, (230, 30, 40), 2, cv2.LINE_AA)
    for x, y in points:
        cv2.circle(arr, (int(x), int(y)), 5, (230, 30, 40), -1, cv2.LINE_AA)
    assert detect_marks(jpeg(Image.fromarray(arr), 85)) == []


# ------------------------------------------------------------------------------------------------ around content


def test_a_small_box_around_a_red_button_beside_other_red_buttons_is_no_letter() -> None:
    # a glyph-sized box with red content right beside it: only neighbours of its own hue make it a letter
    image = page()
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((110, 210, 200, 240), radius=6, fill="#e03131")
    draw.text((155, 225), "Import", font=font(14), fill="white", anchor="mm")
    draw.rounded_rectangle((212, 210, 302, 240), radius=6, outline="#e03131", width=1)
    draw.text((257, 225), "Review", font=font(14), fill="#e03131", anchor="mm")
    box = (100, 202, 208, 248)
    mark = only(detect_marks(jpeg(rectangle(image, box, "#22b14c", width=2), 90)), "rectangle")
    assert matches(mark, box)


def test_a_red_box_on_a_pink_region_of_a_photo_is_found() -> None:
    # the pink is of the box's colour family all round the stroke, but far from its colour
    rng = np.random.default_rng(3)
    arr = np.clip(rng.normal((185, 88, 100), 8, (480, 720, 3)), 0, 255).astype(np.uint8)
    for x, y in rng.integers((200, 180), (480, 280), (10, 2)):
        cv2.circle(arr, (int(x), int(y)), 7, (110, 30, 25), -1, cv2.LINE_AA)
    box = (160, 150, 520, 310)
    mark = only(detect_marks(jpeg(rectangle(Image.fromarray(arr), box, "#ff0000", width=5), 85)), "rectangle")
    assert matches(mark, box)


def test_a_filled_red_pill_with_a_number_on_a_dark_page_is_no_box() -> None:
    image = dark_page()
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((240, 286, 274, 310), radius=12, fill="#ff0000")
    draw.text((257, 298), "82", font=font(13, bold=True), fill="white", anchor="mm")
    assert detect_marks(jpeg(rescale(image, 1.1), 79)) == []


@pytest.mark.parametrize("radius", [11, 13])
def test_a_red_badge_on_a_blue_bar_is_no_ellipse(radius: int) -> None:
    # the badge's anti-aliased rim mixes red and blue into magenta: a ring of a pen family, but no pen's colour
    arr = np.full((480, 720, 3), 250, np.uint8)
    cv2.rectangle(arr, (0, 0), (719, 56), (16, 110, 253), -1)
    cv2.circle(arr, (660, 27), radius, (220, 50, 70), -1, cv2.LINE_AA)
    cv2.putText(arr, "5", (656, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    assert detect_marks(jpeg(rescale(Image.fromarray(arr), 1.1), 90)) == []


def test_a_small_ring_over_a_chart_legend_beside_lines_of_other_colours_is_found() -> None:
    # the legend's coloured line samples stick out beside the ring like letters; they are not of its hue
    arr = np.full((480, 720, 3), 255, np.uint8)
    for k, colour in enumerate(((178, 34, 34), (148, 103, 189), (255, 127, 14))):
        cv2.line(arr, (530, 120 + 22 * k), (570, 120 + 22 * k), colour, 3, cv2.LINE_AA)
        cv2.putText(arr, "series", (585, 126 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    box = (511, 108, 547, 146)
    mark = only(detect_marks(ellipse(Image.fromarray(arr), box, "#00ff00", width=5)), "ellipse")
    assert matches(mark, box)


def test_a_highlighter_touched_by_a_thin_line_of_its_hue_is_found() -> None:
    # a chart's orange series leaves the band's end: the tinted shape is no band, but most of it is one
    image = page()
    box = (26, 90, 330, 116)
    image = translucent(image, box, "#ffa500", 0.5)
    ImageDraw.Draw(image).line([(300, 100), (420, 60), (560, 75), (700, 30)], fill="#ffa500", width=2)
    mark = only(detect_marks(jpeg(image, 90)), "highlight")
    assert matches(mark, box, 0.8)


def test_a_piece_of_a_label_seen_by_a_neighbouring_family_goes_inside_the_whole_label() -> None:
    whole = Found("text", (418, 165, 493, 189), 0.73, "#ff7f22", 0.0, "orange")
    piece = Found("text", (437, 170, 455, 188), 0.83, "#fe7f25", 0.0, "red")  # scored higher, but a piece
    assert _suppress([piece, whole]) == [whole]
