"""Held-out marked screenshots, drawn independently of bench/marks_scenes.py, for measuring only.

    from marks_holdout import make_suite      # bench/marks.py --set holdout

This generator shares no code with the tuning generator (``marks_scenes.py``) and draws differently on purpose:

- backgrounds: text-heavy documents (serif and sans, tracked changes, red links, footnotes, tables), dashboards
  (KPI cards with red/green deltas, line/bar/donut charts drawn with OpenCV, status pills, alert strips), code
  editors (monospace syntax colouring, red squiggly lint underlines, breakpoint dots, a terminal with red errors),
  maps and photos (noise + gradients + shapes, water, roads, red pins and a red route); each may be in dark mode;
- marks: OpenCV ``LINE_AA`` with sub-pixel ``shift`` (not Pillow supersampling), in the styles of FastStone,
  Snipaste and the Windows snipping tool: sharp and rounded rectangles, boxes with a double drop shadow, ellipses
  (axis-aligned, slightly rotated, and freehand-wobbly loops whose ends overshoot), ``cv2.arrowedLine`` arrows and
  thick tapered arrows with an outlined head, semi-transparent filled highlighter boxes (also on dark pages),
  Hershey-font text callouts beside a mark, and numbered step circles (a filled disc with a white digit: kind
  ``text``);
- uploads: ``cv2.imencode`` JPEG at quality 75-95, rescaling 0.6-1.4x with OpenCV or Pillow filters.

The seed list is fixed here, up front (:data:`SEEDS`, :data:`CLEAN_SEEDS`), and this set is for measuring only:
do not tune the detector on it. Ground truth boxes are the outer bound (coverage >= 0.3) of each mark's own
coverage layer, in final-image pixels, ``[x0, y0, x1, y1)``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUNDS = ("document", "dashboard", "code", "map")
SEEDS: tuple[int, ...] = tuple(range(710_000, 710_060))
"""Marked scenes: scene i of a background uses SEEDS[i] (fixed up front; never tuned on)."""
CLEAN_SEEDS: tuple[int, ...] = tuple(range(790_000, 790_020))
"""Clean scenes: no marks at all."""

Box = tuple[float, float, float, float]
Point = tuple[float, float]

PENS: dict[str, tuple[str, ...]] = {
    "red": ("#ff0000", "#ea4335", "#fa3e3e", "#e02020", "#ff1744", "#f03c3c", "#ff2a00", "#dd1111"),
    "blue": ("#1a73e8", "#0066ff", "#2962ff", "#3d5afe", "#0a84ff"),
    "green": ("#34a853", "#00c853", "#2ecc40", "#1db954"),
    "magenta": ("#e91e63", "#ff00cc", "#d500f9", "#f50057"),
    "orange": ("#ff6d00", "#ff9100", "#fb8c00", "#ff7a00"),
}
PEN_WEIGHTS = {"red": 0.55, "blue": 0.13, "green": 0.1, "magenta": 0.1, "orange": 0.12}
HIGHLIGHTERS = ("#fff200", "#ffeb3b", "#ffff33", "#76ff03", "#ff80ab", "#ffab40", "#18ffff", "#b2ff59")
CALLOUTS = (
    "bug",
    "wrong",
    "here",
    "fix me",
    "1",
    "2",
    "3",
    "why??",
    "should be 0",
    "missing",
    "typo",
    "see this",
    "too big",
    "ok?",
    "broken",
    "NaN",
    "old value",
    "check",
    "slow",
    "dup",
)
_LOREM_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur "
    "excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est "
    "laborum quarterly revenue forecast margin customer churn latency deploy rollback incident owner "
    "pipeline budget region invoice contract renewal"
)
LOREM = tuple(_LOREM_TEXT.split(" "))
CODE_WORDS = (
    "user",
    "items",
    "total",
    "config",
    "result",
    "value",
    "index",
    "request",
    "cache",
    "count",
    "payload",
    "token",
    "retry",
    "buffer",
    "handler",
    "path",
    "data",
    "limit",
    "offset",
    "session",
)
KEYWORDS = ("def", "return", "if", "else", "for", "in", "import", "from", "class", "await", "async", "with", "try")


def hex_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@dataclass(frozen=True)
class TruthMark:
    """One drawn mark: kind, outer box [x0, y0, x1, y1) in final-image pixels, colour, arrow ends, tags."""

    kind: str
    bbox: Box
    color: str
    tail: Point | None = None
    head: Point | None = None
    tags: tuple[str, ...] = ()


@dataclass
class Scene:
    """An encoded upload with the marks drawn on it."""

    name: str
    background: str
    data: bytes
    suffix: str
    width: int
    height: int
    marks: list[TruthMark]
    conditions: dict[str, Any] = field(default_factory=dict)

    def decode(self) -> Image.Image:
        """The decoded RGB image."""
        return Image.open(io.BytesIO(self.data)).convert("RGB")

    def write(self, directory: Path) -> Path:
        """Write the encoded file to DIRECTORY/<name><suffix>."""
        path = directory / f"{self.name}{self.suffix}"
        path.write_bytes(self.data)
        return path


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = Path("/usr/share/fonts/truetype/dejavu") / f"{name}.ttf"
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(str(rng.choice(LOREM)) for _ in range(n))


@dataclass
class Spot:
    """Something on the page worth marking: its box, whether it is pen-coloured (red), whether it is text."""

    box: Box
    red: bool = False
    text: bool = False


# ------------------------------------------------------------------------------------------------ backgrounds


def _text(
    d: ImageDraw.ImageDraw, xy: Point, s: str, fnt: Any, fill: Any, spots: list[Spot] | None = None, red: bool = False
) -> Box:
    d.text(xy, s, font=fnt, fill=fill)
    b = d.textbbox(xy, s, font=fnt)
    box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    if spots is not None and b[2] > b[0]:
        spots.append(Spot(box, red, True))
    return box


def document(rng: np.random.Generator, w: int, h: int, dark: bool) -> tuple[np.ndarray, list[Spot]]:
    """A text-heavy page: title, paragraphs, a red link, tracked changes, a table, footnotes."""
    paper = (32, 33, 36) if dark else [(255, 255, 255), (253, 251, 245), (248, 248, 248)][int(rng.integers(3))]
    ink = (225, 225, 225) if dark else (25, 25, 25)
    im = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(im)
    spots: list[Spot] = []
    serif = rng.random() < 0.5
    body = "DejaVuSerif" if serif else "DejaVuSans"
    size = int(rng.integers(12, 18))
    f = _font(body, size)
    margin = int(rng.uniform(0.06, 0.15) * w)
    y = int(rng.integers(30, 70))
    _text(d, (margin, y), _sentence(rng, 4).title(), _font(body + "-Bold", size + 10), ink, spots)
    y += size + 34
    red = (200, 30, 30) if not dark else (255, 100, 90)
    while y < h - 40:
        block = rng.random()
        if block < 0.6:  # a paragraph, with a red link or a tracked change sometimes
            for _ in range(int(rng.integers(2, 7))):
                x = margin
                for _ in range(int(rng.integers(4, 12))):
                    word = str(rng.choice(LOREM))
                    style = rng.random()
                    colour: Any = ink
                    if style < 0.04:
                        colour = red
                    elif style < 0.07:
                        colour = (26, 115, 232) if not dark else (138, 180, 248)
                    box = _text(d, (x, y), word, f, colour, spots, red=colour == red)
                    if style < 0.02:  # tracked deletion
                        d.line((box[0], (box[1] + box[3]) / 2, box[2], (box[1] + box[3]) / 2), fill=red, width=1)
                    elif 0.04 <= style < 0.07:
                        d.line((box[0], box[3] + 1, box[2], box[3] + 1), fill=colour, width=1)
                    x = int(box[2]) + int(size * 0.4)
                    if x > w - margin - 60:
                        break
                y += int(size * 1.55)
            y += size
        elif block < 0.75:  # a table
            cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 7))
            cw = int(rng.integers(70, 150))
            rh = size + 14
            line = [(190, 190, 190), red, (120, 120, 120)][int(rng.integers(3))]
            for r in range(rows + 1):
                d.line((margin, y + r * rh, margin + cols * cw, y + r * rh), fill=line, width=1)
            for c in range(cols + 1):
                d.line((margin + c * cw, y, margin + c * cw, y + rows * rh), fill=line, width=1)
            for r in range(rows):
                for c in range(cols):
                    word = str(rng.choice(LOREM))[:8] if c else f"{rng.integers(1, 999)}"
                    _text(d, (margin + c * cw + 6, y + r * rh + 6), word, f, ink, spots)
            y += rows * rh + size
        elif block < 0.85:  # a bullet list
            for _ in range(int(rng.integers(2, 5))):
                d.ellipse((margin + 4, y + size / 2 - 3, margin + 10, y + size / 2 + 3), fill=ink)
                _text(d, (margin + 20, y), _sentence(rng, int(rng.integers(3, 8))), f, ink, spots)
                y += int(size * 1.6)
            y += size // 2
        elif block < 0.93:  # a figure placeholder
            fh = int(rng.integers(60, 160))
            fw = int(rng.uniform(0.3, 0.7) * (w - 2 * margin))
            d.rectangle((margin, y, margin + fw, y + fh), fill=(60, 63, 70) if dark else (225, 230, 236))
            spots.append(Spot((margin, y, margin + fw, y + fh)))
            y += fh + size
        else:  # a comment bubble in the margin (Word-style), red border sometimes
            bw = int(rng.integers(120, 220))
            x0 = w - bw - 10
            border = red if rng.random() < 0.5 else (180, 180, 180)
            d.rounded_rectangle((x0, y, x0 + bw, y + 50), radius=4, outline=border, fill=paper, width=1)
            _text(d, (x0 + 8, y + 8), _sentence(rng, 2), _font("DejaVuSans", 11), ink, spots)
            y += 64
    return np.asarray(im, np.float32), spots


def dashboard(rng: np.random.Generator, w: int, h: int, dark: bool) -> tuple[np.ndarray, list[Spot]]:
    """Cards with KPIs and deltas, charts drawn with OpenCV (red series among others), pills and an alert strip."""
    bg = (24, 26, 31) if dark else (241, 243, 246)
    card = (36, 39, 46) if dark else (255, 255, 255)
    ink = (230, 230, 230) if dark else (30, 34, 40)
    muted = (150, 155, 165)
    img = np.full((h, w, 3), bg, np.uint8)
    spots: list[Spot] = []
    reds = [(229, 57, 53), (244, 67, 54), (255, 23, 68), (214, 39, 40), (255, 0, 0)]
    others = [(33, 150, 243), (76, 175, 80), (255, 193, 7), (156, 39, 176), (0, 188, 212), (121, 85, 72)]
    top = 56
    cv2.rectangle(img, (0, 0), (w, top), (28, 31, 38) if dark else (255, 255, 255), -1)
    gap = 16
    ncol = int(rng.integers(2, 5))
    cw = (w - gap * (ncol + 1)) // ncol
    y = top + gap
    labels: list[tuple[Point, str, Any, Any, bool]] = []  # drawn with Pillow afterwards
    labels.append(((20, 18), "Overview " + _sentence(rng, 1), _font("DejaVuSans-Bold", 18), ink, False))
    while y < h - 80:
        ch = int(rng.integers(110, 260))
        if y + ch > h - gap:
            ch = h - gap - y
            if ch < 80:
                break
        for c in range(ncol):
            x0 = gap + c * (cw + gap)
            cv2.rectangle(img, (x0, y), (x0 + cw, y + ch), card, -1)
            spots.append(Spot((x0, y, x0 + cw, y + ch)))
            kind = rng.random()
            labels.append(((x0 + 14, y + 10), _sentence(rng, 2).title(), _font("DejaVuSans", 13), muted, False))
            if kind < 0.3:  # KPI
                value = f"{rng.integers(1, 999)}.{rng.integers(0, 9)}k"
                labels.append(((x0 + 14, y + 34), value, _font("DejaVuSans-Bold", 30), ink, False))
                up = rng.random() < 0.5
                delta = ("+" if up else "-") + f"{rng.uniform(0.1, 40):.1f}%"
                dcol = (46, 160, 67) if up else reds[int(rng.integers(len(reds)))]
                labels.append(((x0 + 14, y + 76), delta, _font("DejaVuSans-Bold", 14), dcol, not up))
            elif kind < 0.65:  # line chart
                n = int(rng.integers(10, 40))
                xs = np.linspace(x0 + 16, x0 + cw - 16, n)
                for s in range(int(rng.integers(1, 4))):
                    ys = y + ch - 20 - np.clip(np.cumsum(rng.normal(0, 1, n)) * 6 + ch / 3, 5, ch - 60)
                    colour = reds[int(rng.integers(len(reds)))] if s == 0 else others[int(rng.integers(len(others)))]
                    pts = np.stack([xs, ys], 1).round().astype(np.int32)
                    cv2.polylines(img, [pts], False, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
                    if s == 0:
                        spots.append(Spot((xs[n // 2] - 8, ys[n // 2] - 8, xs[n // 2] + 8, ys[n // 2] + 8), True))
                        if rng.random() < 0.4:
                            for px, py in pts[:: int(rng.integers(2, 5))]:
                                cv2.circle(img, (int(px), int(py)), 3, colour, -1, cv2.LINE_AA)
            elif kind < 0.85:  # bars
                n = int(rng.integers(4, 14))
                bw = (cw - 32) / n
                for i in range(n):
                    bh = rng.uniform(10, ch - 60)
                    colour = reds[0] if (i % 3 == 0 or rng.random() < 0.3) else others[0]
                    bx = x0 + 16 + i * bw
                    cv2.rectangle(
                        img, (int(bx + 2), int(y + ch - 16 - bh)), (int(bx + bw - 2), y + ch - 16), colour, -1
                    )
                    if i == n // 2:
                        spots.append(Spot((bx, y + ch - 16 - bh, bx + bw, y + ch - 16), colour == reds[0]))
            else:  # donut
                r = int(min(cw, ch) * 0.3)
                cx, cy = x0 + cw // 2, y + ch // 2 + 10
                start = 0.0
                for i in range(int(rng.integers(2, 5))):
                    span = rng.uniform(40, 160)
                    colour = reds[1] if i == 0 else others[i % len(others)]
                    cv2.ellipse(
                        img,
                        (cx, cy),
                        (r, r),
                        -90,
                        start,
                        min(360, start + span),
                        colour,
                        int(rng.integers(8, 20)),
                        cv2.LINE_AA,
                    )
                    start += span
                spots.append(Spot((cx - r - 10, cy - r - 10, cx + r + 10, cy + r + 10), True))
            if rng.random() < 0.25:  # a status pill
                red = rng.random() < 0.6
                colour = reds[0] if red else others[1]
                px0, py0 = x0 + cw - 90, y + 10
                cv2.rectangle(img, (px0 + 8, py0), (px0 + 70, py0 + 20), colour, -1)
                cv2.circle(img, (px0 + 8, py0 + 10), 10, colour, -1, cv2.LINE_AA)
                cv2.circle(img, (px0 + 70, py0 + 10), 10, colour, -1, cv2.LINE_AA)
                labels.append(
                    (
                        (px0 + 10, py0 + 3),
                        "Failed" if red else "OK",
                        _font("DejaVuSans-Bold", 12),
                        (255, 255, 255),
                        False,
                    )
                )
                spots.append(Spot((px0 - 2, py0, px0 + 80, py0 + 20), red))
        y += ch + gap
        if rng.random() < 0.2 and y < h - 100:  # an alert strip
            colour = reds[int(rng.integers(len(reds)))]
            cv2.rectangle(img, (gap, y), (w - gap, y + 36), colour, -1)
            labels.append(
                ((gap + 14, y + 9), "Alert: " + _sentence(rng, 5), _font("DejaVuSans-Bold", 14), (255, 255, 255), False)
            )
            spots.append(Spot((gap, y, w - gap, y + 36), True))
            y += 36 + gap
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    for xy, s, fnt, fill, red in labels:
        _text(d, xy, s, fnt, fill, spots, red)
    return np.asarray(im, np.float32), spots


def code_editor(rng: np.random.Generator, w: int, h: int, dark: bool) -> tuple[np.ndarray, list[Spot]]:
    """An editor: tabs, gutter with line numbers and breakpoints, coloured code, squiggles, a terminal."""
    bg = (30, 30, 30) if dark else (255, 255, 255)
    gutter = (37, 37, 38) if dark else (245, 245, 245)
    plain = (212, 212, 212) if dark else (36, 41, 46)
    palette = {
        "kw": (86, 156, 214) if dark else (0, 0, 255),
        "str": (206, 145, 120) if dark else (163, 21, 21),
        "num": (181, 206, 168) if dark else (9, 134, 88),
        "com": (106, 153, 85) if dark else (0, 128, 0),
        "fn": (220, 220, 170) if dark else (121, 94, 38),
    }
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    spots: list[Spot] = []
    size = int(rng.integers(12, 16))
    f = _font("DejaVuSansMono", size)
    tab_h = 34
    d.rectangle((0, 0, w, tab_h), fill=(45, 45, 45) if dark else (236, 236, 236))
    x = 0
    for _ in range(int(rng.integers(2, 5))):
        name = f"{rng.choice(CODE_WORDS)}.py"
        tw = int(d.textlength(name, font=f)) + 30
        d.rectangle((x, 0, x + tw, tab_h), fill=bg if x == 0 else None)
        _text(d, (x + 12, 9), name, f, plain, spots)
        x += tw + 2
    term_h = int(h * rng.uniform(0.18, 0.3)) if rng.random() < 0.6 else 0
    gw = 56
    d.rectangle((0, tab_h, gw, h - term_h), fill=gutter)
    line_h = int(size * 1.5)
    y = tab_h + 8
    n = 1
    red = (244, 71, 71) if dark else (229, 20, 0)
    while y < h - term_h - line_h:
        _text(d, (8, y), f"{n:>4}", f, (133, 133, 133))
        if rng.random() < 0.05:
            d.ellipse((gw - 14, y + 3, gw - 4, y + 13), fill=red)
        x = gw + 12 + int(rng.integers(0, 5)) * size * 2
        for _ in range(int(rng.integers(0, 8))):
            tok = rng.random()
            if tok < 0.2:
                word, colour = str(rng.choice(KEYWORDS)), palette["kw"]
            elif tok < 0.35:
                word, colour = f'"{rng.choice(LOREM)}"', palette["str"]
            elif tok < 0.45:
                word, colour = str(rng.integers(0, 500)), palette["num"]
            elif tok < 0.55:
                word, colour = f"{rng.choice(CODE_WORDS)}()", palette["fn"]
            else:
                word, colour = str(rng.choice(CODE_WORDS)), plain
            box = _text(d, (x, y), word, f, colour, spots, red=colour == palette["str"] and not dark)
            if rng.random() < 0.03:  # a lint squiggle
                xs = np.arange(box[0], box[2], 2.0)
                ys = box[3] + 2 + (np.arange(len(xs)) % 2) * 2
                d.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=red, width=1)
            x = int(box[2]) + int(d.textlength(" ", font=f))
            if x > w - 100:
                break
        if rng.random() < 0.1:
            _text(d, (x, y), "# " + _sentence(rng, 4), f, palette["com"], spots)
        y += line_h
        n += 1
    if term_h:
        ty = h - term_h
        d.rectangle((0, ty, w, h), fill=(24, 24, 24) if dark else (250, 250, 250))
        d.line((0, ty, w, ty), fill=(70, 70, 70) if dark else (200, 200, 200))
        ty += 10
        while ty < h - line_h:
            err = rng.random() < 0.35
            s = ("Error: " + _sentence(rng, 5)) if err else ("$ " + _sentence(rng, 4))
            _text(d, (12, ty), s, f, red if err else plain, spots, red=err)
            ty += line_h
    return np.asarray(im, np.float32), spots


def map_or_photo(rng: np.random.Generator, w: int, h: int, dark: bool) -> tuple[np.ndarray, list[Spot]]:
    """A street map (land, water, parks, roads, red pins, a red route) or a photo (gradients, noise, objects)."""
    spots: list[Spot] = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # map
        land = np.array((36, 38, 44) if dark else (242, 239, 233), np.float32)
        img = np.empty((h, w, 3), np.float32)
        img[:] = land
        img += cv2.resize(rng.normal(0, 3, (h // 8 + 1, w // 8 + 1, 1)).astype(np.float32), (w, h))[..., None]
        img = np.clip(img, 0, 255).astype(np.uint8)
        water = (40, 60, 90) if dark else (170, 211, 223)
        park = (40, 60, 45) if dark else (200, 230, 190)
        for colour, count in ((water, int(rng.integers(1, 3))), (park, int(rng.integers(1, 5)))):
            for _ in range(count):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
                rad = rng.uniform(40, 0.3 * min(w, h)) * rng.uniform(0.6, 1.0, 9)
                pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
                cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
        for _ in range(int(rng.integers(6, 16))):  # roads
            p = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(int(rng.integers(2, 5)))]
            pts = np.array(p, np.int32)
            major = rng.random() < 0.3
            width = int(rng.integers(6, 12)) if major else int(rng.integers(3, 6))
            fill = (250, 200, 80) if major else ((70, 72, 80) if dark else (255, 255, 255))
            cv2.polylines(img, [pts], False, (150, 150, 150), width + 2, cv2.LINE_AA)
            cv2.polylines(img, [pts], False, fill, width, cv2.LINE_AA)
        if rng.random() < 0.5:  # a route in red or blue
            p = np.array([(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(4)], np.int32)
            colour = (234, 67, 53) if rng.random() < 0.6 else (66, 133, 244)
            cv2.polylines(img, [p], False, colour, int(rng.integers(4, 8)), cv2.LINE_AA)
            spots.append(
                Spot(
                    (float(p[1, 0]) - 10, float(p[1, 1]) - 10, float(p[1, 0]) + 10, float(p[1, 1]) + 10),
                    colour[0] > 200,
                )
            )
        for _ in range(int(rng.integers(1, 6))):  # pins
            px, py = int(rng.uniform(20, w - 20)), int(rng.uniform(30, h - 10))
            colour = (234, 67, 53) if rng.random() < 0.7 else (52, 168, 83)
            cv2.circle(img, (px, py - 18), 10, colour, -1, cv2.LINE_AA)
            cv2.fillConvexPoly(
                img, np.array([(px - 9, py - 14), (px + 9, py - 14), (px, py)], np.int32), colour, cv2.LINE_AA
            )
            cv2.circle(img, (px, py - 18), 4, (120, 20, 15), -1, cv2.LINE_AA)
            spots.append(Spot((px - 12, py - 30, px + 12, py + 1), colour[0] > 200))
        im = Image.fromarray(img)
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 10))):
            _text(
                d,
                (rng.uniform(0, w - 100), rng.uniform(0, h - 20)),
                str(rng.choice(LOREM)).title() + " St",
                _font("DejaVuSans", int(rng.integers(10, 14))),
                (200, 200, 200) if dark else (90, 90, 90),
                spots,
            )
        return np.asarray(im, np.float32), spots
    # photo: a sky-to-ground gradient, hills, texture, objects
    top = rng.uniform(60, 230, 3)
    bottom = rng.uniform(20, 200, 3)
    t = (yy / h)[..., None]
    img = top * (1 - t) + bottom * t
    for _ in range(int(rng.integers(2, 5))):
        base = rng.uniform(0.3, 0.9) * h
        amp, freq = rng.uniform(10, 80), rng.uniform(0.002, 0.01)
        ridge = base + amp * np.sin(xx * freq + rng.uniform(0, 6))
        colour = rng.uniform(20, 180, 3)
        img = np.where((yy > ridge)[..., None], img * 0.3 + colour * 0.7, img)
    texture = cv2.resize(rng.normal(0, 1, (h // 3 + 1, w // 3 + 1, 3)).astype(np.float32), (w, h))
    img = img + texture * rng.uniform(4, 14)
    for i in range(int(rng.integers(1, 6))):
        red = i == 0 or rng.random() < 0.5
        colour = (
            np.array([rng.uniform(170, 255), rng.uniform(0, 60), rng.uniform(0, 60)]) if red else rng.uniform(0, 255, 3)
        )
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        rx, ry = rng.uniform(15, 0.15 * w), rng.uniform(15, 0.15 * h)
        mask = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            cv2.ellipse(
                mask, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA
            )
        else:
            pts = np.array(
                [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.sort(rng.uniform(0, 6.28, 6))], np.int32
            )
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
        a = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.0)[..., None]
        light = np.clip(1.15 - 0.5 * (((xx - cx) / (rx + 1)) ** 2 + ((yy - cy) / (ry + 1)) ** 2), 0.5, 1.15)
        img = img * (1 - a) + colour * light[..., None] * a
        spots.append(Spot((cx - rx, cy - ry, cx + rx, cy + ry), red))
    img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    if dark:
        img = img * 0.45
    return np.clip(img, 0, 255).astype(np.float32), spots


SIZES = {
    "document": ((850, 1500), (700, 1200)),
    "dashboard": ((1100, 1920), (700, 1080)),
    "code": ((900, 1600), (600, 1000)),
    "map": ((800, 1400), (600, 1000)),
}
DARK = {"document": 0.2, "dashboard": 0.35, "code": 0.55, "map": 0.2}
MAKERS = {"document": document, "dashboard": dashboard, "code": code_editor, "map": map_or_photo}


# ------------------------------------------------------------------------------------------------ marks

SHIFT = 3
ONE = 1 << SHIFT


def _p(x: float, y: float) -> tuple[int, int]:
    """A sub-pixel point for OpenCV drawing with ``shift=SHIFT``."""
    return round(x * ONE), round(y * ONE)


def _bounds(alpha: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(alpha >= 0.3)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _finish(layer: np.ndarray) -> np.ndarray:
    return layer.astype(np.float32) / 255.0


def rect_layer(h: int, w: int, box: Box, t: int, radius: float) -> np.ndarray:
    """A rectangle whose stroke's outer bound is BOX; rounded corners of RADIUS (0: sharp)."""
    layer = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box[0] + t / 2, box[1] + t / 2, box[2] - t / 2, box[3] - t / 2
    if radius <= 0:
        cv2.rectangle(layer, _p(x0, y0), _p(x1, y1), 255, t, cv2.LINE_AA, SHIFT)
        return _finish(layer)
    r = min(radius, (x1 - x0) / 2 - 1, (y1 - y0) / 2 - 1)
    for a, b in (
        ((x0 + r, y0), (x1 - r, y0)),
        ((x0 + r, y1), (x1 - r, y1)),
        ((x0, y0 + r), (x0, y1 - r)),
        ((x1, y0 + r), (x1, y1 - r)),
    ):
        cv2.line(layer, _p(*a), _p(*b), 255, t, cv2.LINE_AA, SHIFT)
    for cx, cy, start in ((x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90)):
        cv2.ellipse(layer, _p(cx, cy), _p(r, r), 0, start, start + 90, 255, t, cv2.LINE_AA, SHIFT)
    return _finish(layer)


