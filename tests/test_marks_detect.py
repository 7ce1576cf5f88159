"""The marks detector on hand-made screenshots: each kind, each colour, what uploads go through, and the things
that look like marks but are not."""

from __future__ import annotations

import numpy as np
import pytest
from marks_conftest_helpers import (
    COLORS,
    arrow,
    ellipse,
    font,
    highlight,
    jpeg,
    label,
    matches,
    only,
    page,
    rectangle,
    rescale,
    shadow,
)
from PIL import Image, ImageDraw

from converters.marks import detect_marks
from converters.marks.colors import hex_to_rgb


def hue_family(color: str) -> str:
    r, g, b = hex_to_rgb(color)
    hsv = np.asarray(Image.new("RGB", (1, 1), (r, g, b)).convert("HSV").getpixel((0, 0)))
    hue = float(hsv[0]) * 360 / 255
    return min(("red", 0), ("orange", 30), ("green", 120), ("blue", 240), ("magenta", 300), ("red", 360),
               key=lambda kv: abs(kv[1] - hue))[0]  # fmt: skip


# ------------------------------------------------------------------------------------------------ each kind


def test_a_rectangle_is_found_with_its_outer_box_and_colour() -> None:
    image = rectangle(page(), (100, 60, 400, 170), "#ff0000", width=3)
    mark = only(detect_marks(image), "rectangle")
    assert matches(mark, (100, 60, 400, 170), 0.9)
    assert hue_family(mark.color) == "red" and 0.5 <= mark.score <= 1.0
    assert mark.tail is None and mark.head is None


def test_an_ellipse_is_found() -> None:
    mark = only(detect_marks(ellipse(page(), (200, 100, 460, 260), width=3)), "ellipse")
    assert matches(mark, (200, 100, 460, 260), 0.9)


def test_a_long_thin_ellipse_around_a_line_of_text_is_found() -> None:
    mark = only(detect_marks(ellipse(page(), (20, 110, 560, 150), width=2)), "ellipse")
    assert matches(mark, (20, 110, 560, 150))


@pytest.mark.parametrize("style", ["filled", "open"])
def test_an_arrow_is_found_with_tail_and_head(style: str) -> None:
    image = arrow(page(), (520, 380), (300, 220), width=4, style=style)
    mark = only(detect_marks(image), "arrow")
    assert mark.tail is not None and mark.head is not None
    assert np.hypot(mark.head[0] - 300, mark.head[1] - 220) <= 4  # the tip
    assert np.hypot(mark.tail[0] - 520, mark.tail[1] - 380) <= 6
    assert matches(mark, (296, 216, 523, 383), 0.75)


def test_a_highlighter_band_over_text_is_found() -> None:
    mark = only(detect_marks(highlight(page(), (26, 90, 330, 116))), "highlight")
    assert matches(mark, (26, 90, 330, 116), 0.8)
    assert hue_family(mark.color) in {"orange", "red"} or mark.color.startswith("#f")


def test_a_label_written_next_to_a_box_is_a_text_mark() -> None:
    image = rectangle(page(), (80, 150, 300, 230), width=3)
    image, ink = label(image, (315, 175), "Wrong total")
    marks = detect_marks(image)
    assert sorted(m.kind for m in marks) == ["rectangle", "text"]
    text = next(m for m in marks if m.kind == "text")
    assert matches(text, ink, 0.7) and hue_family(text.color) == "red"


def test_red_text_with_no_mark_beside_it_is_not_a_label() -> None:
    image = page()
    ImageDraw.Draw(image).text((40, 440), "Payment failed: card declined", font=font(18, bold=True), fill="#ff0000")
    assert detect_marks(image) == []


# ------------------------------------------------------------------------------------------------ colours


@pytest.mark.parametrize("name", sorted(COLORS))
def test_marks_are_found_in_every_pen_colour(name: str) -> None:
    image = rectangle(page(), (60, 80, 330, 200), COLORS[name], width=3)
    image = ellipse(image, (400, 220, 650, 400), COLORS[name], width=3)
    marks = detect_marks(image)
    assert sorted(m.kind for m in marks) == ["ellipse", "rectangle"]
    assert all(hue_family(m.color) == name for m in marks), [m.color for m in marks]


# ------------------------------------------------------------------------------------------------ uploads