def ellipse_layer(h: int, w: int, box: Box, t: int, angle: float) -> np.ndarray:
    """An ellipse inscribed (centre line) in BOX shrunk by half the stroke, turned by ANGLE degrees."""
    layer = np.zeros((h, w), np.uint8)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = (box[2] - box[0] - t) / 2, (box[3] - box[1] - t) / 2
    cv2.ellipse(layer, _p(cx, cy), _p(ax, ay), angle, 0, 360, 255, t, cv2.LINE_AA, SHIFT)
    return _finish(layer)


def freehand_layer(rng: np.random.Generator, h: int, w: int, box: Box, t: int) -> np.ndarray:
    """A hand-drawn loop: radius wobbling a few percent, ends overshooting and not meeting exactly."""
    layer = np.zeros((h, w), np.uint8)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = (box[2] - box[0] - t) / 2, (box[3] - box[1] - t) / 2
    start = rng.uniform(0, 2 * math.pi)
    sweep = 2 * math.pi + rng.uniform(0.15, 0.7)
    s = np.linspace(0, sweep, 240)
    wobble = 1 + sum(rng.uniform(-0.03, 0.03) * np.sin(k * s + rng.uniform(0, 6)) for k in (1, 2, 3))
    drift = 1 + rng.uniform(-0.08, 0.08) * s / sweep  # the pen does not come back to where it started
    rot = math.radians(rng.uniform(-12, 12))
    ex, ey = ax * wobble * drift * np.cos(start + s), ay * wobble * drift * np.sin(start + s)
    px = cx + ex * math.cos(rot) - ey * math.sin(rot)
    py = cy + ex * math.sin(rot) + ey * math.cos(rot)
    pts = (np.stack([px, py], 1) * ONE).round().astype(np.int32)
    cv2.polylines(layer, [pts], False, 255, t, cv2.LINE_AA, SHIFT)
    return _finish(layer)


def arrow_layer(
    rng: np.random.Generator, h: int, w: int, tail: Point, head: Point, t: int, style: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """An arrow from TAIL to HEAD (the tip): ``cv2.arrowedLine`` or a thick tapered arrow with an outlined head.

    Returns the coverage layer and, for outlined arrows, the outline's coverage (drawn in white or black).
    """
    layer = np.zeros((h, w), np.uint8)
    length = math.hypot(head[0] - tail[0], head[1] - tail[1])
    if style == "cv":
        tip = float(np.clip(rng.uniform(3.5, 6) * t / length + 6 / length, 0.05, 0.35))
        cv2.arrowedLine(layer, _p(*tail), _p(*head), 255, t, cv2.LINE_AA, SHIFT, tip)
        return _finish(layer), None
    ux, uy = (head[0] - tail[0]) / length, (head[1] - tail[1]) / length
    nx, ny = -uy, ux
    head_len = rng.uniform(3.0, 4.5) * t + 6
    head_half = rng.uniform(1.6, 2.4) * t + 4
    bx, by = head[0] - ux * head_len, head[1] - uy * head_len
    tail_half = t * rng.uniform(0.2, 0.5)
    neck_half = t * 0.6
    poly = [
        (tail[0] + nx * tail_half, tail[1] + ny * tail_half),
        (bx + nx * neck_half, by + ny * neck_half),
        (bx + nx * head_half, by + ny * head_half),
        head,
        (bx - nx * head_half, by - ny * head_half),
        (bx - nx * neck_half, by - ny * neck_half),
        (tail[0] - nx * tail_half, tail[1] - ny * tail_half),
    ]
    pts = (np.array(poly) * ONE).round().astype(np.int32)
    cv2.fillPoly(layer, [pts], 255, cv2.LINE_AA, SHIFT)
    outline = None
    if rng.random() < 0.6:
        ring = np.zeros((h, w), np.uint8)
        cv2.polylines(ring, [pts], True, 255, 2, cv2.LINE_AA, SHIFT)
        outline = _finish(ring)
    return _finish(layer), outline


def label_layer(h: int, w: int, xy: Point, text: str, face: int, scale: float, thick: int) -> np.ndarray:
    """Hershey text with its baseline-left at XY."""
    layer = np.zeros((h, w), np.uint8)
    cv2.putText(layer, text, (round(xy[0]), round(xy[1])), face, scale, 255, thick, cv2.LINE_AA)
    return _finish(layer)


FACES = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


class Canvas:
    """The image being marked, the truths, and the boxes already taken."""

    def __init__(self, img: np.ndarray, rng: np.random.Generator) -> None:
        self.img = img
        self.rng = rng
        self.marks: list[TruthMark] = []
        self.taken: list[Box] = []

    @property
    def h(self) -> int:
        return int(self.img.shape[0])

    @property
    def w(self) -> int:
        return int(self.img.shape[1])

    def free(self, box: Box, gap: float = 6.0, ignore: Box | None = None) -> bool:
        return not any(
            box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap
            for o in self.taken
            if o != ignore
        )

    def shadow(self, alpha: np.ndarray, double: bool) -> None:
        for k in range(2 if double else 1):
            off = (k + 1) * int(self.rng.integers(2, 5))
            s = cv2.GaussianBlur(alpha, (0, 0), 1.5 + 1.5 * k)
            s = np.roll(s, (off, off), axis=(0, 1)) * (0.45 - 0.15 * k)
            self.img = self.img * (1 - s[..., None])

    def paint(self, alpha: np.ndarray, color: str) -> None:
        a = alpha[..., None]
        self.img = self.img * (1 - a) + np.asarray(hex_rgb(color), np.float32) * a

    def add(
        self,
        kind: str,
        alpha: np.ndarray,
        color: str,
        tags: tuple[str, ...],
        tail: Point | None = None,
        head: Point | None = None,
    ) -> Box | None:
        box = _bounds(alpha)
        if box is None:
            return None
        self.taken.append(box)
        self.marks.append(TruthMark(kind, box, color, tail, head, tags))
        return box


def _pen(rng: np.random.Generator) -> str:
    names = list(PEN_WEIGHTS)
    family = names[int(rng.choice(len(names), p=np.array(list(PEN_WEIGHTS.values()))))]
    return str(rng.choice(PENS[family]))


def _around(rng: np.random.Generator, spot: Spot, kind: str) -> Box:
    x0, y0, x1, y1 = spot.box
    if kind == "ellipse":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        k = rng.uniform(1.2, 1.7)
        hw, hh = (x1 - x0) / 2 * k + rng.uniform(5, 16), (y1 - y0) / 2 * k + rng.uniform(5, 16)
        return cx - hw, cy - hh, cx + hw, cy + hh
    m = rng.uniform(-2, 12) if spot.red else rng.uniform(3, 14)
    return x0 - m, y0 - m * rng.uniform(0.4, 1.0), x1 + m, y1 + m * rng.uniform(0.4, 1.0)


def _anywhere(rng: np.random.Generator, w: int, h: int) -> Box:
    bw = rng.uniform(30, min(560, 0.55 * w))
    bh = float(np.clip(bw / math.exp(rng.uniform(-1.0, 1.9)), 20, 0.55 * h))
    x0, y0 = rng.uniform(2, w - bw - 2), rng.uniform(2, h - bh - 2)
    return x0, y0, x0 + bw, y0 + bh


def _push_to_border(rng: np.random.Generator, box: Box, w: int, h: int, corner: bool) -> Box:
    """BOX moved to cross one border (or two, at a corner: an L-shaped remnant)."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0 = box[0], box[1]
    sides = [int(rng.integers(2)) + 0, int(rng.integers(2)) + 2] if corner else [int(rng.integers(4))]
    for side in sides:
        out = rng.uniform(0.05, 0.3)
        if side == 0:
            x0 = -bw * out
        elif side == 1:
            x0 = w - bw * (1 - out)
        elif side == 2:
            y0 = -bh * out
        else:
            y0 = h - bh * (1 - out)
    return x0, y0, x0 + bw, y0 + bh


def _callout(cv: Canvas, anchor: Box, color: str) -> None:
    """A Hershey text label beside ANCHOR (right, left, above or below)."""
    rng = cv.rng
    text = str(rng.choice(CALLOUTS))
    face = int(rng.choice(FACES))
    scale = rng.uniform(0.55, 1.1)
    thick = int(rng.integers(1, 3))
    (tw, th), base = cv2.getTextSize(text, face, scale, thick)
    gap = rng.uniform(5, 18)
    where = int(rng.integers(4))
    if where == 0:
        xy = (anchor[2] + gap, anchor[1] + th + rng.uniform(0, max(1.0, anchor[3] - anchor[1] - th)))
    elif where == 1:
        xy = (anchor[0] - gap - tw, anchor[1] + th + rng.uniform(0, max(1.0, anchor[3] - anchor[1] - th)))
    elif where == 2:
        xy = (anchor[0] + rng.uniform(0, max(1.0, anchor[2] - anchor[0] - tw)), anchor[1] - gap - base)
    else:
        xy = (anchor[0] + rng.uniform(0, max(1.0, anchor[2] - anchor[0] - tw)), anchor[3] + gap + th)
    if not (xy[0] > 2 and xy[0] + tw < cv.w - 2 and xy[1] - th > 2 and xy[1] + base < cv.h - 2):
        return
    alpha = label_layer(cv.h, cv.w, xy, text, face, scale, thick)
    box = _bounds(alpha)
    if box is None or not cv.free(box, 4, ignore=anchor):
        return
    cv.paint(alpha, color)
    cv.add("text", alpha, color, ("label", "callout"))


def _step(cv: Canvas, anchor: Box, color: str, number: int) -> None:
    """A numbered step circle (filled disc, white digit) just outside a corner of ANCHOR."""
    rng = cv.rng
    r = rng.uniform(10, 16)
    corner = int(rng.integers(4))
    cx = anchor[0] - r - 3 if corner in (0, 3) else anchor[2] + r + 3
    cy = anchor[1] + r * rng.uniform(0, 1) if corner in (0, 1) else anchor[3] - r * rng.uniform(0, 1)
    if not (r + 2 < cx < cv.w - r - 2 and r + 2 < cy < cv.h - r - 2):
        return
    layer = np.zeros((cv.h, cv.w), np.uint8)
    cv2.circle(layer, _p(cx, cy), round(r * ONE), 255, -1, cv2.LINE_AA, SHIFT)
    alpha = _finish(layer)
    box = _bounds(alpha)
    if box is None or not cv.free(box, 3, ignore=anchor):
        return
    cv.paint(alpha, color)
    digit = str(number)
    scale = r / 22
    (tw, th), _ = cv2.getTextSize(digit, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    white = label_layer(cv.h, cv.w, (cx - tw / 2, cy + th / 2), digit, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv.paint(white, "#ffffff")
    cv.add("text", alpha, color, ("label", "step"))


def add_mark(cv: Canvas, kind: str, spots: list[Spot], dark: bool, steps: list[int]) -> None:
    """Try a few times to place a mark of KIND; give up quietly when it does not fit."""
    rng = cv.rng
    h, w = cv.h, cv.w
    color = _pen(rng)
    t = int(rng.integers(2, 7))
    shadow = rng.random() < 0.3
    for _ in range(15):
        spot = spots[int(rng.integers(len(spots)))] if spots and rng.random() < 0.85 else None
        tags: list[str] = [f"w{t}"]
        if spot is not None and spot.red and color in PENS["red"]:
            tags.append("near-same-colour")
        if kind in ("rectangle", "ellipse"):
            box = _around(rng, spot, kind) if spot else _anywhere(rng, w, h)
            roll = rng.random()
            if roll < 0.1:
                box = _push_to_border(rng, box, w, h, corner=False)
                tags.append("edge")
            elif roll < 0.13 and kind == "rectangle":
                box = _push_to_border(rng, box, w, h, corner=True)
                tags.append("corner")
            bw, bh = box[2] - box[0], box[3] - box[1]
            if min(bw, bh) < 3 * t + 10 or bw > 0.95 * w or bh > 0.9 * h:
                continue
            if kind == "rectangle":
                style = str(rng.choice(["sharp", "sharp", "rounded", "double-shadow"]))
                alpha = rect_layer(h, w, box, t, rng.uniform(4, 14) if style == "rounded" else 0.0)
                shadow = shadow or style == "double-shadow"
                tags.append(style)
            else:
                style = str(rng.choice(["cv", "cv", "rotated", "freehand"]))
                if style == "freehand":
                    alpha = freehand_layer(rng, h, w, box, t)
                else:
                    alpha = ellipse_layer(h, w, box, t, rng.uniform(-20, 20) if style == "rotated" else 0.0)
                tags.append(style)
            truth = _bounds(alpha)
            if truth is None or not cv.free(truth):
                continue
            visible = (truth[2] - truth[0]) * (truth[3] - truth[1])
            if visible < 0.5 * bw * bh or min(truth[2] - truth[0], truth[3] - truth[1]) < 14:
                continue
            if shadow:
                cv.shadow(alpha, double=style == "double-shadow")
            cv.paint(alpha, color)
            placed = cv.add(kind, alpha, color, tuple(tags))
            if placed is not None:
                if rng.random() < 0.25:
                    _callout(cv, placed, color)
                elif kind == "rectangle" and rng.random() < 0.15:
                    steps[0] += 1
                    _step(cv, placed, color, steps[0])
            return
        if kind == "arrow":
            length = rng.uniform(45, 340)
            ang = rng.uniform(0, 2 * math.pi)
            if spot is not None:
                sb = spot.box
                hx, hy = rng.uniform(sb[0], sb[2]), rng.uniform(sb[1], sb[3])
                back = rng.uniform(-3, 12)
                hx, hy = hx - math.cos(ang) * back, hy - math.sin(ang) * back
            else:
                hx, hy = rng.uniform(30, w - 30), rng.uniform(30, h - 30)
            tail = (hx - math.cos(ang) * length, hy - math.sin(ang) * length)
            if not (6 < tail[0] < w - 6 and 6 < tail[1] < h - 6 and 4 < hx < w - 4 and 4 < hy < h - 4):
                continue
            style = "cv" if rng.random() < 0.55 else "thick"
            alpha, outline = arrow_layer(rng, h, w, tail, (hx, hy), t, style)
            truth = _bounds(np.maximum(alpha, outline) if outline is not None else alpha)
            if truth is None or not cv.free(truth):
                continue
            if shadow:
                cv.shadow(alpha, double=False)
            if outline is not None:
                cv.paint(outline, "#ffffff" if rng.random() < 0.7 else "#000000")
                tags.append("outlined")
            cv.paint(alpha, color)
            tags.append(style)
            placed = cv.add(
                "arrow",
                np.maximum(alpha, outline) if outline is not None else alpha,
                color,
                tuple(tags),
                tail,
                (hx, hy),
            )
            if placed is not None and rng.random() < 0.2:
                _callout(cv, (tail[0] - 20, tail[1] - 8, tail[0] + 20, tail[1] + 8), color)
            return
        if kind == "highlight":
            texts = [s for s in spots if s.text and s.box[2] - s.box[0] > 25 and s.box[3] - s.box[1] < 60]
            if not texts:
                return
            tb = texts[int(rng.integers(len(texts)))].box
            pad = rng.uniform(1, 5)
            box = (tb[0] - pad, tb[1] - pad, tb[2] + pad + rng.uniform(0, 40), tb[3] + pad)
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
            if box[2] - box[0] < 20 or not cv.free(box, 4):
                continue
            layer = np.zeros((h, w), np.uint8)
            cv2.rectangle(layer, _p(box[0], box[1]), _p(box[2] - 1, box[3] - 1), 255, -1, cv2.LINE_AA, SHIFT)
            alpha = _finish(layer)
            hcolor = str(rng.choice(HIGHLIGHTERS))
            opacity = rng.uniform(0.3, 0.5) if not dark else rng.uniform(0.35, 0.6)
            a = alpha[..., None]
            if not dark and rng.random() < 0.5:
                cv.img = cv.img * (1 - a) + cv.img * (np.asarray(hex_rgb(hcolor), np.float32) / 255) * a
                tags = ["multiply"]
            else:
                cv.img = cv.img * (1 - a * opacity) + np.asarray(hex_rgb(hcolor), np.float32) * a * opacity
                tags = ["alpha"]
            if dark:
                tags.append("dark-page")
            cv.add("highlight", alpha, hcolor, tuple(tags))
            return


KINDS = {"rectangle": 0.33, "ellipse": 0.25, "arrow": 0.27, "highlight": 0.15}


def make_scene(seed: int, background: str, n_marks: int | None = None) -> Scene:
    """Scene SEED on BACKGROUND with N_MARKS marks (0: a clean image; None: 1-5)."""
    rng = np.random.default_rng([seed, BACKGROUNDS.index(background), 31])
    (wl, wh), (hl, hh) = SIZES[background]
    w, h = int(rng.integers(wl, wh)), int(rng.integers(hl, hh))
    dark = bool(rng.random() < DARK[background])
    img, spots = MAKERS[background](rng, w, h, dark)
    cv = Canvas(img.astype(np.float32), rng)
    n = int(rng.integers(1, 6)) if n_marks is None else n_marks
    names = list(KINDS)
    p = np.array(list(KINDS.values()))
    steps = [0]
    for _ in range(n):
        add_mark(cv, names[int(rng.choice(len(names), p=p / p.sum()))], spots, dark, steps)
    out = np.clip(cv.img, 0, 255)
    marks = cv.marks
    conditions: dict[str, Any] = {"scale": 1.0, "dark": dark}
    if rng.random() < 0.35:
        s = float(rng.uniform(0.6, 1.4))
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        if rng.random() < 0.5:
            interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC][int(rng.integers(3))]
            out = cv2.resize(out.astype(np.float32), (nw, nh), interpolation=interp)
        else:
            pil = Image.fromarray(out.round().astype(np.uint8))
            filt = [Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.HAMMING][int(rng.integers(3))]
            out = np.asarray(pil.resize((nw, nh), filt), np.float32)
        sx, sy = nw / w, nh / h
        marks = [
            TruthMark(
                m.kind,
                (m.bbox[0] * sx, m.bbox[1] * sy, m.bbox[2] * sx, m.bbox[3] * sy),
                m.color,
                None if m.tail is None else (m.tail[0] * sx, m.tail[1] * sy),
                None if m.head is None else (m.head[0] * sx, m.head[1] * sy),
                m.tags,
            )
            for m in marks
        ]
        conditions["scale"] = round(s, 3)
        h, w = nh, nw
    pixels = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    if rng.random() < 0.6:
        quality = int(rng.integers(75, 96))
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        suffix = ".jpg"
        conditions["jpeg"] = quality
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        suffix = ".png"
        conditions["jpeg"] = None
    assert ok
    name = f"holdout-{background}-{seed}" + ("-clean" if n == 0 else "")
    return Scene(name, background, buf.tobytes(), suffix, w, h, marks, conditions)


def make_suite(n_marked: int = len(SEEDS), n_clean: int = len(CLEAN_SEEDS)) -> list[Scene]:
    """The first N_MARKED of SEEDS and N_CLEAN of CLEAN_SEEDS, per background."""
    if n_marked > len(SEEDS) or n_clean > len(CLEAN_SEEDS):
        raise ValueError(f"the held-out set has {len(SEEDS)} marked and {len(CLEAN_SEEDS)} clean seeds")
    scenes = []
    for background in BACKGROUNDS:
        scenes += [make_scene(seed, background) for seed in SEEDS[:n_marked]]
        scenes += [make_scene(seed, background, n_marks=0) for seed in CLEAN_SEEDS[:n_clean]]
    return scenes