@pytest.mark.parametrize("quality", [75, 90])
def test_two_pixel_strokes_survive_jpeg(quality: int) -> None:
    image = rectangle(page(), (60, 80, 330, 200), width=2)
    image = ellipse(image, (400, 220, 650, 400), "#0000ff", width=2)
    marks = detect_marks(jpeg(image, quality))
    assert sorted(m.kind for m in marks) == ["ellipse", "rectangle"]
    assert matches(next(m for m in marks if m.kind == "rectangle"), (60, 80, 330, 200))


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_rescaled_screenshots_keep_their_marks_in_their_own_pixels(factor: float) -> None:
    image = rescale(arrow(rectangle(page(), (60, 80, 330, 200), width=4), (600, 420), (420, 260), width=4), factor)
    marks = detect_marks(image)
    assert sorted(m.kind for m in marks) == ["arrow", "rectangle"]
    box = next(m for m in marks if m.kind == "rectangle")
    assert matches(box, tuple(v * factor for v in (60, 80, 330, 200)), 0.8)


def test_a_drop_shadow_is_not_part_of_the_box() -> None:
    image = shadow(page(), lambda im: rectangle(im, (100, 100, 380, 240), width=4))
    mark = only(detect_marks(image), "rectangle")
    assert matches(mark, (100, 100, 380, 240), 0.9)


def test_an_arrow_touching_the_box_it_points_at_is_two_marks() -> None:
    image = rectangle(page(), (300, 200, 520, 300), width=3)
    image = arrow(image, (120, 420), (300, 300), width=3)  # the tip on the box's corner
    marks = detect_marks(image)
    assert sorted(m.kind for m in marks) == ["arrow", "rectangle"]
    assert matches(next(m for m in marks if m.kind == "rectangle"), (300, 200, 520, 300))


@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_a_box_cut_by_the_image_edge_is_found_up_to_the_edge(side: str) -> None:
    boxes = {"left": (-40, 120, 260, 300), "top": (200, -30, 480, 160), "right": (500, 140, 800, 330),
             "bottom": (180, 360, 460, 560)}  # fmt: skip
    mark = only(detect_marks(rectangle(page(), boxes[side], width=4)), "rectangle")
    x0, y0, x1, y1 = boxes[side]
    assert matches(mark, (max(0, x0), max(0, y0), min(720, x1), min(480, y1)))


# ------------------------------------------------------------------------------------------------ same-coloured content


def test_a_box_around_a_red_button_is_found_and_the_button_is_not() -> None:
    image = page()
    d = ImageDraw.Draw(image)
    d.rounded_rectangle((200, 200, 320, 238), radius=5, fill="#dc3545")
    d.text((260, 219), "Delete", font=font(15), fill="white", anchor="mm")
    mark = only(detect_marks(rectangle(image, (188, 188, 332, 250), width=3)), "rectangle")
    assert matches(mark, (188, 188, 332, 250))


def test_an_ellipse_around_a_red_object_it_touches_is_found() -> None:
    image = page()
    ImageDraw.Draw(image).ellipse((250, 170, 380, 290), fill="#b01020")
    mark = only(detect_marks(ellipse(image, (230, 160, 420, 300), width=3)), "ellipse")
    assert matches(mark, (230, 160, 420, 300))


def test_a_box_over_a_red_chart_line_is_found() -> None:
    image = Image.new("RGB", (720, 480), "white")
    d = ImageDraw.Draw(image)
    xs = np.linspace(40, 680, 30)
    ys = 260 + 90 * np.sin(xs / 60)
    d.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill="#d62728", width=3)
    mark = only(detect_marks(rectangle(image, (250, 150, 420, 330), width=3)), "rectangle")
    assert matches(mark, (250, 150, 420, 330))


# ------------------------------------------------------------------------------------------------ not marks


def ui_distractors() -> Image.Image:
    """A page with a red button, red text, an error banner, a red progress bar, a thin red table and a pink
    error box with a red border: all red, none a mark."""
    image = Image.new("RGB", (900, 640), "#ffffff")
    d = ImageDraw.Draw(image)
    d.rounded_rectangle((40, 30, 160, 70), radius=6, fill="#dc3545")
    d.text((100, 50), "Delete", font=font(16), fill="white", anchor="mm")
    d.text((200, 40), "This field is required", font=font(16), fill="#dc3545")
    d.rectangle((40, 100, 860, 150), fill="#f44336")
    d.text((60, 125), "Error: the server could not be reached", font=font(16, True), fill="white", anchor="lm")
    d.rounded_rectangle((40, 180, 700, 194), radius=7, fill="#e9ecef")
    d.rounded_rectangle((40, 180, 420, 194), radius=7, fill="#dc3545")
    for r in range(6):
        d.line((40, 230 + r * 30, 520, 230 + r * 30), fill="#dc3545", width=1)
    for c in range(5):
        d.line((40 + c * 120, 230, 40 + c * 120, 380), fill="#dc3545", width=1)
    for r in range(5):
        for c in range(4):
            d.text((48 + c * 120, 238 + r * 30), "cell", font=font(14), fill="#333333")
    d.rounded_rectangle((40, 420, 600, 500), radius=4, fill="#f8d7da", outline="#dc3545", width=1)
    d.text((56, 432), "Error", font=font(16, True), fill="#dc3545")
    d.text((56, 460), "Your card was declined.", font=font(15), fill="#721c24")
    return image


def chart_distractors() -> Image.Image:
    """A line chart with a red series with markers, a red dashed threshold, and a red legend entry."""
    image = Image.new("RGB", (800, 500), "white")
    d = ImageDraw.Draw(image)
    d.line((60, 440, 760, 440), fill="black")
    d.line((60, 40, 60, 440), fill="black")
    xs = np.linspace(80, 740, 24)
    ys = 250 + 120 * np.sin(xs / 70) + 30 * np.cos(xs / 23)
    pts = list(zip(xs.tolist(), ys.tolist(), strict=True))
    d.line(pts, fill="#d62728", width=3)
    for x, y in pts:
        d.ellipse((x - 4, y - 4, x + 4, y + 4), fill="#d62728")
    for x in range(60, 760, 20):
        d.line((x, 200, x + 10, 200), fill="red", width=2)
    d.line((620, 60, 660, 60), fill="#d62728", width=3)
    d.text((670, 52), "revenue", font=font(14), fill="black")
    return image


def photo_distractors() -> Image.Image:
    """A photo-like image: smooth colour field, noise, a shaded red ball and red flowers."""
    rng = np.random.default_rng(3)
    h, w = 480, 720
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([90 + 60 * np.sin(xx / 150), 140 + 40 * np.cos(yy / 120), 110 + 50 * np.sin((xx + yy) / 200)], -1)
    ball = ((xx - 250) ** 2 + (yy - 240) ** 2) < 90**2
    shade = np.clip(1.1 - ((xx - 220) ** 2 + (yy - 200) ** 2) / 30000, 0.4, 1.1)[..., None]
    img = np.where(ball[..., None], np.array([210, 30, 40]) * shade, img)
    for _ in range(12):
        cx, cy = rng.uniform(450, 650), rng.uniform(100, 380)
        img = np.where((((xx - cx) ** 2 + (yy - cy) ** 2) < 36)[..., None], np.array([230, 20, 30]), img)
    img = img + rng.normal(0, 4, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("make", [ui_distractors, chart_distractors, photo_distractors, page], ids=lambda f: f.__name__)
@pytest.mark.parametrize("encode", ["png", "jpeg"])
def test_clean_images_and_red_content_yield_no_marks(make: object, encode: str) -> None:
    image = make()  # type: ignore[operator]
    assert detect_marks(jpeg(image, 80) if encode == "jpeg" else image) == []


def test_marks_are_still_found_among_the_distractors() -> None:
    image = rectangle(ui_distractors(), (690, 20, 880, 80), width=4)
    image = ellipse(image, (600, 390, 880, 560), "#0000ff", width=3)
    marks = detect_marks(jpeg(image, 85))
    assert sorted(m.kind for m in marks) == ["ellipse", "rectangle"]


def test_an_array_and_an_image_give_the_same_marks() -> None:
    image = arrow(rectangle(page(), (60, 80, 330, 200)), (600, 420), (420, 260))
    assert detect_marks(image) == detect_marks(np.asarray(image))


def test_min_score_drops_weaker_marks() -> None:
    image = rectangle(page(), (60, 80, 330, 200))
    assert detect_marks(image, min_score=1.01) == []
