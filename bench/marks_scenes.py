"""Synthetic marked screenshots with ground truth, for bench/marks.py and tests/test_marks*.py.

A scene is a background (a procedural photo, a matplotlib chart, or a rendered UI page with red buttons, red
text, error banners, progress bars, thin red table borders and pink error boxes) with marks drawn on it the
way screenshot tools draw them: outlined rectangles and ellipses, arrows with filled or open heads, text
labels next to a box, semi-transparent highlighter bands. Each mark is rendered as its own coverage layer
(optionally anti-aliased by 4x supersampling, optionally with a blurred drop shadow) and composited; its
ground-truth box is the outer bound of that layer. The whole image is then optionally rescaled (0.5-1.5x)
and encoded as PNG or JPEG (quality 75-95), which is what a user uploads.

Nothing here knows how the detector works: parameters are drawn from wide ranges of what users and tools do.
Everything is deterministic given the seed.
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

BACKGROUNDS = ("photo", "chart", "ui")
KINDS = ("rectangle", "ellipse", "arrow", "highlight", "text")

Box = tuple[float, float, float, float]
Point = tuple[float, float]

MARK_COLORS: dict[str, list[str]] = {
    "red": ["#ff0000", "#ff0000", "#ff0000", "#e81123", "#ff3b30", "#f00a0a", "#d40000", "#ff2020"],
    "blue": ["#0000ff", "#0078d7", "#1e90ff", "#0050ef", "#2040ff"],
    "green": ["#00c000", "#00ff00", "#00a650", "#22b14c", "#00d000"],
    "magenta": ["#ff00ff", "#e040fb", "#d000d0", "#ff40ff"],
    "orange": ["#ff8000", "#ffa500", "#ff7f27", "#ff9000"],
}
COLOR_WEIGHTS = {"red": 0.5, "blue": 0.14, "green": 0.12, "magenta": 0.1, "orange": 0.14}
HIGHLIGHT_COLORS = ["#ffff00"] * 6 + ["#00ff00", "#ff69b4", "#ffa500", "#00ffff", "#7fff00", "#ff80ff"]
LABEL_WORDS = [
    "1", "2", "3", "A", "B", "Bug", "Click here", "Wrong value", "Why?", "Fix this", "See note", "Here!",
    "Should be 42", "Missing", "Error here", "Step 3", "TODO", "new", "typo", "too slow", "this one",
    "Save", "peak", "drop?", "OK", "not aligned", "2x", "check",
]  # fmt: skip
UI_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "settings",
    "account",
    "billing",
    "invoice",
    "total",
    "amount",
    "status",
    "pending",
    "approved",
    "customer",
    "order",
    "report",
    "export",
    "import",
    "user",
    "profile",
    "password",
    "security",
    "email",
    "notifications",
    "dashboard",
    "project",
    "team",
    "members",
    "revenue",
    "growth",
    "monthly",
    "weekly",
    "update",
    "delete",
    "save",
    "cancel",
    "submit",
    "search",
    "filter",
    "results",
    "page",
    "next",
    "previous",
    "loading",
    "error",
    "warning",
    "success",
]
UI_REDS = [(220, 53, 69), (244, 67, 54), (211, 47, 47), (229, 57, 53), (255, 0, 0), (200, 35, 51), (255, 59, 48)]
UI_PINKS = [(248, 215, 218), (253, 236, 234), (255, 235, 238), (252, 228, 228), (255, 205, 210), (250, 219, 216)]
CHART_REDS = ["red", "#d62728", "#e41a1c", "crimson", "#ff0000", "#c0392b", "#f44336"]


def hex_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@dataclass(frozen=True)
class TruthMark:
    """One drawn mark: its kind, outer box [x0, y0, x1, y1) in final-image pixels, colour, arrow ends, tags."""

    kind: str
    bbox: Box
    color: str
    tail: Point | None = None
    head: Point | None = None
    tags: tuple[str, ...] = ()


@dataclass
class Scene:
    """An encoded image as a user would upload it, with the marks drawn on it."""

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
        """Write the encoded file to DIRECTORY/<name><suffix> and return its path."""
        path = directory / f"{self.name}{self.suffix}"
        path.write_bytes(self.data)
        return path


# --------------------------------------------------------------------------------------------- fonts


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (bold) at SIZE px, or Pillow's built-in scalable font when DejaVu is not installed."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for directory in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu"):
        path = Path(directory) / name
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(str(rng.choice(UI_WORDS)) for _ in range(n)).capitalize()


def _text_box(draw: ImageDraw.ImageDraw, xy: Point, text: str, fnt: Any) -> Box:
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=fnt)
    return float(x0), float(y0), float(x1), float(y1)


# --------------------------------------------------------------------------------------------- backgrounds


@dataclass
class Target:
    """Something on a background worth marking: its box, what it is, and whether it is red-like."""

    box: Box
    what: str
    red: bool = False


def photo_background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[Target]]:
    """A photo-like image: smooth colour field, soft blobs, texture, shaded red and other objects, noise."""
    grid = rng.uniform(15, 240, (int(rng.integers(2, 6)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    grey = grid.mean(axis=2, keepdims=True)
    grid = grey + (grid - grey) * rng.uniform(0.3, 1.0)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(4, 14))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.3) * min(w, h)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None] * rng.uniform(0.4, 0.9)
        img = img * (1 - g) + rng.uniform(0, 255, 3).astype(np.float32) * g
    for scale in (4, 16, 48):
        small = rng.normal(0, 1, (h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] * rng.uniform(2, 12)
    targets: list[Target] = []
    for i in range(int(rng.integers(1, 5))):
        red = i == 0 or rng.random() < 0.6
        color = (
            np.array([rng.uniform(160, 255), rng.uniform(0, 70), rng.uniform(0, 70)], np.float32)
            if red
            else rng.uniform(0, 255, 3).astype(np.float32)
        )
        mask = np.zeros((h, w), np.uint8)
        ow, oh = rng.uniform(0.06, 0.3) * w, rng.uniform(0.06, 0.3) * h
        cx, cy = rng.uniform(ow / 2, w - ow / 2), rng.uniform(oh / 2, h - oh / 2)
        shape = rng.choice(["ellipse", "polygon", "rounded", "stripes", "flowers"])
        if shape == "ellipse":
            cv2.ellipse(mask, (int(cx), int(cy)), (int(ow / 2), int(oh / 2)), float(rng.uniform(0, 180)), 0, 360,
                        255, -1, cv2.LINE_AA)  # fmt: skip
        elif shape == "polygon":
            n = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            pts = np.stack([cx + np.cos(ang) * ow / 2, cy + np.sin(ang) * oh / 2], axis=1).astype(np.int32)
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
        elif shape == "rounded":
            r = int(min(ow, oh) * 0.2)
            x0, y0, x1, y1 = int(cx - ow / 2), int(cy - oh / 2), int(cx + ow / 2), int(cy + oh / 2)
            cv2.rectangle(mask, (x0 + r, y0), (x1 - r, y1), 255, -1)
            cv2.rectangle(mask, (x0, y0 + r), (x1, y1 - r), 255, -1)
            for px, py in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
                cv2.circle(mask, (px, py), r, 255, -1, cv2.LINE_AA)
        elif shape == "stripes":
            period = rng.uniform(10, 30)
            band = ((xx - cx + (yy - cy) * rng.uniform(-0.5, 0.5)) % period) < period / 2
            box = (np.abs(xx - cx) < ow / 2) & (np.abs(yy - cy) < oh / 2)
            mask[band & box] = 255
        else:
            for _ in range(int(rng.integers(5, 25))):
                px, py = rng.normal(cx, ow / 4), rng.normal(cy, oh / 4)
                cv2.circle(mask, (int(px), int(py)), int(rng.uniform(3, 9)), 255, -1, cv2.LINE_AA)
        if rng.random() < 0.3:  # a thin red wire or stem: a curved line the colour of a mark
            t = np.linspace(0, 1, 40)
            px = cx + (t - 0.5) * ow * 2 + np.sin(t * 6) * 20
            py = cy + oh / 2 + np.cos(t * 4) * 15 + t * 30
            cv2.polylines(mask, [np.stack([px, py], 1).astype(np.int32)], False, 255, int(rng.integers(2, 5)),
                          cv2.LINE_AA)  # fmt: skip
        a = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.7)[..., None]
        shade = 0.65 + 0.5 * ((xx - cx) * rng.uniform(-1, 1) / max(ow, 1) + (yy - cy) / max(oh, 1) * 0.5)
        body = color[None, None, :] * np.clip(shade, 0.4, 1.15)[..., None]
        img = img * (1 - a) + body * a
        ys, xs = np.nonzero(mask)
        if len(xs):
            targets.append(Target((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                                  "object", red))  # fmt: skip
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    img += rng.normal(0, rng.uniform(1, 5), img.shape).astype(np.float32)
    return np.clip(img, 0, 255), targets


def chart_background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[Target]]:
    """A matplotlib chart with a red series (line, bars, area, scatter or steps) among others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = str(rng.choice(["default", "ggplot", "bmh", "seaborn-v0_8-whitegrid", "fivethirtyeight", "classic"]))
    targets: list[Target] = []
    with plt.style.context(style):
        dpi = 100
        fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_subplot()
        n = int(rng.integers(12, 60))
        x = np.arange(n)
        kind = str(rng.choice(["line", "line", "bar", "area", "scatter", "step", "mixed"]))
        red = str(rng.choice(CHART_REDS))
        others = ["#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f", "#9467bd", "#17becf", "#0000ff", "#008000"]
        series = []
        for i in range(int(rng.integers(1, 4))):
            y = np.cumsum(rng.normal(0, 1, n)) + rng.uniform(5, 20)
            color = red if i == 0 else others[int(rng.integers(len(others)))]
            series.append((y, color))
        lw = float(rng.uniform(1.2, 3.5))
        for i, (y, color) in enumerate(series):
            label = f"series {i + 1}"
            if kind == "bar" and i == 0:
                ax.bar(x + 0.2 * i, y, width=0.6, color=color, label=label)
            elif kind == "area" and i == 0:
                ax.fill_between(x, y, alpha=float(rng.uniform(0.2, 0.5)), color=color)
                ax.plot(x, y, color=color, lw=lw, label=label)
            elif kind == "scatter" and i == 0:
                ax.scatter(x, y, color=color, s=float(rng.uniform(10, 60)), label=label)
            elif kind == "step":
                ax.step(x, y, color=color, lw=lw, label=label)
            else:
                marker = str(rng.choice(["", "", "o", "s", "."]))
                ax.plot(x, y, color=color, lw=lw, marker=marker or None, ms=float(rng.uniform(3, 7)), label=label)
        if kind == "mixed" or rng.random() < 0.3:
            ax.axhline(float(np.mean(series[0][0])), color=red, lw=float(rng.uniform(1, 2.5)),
                       ls=str(rng.choice(["-", "--", ":"])))  # fmt: skip
        if rng.random() < 0.2:
            ax.axvspan(n * 0.3, n * 0.5, color=red, alpha=0.15)
        title_kw = {"color": red} if rng.random() < 0.3 else {}
        ax.set_title(_words(rng, int(rng.integers(2, 6))), **title_kw)
        ax.set_xlabel(_words(rng, 2))
        ax.set_ylabel(_words(rng, 1))
        if rng.random() < 0.7:
            ax.legend(loc=str(rng.choice(["upper left", "upper right", "lower left", "best"])))
        if rng.random() < 0.3:
            ax.text(0.02, 0.02, "note: " + _words(rng, 3), color=red, transform=ax.transAxes)
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32)  # type: ignore[attr-defined]
        y0 = series[0][0]
        pts = ax.transData.transform(np.stack([x, y0], axis=1))
        pts[:, 1] = img.shape[0] - pts[:, 1]
        for j in (int(np.argmax(y0)), int(np.argmin(y0)), int(rng.integers(n))):
            px, py = pts[j]
            targets.append(Target((px - 6, py - 6, px + 6, py + 6), "point", True))
        j0 = int(rng.integers(0, max(1, n - 6)))
        seg = pts[j0 : j0 + int(rng.integers(3, 7))]
        targets.append(Target((seg[:, 0].min(), seg[:, 1].min(), seg[:, 0].max(), seg[:, 1].max()), "range", True))
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        title = ax.title.get_window_extent(renderer)
        targets.append(Target((title.x0, h - title.y1, title.x1, h - title.y0), "text", False))
        plt.close(fig)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if img.shape[:2] != (h, w) else img
    return img, targets


def ui_background(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[Target]]:
    """A rendered web-app page: navbar, sidebar, text, forms, buttons, banners, progress bars, tables, errors."""
    dark = rng.random() < 0.15
    bg = (30, 30, 34) if dark else [(255, 255, 255), (245, 246, 248), (250, 250, 250)][int(rng.integers(3))]
    fg = (220, 220, 220) if dark else (33, 37, 41)
    muted = (150, 150, 150) if dark else (108, 117, 125)
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    targets: list[Target] = []
    base = int(rng.integers(12, 17))
    f, fb, fs = font(base), font(base, bold=True), font(base + 2)
    nav_h = int(rng.integers(44, 64))
    nav = [(33, 37, 41), (13, 110, 253), (0, 120, 212), (255, 255, 255), (103, 58, 183)][int(rng.integers(5))]
    d.rectangle((0, 0, w, nav_h), fill=nav)
    if nav == (255, 255, 255):
        d.line((0, nav_h, w, nav_h), fill=(222, 226, 230))
    nav_fg = (33, 37, 41) if nav == (255, 255, 255) else (255, 255, 255)
    d.text((20, nav_h / 2), "Acme " + _words(rng, 1), font=font(base + 4, True), fill=nav_fg, anchor="lm")
    x = 220
    for _ in range(int(rng.integers(2, 6))):
        word = _words(rng, 1)
        d.text((x, nav_h / 2), word, font=f, fill=nav_fg, anchor="lm")
        x += int(d.textlength(word, font=f)) + 28
    if rng.random() < 0.5:  # notification badge in the navbar
        bx = w - 60
        d.ellipse((bx, nav_h / 2 - 9, bx + 18, nav_h / 2 + 9), fill=UI_REDS[int(rng.integers(len(UI_REDS)))])
        d.text((bx + 9, nav_h / 2), str(rng.integers(1, 9)), font=font(11, True), fill="white", anchor="mm")
    left = 24
    if rng.random() < 0.6:
        side_w = int(rng.integers(170, 260))
        d.rectangle((0, nav_h, side_w, h), fill=(40, 40, 46) if dark else (248, 249, 250))
        yy = nav_h + 20
        active = int(rng.integers(0, 6))
        for i in range(int(rng.integers(4, 10))):
            if i == active:
                d.rectangle((8, yy - 6, side_w - 8, yy + base + 8), fill=(13, 110, 253))
            d.text((24, yy), _words(rng, 1), font=f, fill="white" if i == active else fg)
            yy += base + 20
        left = side_w + 28
    y = nav_h + 24
    right = w - 28
    blocks = ["heading", "para", "para", "form", "buttons", "banner", "progress", "table", "errorbox", "badges",
              "links", "redtext", "card"]  # fmt: skip
    while y < h - 60:
        block = blocks[int(rng.integers(len(blocks)))]
        red = UI_REDS[int(rng.integers(len(UI_REDS)))]
        pink = UI_PINKS[int(rng.integers(len(UI_PINKS)))]
        if block == "heading":
            hf = font(base + int(rng.integers(6, 14)), True)
            text = _words(rng, int(rng.integers(2, 5)))
            targets.append(Target(_text_box(d, (left, y), text, hf), "text"))
            d.text((left, y), text, font=hf, fill=fg)
            y += base + 30
        elif block == "para":
            for _ in range(int(rng.integers(2, 6))):
                text = _words(rng, int(rng.integers(5, 14)))
                while d.textlength(text, font=f) > right - left and " " in text:
                    text = text.rsplit(" ", 1)[0]
                targets.append(Target(_text_box(d, (left, y), text, f), "text"))
                d.text((left, y), text, font=f, fill=fg)
                y += int(base * 1.6)
            y += 12
        elif block == "form":
            d.text((left, y), _words(rng, 2), font=fb, fill=fg)
            y += base + 8
            iw = int(rng.integers(200, 420))
            invalid = rng.random() < 0.4
            d.rounded_rectangle((left, y, left + iw, y + 34), radius=4, fill=bg,
                                outline=(206, 212, 218) if not invalid else (220, 53, 69))  # fmt: skip
            d.text((left + 10, y + 17), _words(rng, 2), font=f, fill=muted, anchor="lm")
            targets.append(Target((left, y, left + iw, y + 34), "input", invalid))
            y += 40
            if invalid:
                text = "This field " + _words(rng, 2).lower()
                targets.append(Target(_text_box(d, (left, y), text, f), "text", True))
                d.text((left, y), text, font=f, fill=red)
                y += base + 6
            y += 14
        elif block == "buttons":
            x = left
            for _ in range(int(rng.integers(1, 5))):
                text = _words(rng, 1)
                tw = int(d.textlength(text, font=f))
                bw, bh = tw + 28, int(rng.integers(30, 44))
                style = int(rng.integers(5))
                fill = [red, (13, 110, 253), (25, 135, 84), (108, 117, 125), None][style]
                outline = red if style == 4 else None
                d.rounded_rectangle((x, y, x + bw, y + bh), radius=int(rng.integers(2, 9)), fill=fill,
                                    outline=outline, width=1)  # fmt: skip
                d.text((x + bw / 2, y + bh / 2), text, font=f, fill="white" if fill else red, anchor="mm")
                targets.append(Target((x, y, x + bw, y + bh), "button", style in (0, 4)))
                x += bw + 12
                if x > right - 120:
                    break
            y += 60
        elif block == "banner":
            bh = int(rng.integers(36, 58))
            if rng.random() < 0.5:
                d.rectangle((left, y, right, y + bh), fill=red)
                d.text((left + 16, y + bh / 2), "Error: " + _words(rng, 5).lower(), font=fb, fill="white",
                       anchor="lm")  # fmt: skip
            else:
                d.rounded_rectangle((left, y, right, y + bh), radius=4, fill=pink, outline=(245, 198, 203))
                d.text((left + 16, y + bh / 2), _words(rng, 6), font=f, fill=(114, 28, 36), anchor="lm")
            targets.append(Target((left, y, right, y + bh), "banner", True))
            y += bh + 18
        elif block == "progress":
            for _ in range(int(rng.integers(1, 4))):
                d.text((left, y), _words(rng, 2), font=f, fill=fg)
                y += base + 6
                ph = int(rng.integers(6, 20))
                pw = int((right - left) * rng.uniform(0.4, 1.0))
                fill = [red, red, (25, 135, 84), (13, 110, 253), (253, 126, 20)][int(rng.integers(5))]
                rr = ph // 2 if rng.random() < 0.5 else 0
                d.rounded_rectangle((left, y, left + pw, y + ph), radius=rr, fill=(233, 236, 239))
                d.rounded_rectangle((left, y, left + int(pw * rng.uniform(0.1, 0.95)), y + ph), radius=rr,
                                    fill=fill)  # fmt: skip
                targets.append(Target((left, y, left + pw, y + ph), "progress", fill == red))
                y += ph + 14
            y += 8
        elif block == "table":
            cols, rows = int(rng.integers(3, 7)), int(rng.integers(3, 9))
            cw = [int(rng.integers(60, 160)) for _ in range(cols)]
            ch = int(rng.integers(24, 34))
            tw = min(sum(cw), right - left)
            line = red if rng.random() < 0.65 else (200, 200, 200)
            lw = 1 if rng.random() < 0.8 else 2
            if rng.random() < 0.4:
                d.rectangle((left, y, left + tw, y + ch), fill=pink if line == red else (233, 236, 239))
            xs = [left]
            for c in cw:
                xs.append(min(xs[-1] + c, left + tw))
            for r in range(rows + 1):
                d.line((left, y + r * ch, left + tw, y + r * ch), fill=line, width=lw)
            for xx in xs:
                d.line((xx, y, xx, y + rows * ch), fill=line, width=lw)
            for r in range(rows):
                for c in range(cols):
                    if xs[c + 1] - xs[c] > 30:
                        word = _words(rng, 1)[: max(1, (xs[c + 1] - xs[c] - 12) // (base // 2 + 2))]
                        d.text((xs[c] + 6, y + r * ch + ch / 2), word, font=fb if r == 0 else f, fill=fg, anchor="lm")
            targets.append(Target((left, y, left + tw, y + rows * ch), "table", line == red))
            y += rows * ch + 24
        elif block == "errorbox":
            bh = int(rng.integers(50, 110))
            bw = int((right - left) * rng.uniform(0.4, 1.0))
            bwid = 1 if rng.random() < 0.7 else 2
            if rng.random() < 0.25:  # accent bar on the left
                d.rectangle((left, y, left + bw, y + bh), fill=pink)
                d.rectangle((left, y, left + 4, y + bh), fill=red)
            else:
                d.rounded_rectangle((left, y, left + bw, y + bh), radius=int(rng.integers(0, 7)), fill=pink,
                                    outline=red, width=bwid)  # fmt: skip
            d.text((left + 14, y + 10), "Error", font=fb, fill=red)
            d.text((left + 14, y + 14 + base), _words(rng, 6), font=f, fill=(114, 28, 36))
            targets.append(Target((left, y, left + bw, y + bh), "errorbox", True))
            y += bh + 18
        elif block == "badges":
            x = left
            for _ in range(int(rng.integers(2, 6))):
                text = str(rng.integers(1, 99))
                tw = int(d.textlength(text, font=font(11, True)))
                d.rounded_rectangle((x, y, x + tw + 14, y + 20), radius=10, fill=red)
                d.text((x + 7 + tw / 2, y + 10), text, font=font(11, True), fill="white", anchor="mm")
                label = _words(rng, 1)
                d.text((x + tw + 20, y + 10), label, font=f, fill=fg, anchor="lm")
                targets.append(Target((x, y, x + tw + 14, y + 20), "badge", True))
                x += tw + 40 + int(d.textlength(label, font=f))
                if x > right - 80:
                    break
            y += 40
        elif block == "links":
            for _ in range(int(rng.integers(1, 4))):
                text = _words(rng, int(rng.integers(2, 5)))
                box = _text_box(d, (left, y), text, f)
                d.text((left, y), text, font=f, fill=(13, 110, 253))
                d.line((box[0], box[3] + 1, box[2], box[3] + 1), fill=(13, 110, 253))
                targets.append(Target(box, "text"))
                y += base + 12
        elif block == "redtext":
            for _ in range(int(rng.integers(1, 3))):
                text = _words(rng, int(rng.integers(3, 8)))
                rf = font(base + int(rng.integers(0, 8)), bool(rng.random() < 0.4))
                box = _text_box(d, (left, y), text, rf)
                d.text((left, y), text, font=rf, fill=red)
                targets.append(Target(box, "text", True))
                y += int(box[3] - box[1]) + 14
        else:  # card
            bh = int(rng.integers(60, 140))
            bw = int((right - left) * rng.uniform(0.3, 0.7))
            d.rounded_rectangle((left, y, left + bw, y + bh), radius=6, outline=(222, 226, 230), fill=bg)
            d.text((left + 14, y + 12), _words(rng, 3), font=fs, fill=fg)
            d.text((left + 14, y + 40), _words(rng, 4), font=f, fill=muted)
            targets.append(Target((left, y, left + bw, y + bh), "card"))
            y += bh + 18
    return np.asarray(im, dtype=np.float32), targets


# --------------------------------------------------------------------------------------------- marks


def _coverage(h: int, w: int, roi: Box, ss: int, draw: Any) -> np.ndarray:
    """Render DRAW(draw_ctx, to_layer, ss) into an (h, w) float coverage layer, supersampled SS times."""
    x0, y0 = max(0, math.floor(roi[0])), max(0, math.floor(roi[1]))
    x1, y1 = min(w, math.ceil(roi[2])), min(h, math.ceil(roi[3]))
    out = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    layer = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    ctx = ImageDraw.Draw(layer)
    if ss == 1:
        ctx.fontmode = "1"

    def to_layer(px: float, py: float) -> tuple[float, float]:
        return (px - x0) * ss, (py - y0) * ss

    draw(ctx, to_layer, ss)
    if ss > 1:
        layer = layer.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
    out[y0:y1, x0:x1] = np.asarray(layer, dtype=np.float32) / 255
    return out


def _alpha_box(alpha: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(alpha >= 0.3)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _rect_alpha(h: int, w: int, box: Box, width: int, ss: int, radius: float) -> np.ndarray:
    def draw(ctx: ImageDraw.ImageDraw, t: Any, s: int) -> None:
        (a, b), (c, e) = t(box[0], box[1]), t(box[2], box[3])
        if radius > 0:
            ctx.rounded_rectangle((a, b, c - 1, e - 1), radius=radius * s, outline=255, width=width * s)
        else:
            ctx.rectangle((a, b, c - 1, e - 1), outline=255, width=width * s)

    return _coverage(h, w, (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), ss, draw)


def _ellipse_alpha(h: int, w: int, box: Box, width: int, ss: int, angle: float) -> np.ndarray:
    if angle == 0:

        def draw(ctx: ImageDraw.ImageDraw, t: Any, s: int) -> None:
            (a, b), (c, e) = t(box[0], box[1]), t(box[2], box[3])
            ctx.ellipse((a, b, c - 1, e - 1), outline=255, width=width * s)

        return _coverage(h, w, (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), ss, draw)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = (box[2] - box[0]) / 2 - width / 2, (box[3] - box[1]) / 2 - width / 2
    r = max(ax, ay) + width + 2

    def draw_rot(ctx: ImageDraw.ImageDraw, t: Any, s: int) -> None:
        layer: Image.Image = ctx._image  # type: ignore[attr-defined]
        arr = np.zeros((layer.height, layer.width), np.uint8)
        c = t(cx, cy)
        cv2.ellipse(arr, (round(c[0]), round(c[1])), (round(ax * s), round(ay * s)), angle, 0, 360, 255,
                    max(1, width * s), cv2.LINE_8)  # fmt: skip
        layer.paste(Image.fromarray(arr), (0, 0))

    return _coverage(h, w, (cx - r, cy - r, cx + r, cy + r), ss, draw_rot)


def _arrow_alpha(h: int, w: int, tail: Point, head: Point, width: int, ss: int, style: str) -> np.ndarray:
    dx, dy = head[0] - tail[0], head[1] - tail[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    head_len = width * 3.2 + 7
    head_w = width * 2.2 + 5

    def draw(ctx: ImageDraw.ImageDraw, t: Any, s: int) -> None:
        if style == "filled":
            bx, by = head[0] - ux * head_len, head[1] - uy * head_len
            ctx.line((*t(*tail), *t(bx + ux * 2, by + uy * 2)), fill=255, width=width * s)
            pts = [head, (bx - uy * head_w, by + ux * head_w), (bx + uy * head_w, by - ux * head_w)]
            ctx.polygon([t(*p) for p in pts], fill=255)
        else:
            ctx.line((*t(*tail), *t(*head)), fill=255, width=width * s)
            for sign in (-1, 1):
                bx = head[0] - ux * head_len + sign * uy * head_w
                by = head[1] - uy * head_len - sign * ux * head_w
                ctx.line((*t(*head), *t(bx, by)), fill=255, width=width * s)
                r = width * s / 2
                hx, hy = t(*head)
                ctx.ellipse((hx - r, hy - r, hx + r, hy + r), fill=255)

    pad = head_len + head_w + width
    roi = (min(tail[0], head[0]) - pad, min(tail[1], head[1]) - pad, max(tail[0], head[0]) + pad,
           max(tail[1], head[1]) + pad)  # fmt: skip
    return _coverage(h, w, roi, ss, draw)


def _text_alpha(h: int, w: int, xy: Point, text: str, size: int, bold: bool, ss: int) -> np.ndarray:
    fnt = font(size * ss, bold)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    tb = probe.textbbox((0, 0), text, font=fnt)
    roi = (xy[0] - 2, xy[1] - 2, xy[0] + tb[2] / ss + 4, xy[1] + tb[3] / ss + 4)

    def draw(ctx: ImageDraw.ImageDraw, t: Any, s: int) -> None:
        ctx.text(t(*xy), text, font=fnt, fill=255)

    return _coverage(h, w, roi, ss, draw)


def _composite(img: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    a = alpha[..., None]
    return img * (1 - a) + np.asarray(color, np.float32) * a


def _shadow(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dx, dy = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    s = cv2.GaussianBlur(alpha, (0, 0), float(rng.uniform(1.0, 3.0)))
    s = np.roll(np.roll(s, dy, axis=0), dx, axis=1) * rng.uniform(0.3, 0.6)
    return img * (1 - s[..., None])


def _overlaps(box: Box, others: list[Box], gap: float) -> bool:
    return any(
        box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap for o in others
    )


def _clip(box: Box, w: int, h: int) -> Box:
    return max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])


def _pick_color(rng: np.random.Generator) -> str:
    names = list(COLOR_WEIGHTS)
    family = names[int(rng.choice(len(names), p=np.array([COLOR_WEIGHTS[n] for n in names])))]
    options = MARK_COLORS[family]
    return options[int(rng.integers(len(options)))]


@dataclass
class _Canvas:
    img: np.ndarray
    rng: np.random.Generator
    marks: list[TruthMark] = field(default_factory=list)
    taken: list[Box] = field(default_factory=list)

    @property
    def h(self) -> int:
        return int(self.img.shape[0])

    @property
    def w(self) -> int:
        return int(self.img.shape[1])

    def paint(self, alpha: np.ndarray, color: str, shadow: bool) -> None:
        if shadow:
            self.img = _shadow(self.img, alpha, self.rng)
        self.img = _composite(self.img, alpha, hex_rgb(color))


def _stroke_style(rng: np.random.Generator) -> tuple[int, int, bool]:
    width = int(rng.integers(2, 7))
    ss = 4 if rng.random() < 0.6 else 1
    return width, ss, bool(rng.random() < 0.3)


def _box_around(rng: np.random.Generator, target: Target, w: int, h: int, kind: str) -> Box:
    x0, y0, x1, y1 = target.box
    if kind == "ellipse":  # an ellipse must be larger than the box to enclose it
        cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        k = rng.uniform(1.15, 1.6)
        hw, hh = hw * k + rng.uniform(4, 14), hh * k + rng.uniform(4, 14)
        return cx - hw, cy - hh, cx + hw, cy + hh
    m = rng.uniform(-3, 14) if target.red else rng.uniform(2, 14)
    return x0 - m, y0 - m * rng.uniform(0.5, 1), x1 + m, y1 + m * rng.uniform(0.5, 1)


def _random_box(rng: np.random.Generator, w: int, h: int, kind: str) -> Box:
    bw = rng.uniform(24, min(600, w * 0.6))
    aspect = math.exp(rng.uniform(-1.2, 2.1 if kind == "ellipse" else 1.8))
    bh = float(np.clip(bw / aspect, 18, h * 0.6))
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return x0, y0, x0 + bw, y0 + bh


def _to_edge(rng: np.random.Generator, box: Box, w: int, h: int) -> Box:
    """Move BOX so that it touches or crosses one image border."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    side = int(rng.integers(4))
    out = rng.uniform(0, 0.3) if rng.random() < 0.5 else 0.0
    if side == 0:
        x0 = -bw * out
        return x0, box[1], x0 + bw, box[3]
    if side == 1:
        x0 = w - bw * (1 - out)
        return x0, box[1], x0 + bw, box[3]
    if side == 2:
        y0 = -bh * out
        return box[0], y0, box[2], y0 + bh
    y0 = h - bh * (1 - out)
    return box[0], y0, box[2], y0 + bh


def _add_label(cv: _Canvas, anchor: Box, color: str) -> None:
    rng = cv.rng
    text = LABEL_WORDS[int(rng.integers(len(LABEL_WORDS)))]
    size = int(rng.integers(13, 29))
    bold = bool(rng.random() < 0.5)
    ss = 4 if rng.random() < 0.8 else 1
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    tb = probe.textbbox((0, 0), text, font=font(size, bold))
    tw, th = tb[2], tb[3]
    gap = rng.uniform(4, 16)
    where = int(rng.integers(4))
    if where == 0:
        xy = (anchor[2] + gap, anchor[1] + rng.uniform(0, max(1, anchor[3] - anchor[1] - th)))
    elif where == 1:
        xy = (anchor[0] - gap - tw, anchor[1] + rng.uniform(0, max(1, anchor[3] - anchor[1] - th)))
    elif where == 2:
        xy = (anchor[0] + rng.uniform(0, max(1, anchor[2] - anchor[0] - tw)), anchor[1] - gap - th)
    else:
        xy = (anchor[0] + rng.uniform(0, max(1, anchor[2] - anchor[0] - tw)), anchor[3] + gap - tb[1])
    alpha = _text_alpha(cv.h, cv.w, xy, text, size, bold, ss)
    box = _alpha_box(alpha)
    if box is None or box[0] < 1 or box[1] < 1 or box[2] > cv.w - 1 or box[3] > cv.h - 1:
        return
    if _overlaps(box, [b for b in cv.taken if b != anchor], 6):
        return
    cv.paint(alpha, color, shadow=bool(rng.random() < 0.15))
    cv.taken.append(box)
    cv.marks.append(TruthMark("text", box, color, tags=("label",)))


def _add_mark(cv: _Canvas, kind: str, targets: list[Target], background: str) -> None:
    rng = cv.rng
    h, w = cv.h, cv.w
    color = _pick_color(rng)
    width, ss, shadow = _stroke_style(rng)
    for _ in range(12):
        tags: list[str] = []
        target = targets[int(rng.integers(len(targets)))] if targets and rng.random() < 0.8 else None
        if kind in ("rectangle", "ellipse"):
            box = _box_around(rng, target, w, h, kind) if target else _random_box(rng, w, h, kind)
            if target and target.red and color in MARK_COLORS["red"]:
                tags.append("near-same-colour")
            if rng.random() < 0.12:
                box = _to_edge(rng, box, w, h)
                tags.append("edge")
            if min(box[2] - box[0], box[3] - box[1]) < 3 * width + 8 or box[2] - box[0] > w * 0.95:
                continue
            if kind == "rectangle":
                radius = float(rng.uniform(3, 10)) if rng.random() < 0.15 else 0.0
                alpha = _rect_alpha(h, w, box, width, ss, radius)
            else:
                angle = float(rng.uniform(-30, 30)) if rng.random() < 0.1 else 0.0
                if max(box[2] - box[0], box[3] - box[1]) > 4 * min(box[2] - box[0], box[3] - box[1]):
                    tags.append("thin-ellipse")
                alpha = _ellipse_alpha(h, w, box, width, ss, angle)
            truth = _alpha_box(alpha)
            if truth is None or _overlaps(truth, cv.taken, 4):
                continue
            area = (box[2] - box[0]) * (box[3] - box[1])
            if (truth[2] - truth[0]) * (truth[3] - truth[1]) < 0.6 * area or min(
                truth[2] - truth[0], truth[3] - truth[1]
            ) < 12:
                continue  # mostly outside the image: nobody marks what they cannot see
            cv.paint(alpha, color, shadow)
            cv.taken.append(truth)
            cv.marks.append(TruthMark(kind, truth, color, tags=(*tags, f"w{width}")))
            if rng.random() < 0.3:
                _add_label(cv, truth, color)
            return
        if kind == "arrow":
            length = rng.uniform(50, 320)
            ang = rng.uniform(0, 2 * math.pi)
            if target:
                tb = target.box
                hx = float(np.clip(rng.uniform(tb[0], tb[2]), 0, w))
                hy = float(np.clip(rng.uniform(tb[1], tb[3]), 0, h))
                back = rng.uniform(-2, 10)
                hx, hy = hx - math.cos(ang) * back, hy - math.sin(ang) * back
                if target.red and color in MARK_COLORS["red"]:
                    tags.append("near-same-colour")
            else:
                hx, hy = rng.uniform(40, w - 40), rng.uniform(40, h - 40)
            tail = (hx - math.cos(ang) * length, hy - math.sin(ang) * length)
            if not (4 < tail[0] < w - 4 and 4 < tail[1] < h - 4 and 2 < hx < w - 2 and 2 < hy < h - 2):
                continue
            style = "filled" if rng.random() < 0.7 else "open"
            alpha = _arrow_alpha(h, w, tail, (hx, hy), width, ss, style)
            truth = _alpha_box(alpha)
            if truth is None or _overlaps(truth, cv.taken, 4):
                continue
            cv.paint(alpha, color, shadow)
            cv.taken.append(truth)
            cv.marks.append(TruthMark("arrow", truth, color, tail=tail, head=(hx, hy),
                                      tags=(*tags, style, f"w{width}")))  # fmt: skip
            if rng.random() < 0.2:
                tw = 60.0
                _add_label(cv, (tail[0] - tw / 2, tail[1] - 10, tail[0] + tw / 2, tail[1] + 10), color)
            return
        if kind == "highlight":
            # A highlighter is for text on a light page: it is invisible on dark pages and meaningless on photos.
            texts = [t for t in targets if t.what == "text" and t.box[2] - t.box[0] > 30]
            if not texts or float(np.median(cv.img)) < 100:
                return
            tb = texts[int(rng.integers(len(texts)))].box
            pad = rng.uniform(1, 6)
            x0 = tb[0] - pad + rng.uniform(-4, 4)
            x1 = tb[0] + (tb[2] - tb[0]) * rng.uniform(0.4, 1.0) + pad
            full = (x0, tb[1] - pad, x1, tb[3] + pad)
            box = _clip(full, w, h)
            if box[2] - box[0] < 20 or box[3] - box[1] < 0.8 * (full[3] - full[1]) or _overlaps(box, cv.taken, 4):
                continue
            hcolor = HIGHLIGHT_COLORS[int(rng.integers(len(HIGHLIGHT_COLORS)))]
            radius = (box[3] - box[1]) * rng.uniform(0, 0.4) if rng.random() < 0.3 else 0.0

            def draw(ctx: ImageDraw.ImageDraw, t: Any, s: int, box: Box = box, radius: float = radius) -> None:
                (a, b), (c, e) = t(box[0], box[1]), t(box[2], box[3])
                ctx.rounded_rectangle((a, b, c - 1, e - 1), radius=radius * s, fill=255)

            alpha = _coverage(h, w, box, 4, draw)
            truth = _alpha_box(alpha)
            if truth is None:
                continue
            rgb = np.asarray(hex_rgb(hcolor), np.float32)
            a = alpha[..., None]
            if rng.random() < 0.6:  # multiply, as a highlighter pen does
                cv.img = cv.img * (1 - a) + cv.img * (rgb / 255) * a
                blend = "multiply"
            else:
                op = rng.uniform(0.3, 0.55)
                cv.img = cv.img * (1 - a * op) + rgb * a * op
                blend = "alpha"
            cv.taken.append(truth)
            cv.marks.append(TruthMark("highlight", truth, hcolor, tags=(blend,)))
            return


def _encode(img: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict[str, Any]]:
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    if rng.random() < 0.6:
        quality = int(rng.integers(75, 96))
        subsampling = 0 if rng.random() < 0.2 else 2
        pil.save(buf, "JPEG", quality=quality, subsampling=subsampling)
        return buf.getvalue(), ".jpg", {"jpeg": quality, "subsampling": "4:4:4" if subsampling == 0 else "4:2:0"}
    pil.save(buf, "PNG", compress_level=1)
    return buf.getvalue(), ".png", {"jpeg": None}


SIZES = {"photo": ((800, 1600), (600, 1100)), "chart": ((700, 1400), (450, 900)), "ui": ((1000, 1920), (650, 1080))}
KIND_WEIGHTS = {"rectangle": 0.32, "ellipse": 0.28, "arrow": 0.25, "highlight": 0.15}


def make_background(seed: int, background: str) -> tuple[np.ndarray, list[Target]]:
    """The background of scene SEED: a float32 RGB array and the things on it worth marking."""
    rng = np.random.default_rng([seed, BACKGROUNDS.index(background)])
    (wl, wh), (hl, hh) = SIZES[background]
    w, h = int(rng.integers(wl, wh)), int(rng.integers(hl, hh))
    if background == "photo":
        return photo_background(rng, w, h)
    if background == "chart":
        return chart_background(rng, w, h)
    return ui_background(rng, w, h)


def make_scene(seed: int, background: str, n_marks: int | None = None, kinds: tuple[str, ...] | None = None,
               scale: float | None = None, encode: bool = True) -> Scene:  # fmt: skip
    """Scene SEED on BACKGROUND with N_MARKS marks (0: a clean image; None: 1-5) of the given KINDS.

    SCALE forces the final rescale factor (None: 40% of scenes are rescaled by 0.5-1.5x). ENCODE=False keeps
    the image lossless (PNG) whatever the seed says.
    """
    img, targets = make_background(seed, background)
    rng = np.random.default_rng([seed, BACKGROUNDS.index(background), 7])
    cv = _Canvas(img, rng)
    n = int(rng.integers(1, 6)) if n_marks is None else n_marks
    names = list(KIND_WEIGHTS)
    p = np.array([KIND_WEIGHTS[k] for k in names])
    if kinds is not None:
        p = np.array([KIND_WEIGHTS[k] if k in kinds else 0.0 for k in names])
    for _ in range(n):
        kind = names[int(rng.choice(len(names), p=p / p.sum()))]
        _add_mark(cv, kind, targets, background)
    if kinds is not None and "text" not in kinds:
        cv.marks = [m for m in cv.marks if m.kind != "text"]
    out = cv.img
    conditions: dict[str, Any] = {"scale": 1.0}
    s = scale if scale is not None else (float(rng.uniform(0.5, 1.5)) if rng.random() < 0.4 else 1.0)
    marks = cv.marks
    if s != 1.0:
        h, w = out.shape[:2]
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = [cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4][int(rng.integers(4))]
        out = cv2.resize(out, (nw, nh), interpolation=interp)
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
    if encode:
        data, suffix, enc = _encode(out, rng)
    else:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8)).save(buf, "PNG", compress_level=1)
        data, suffix, enc = buf.getvalue(), ".png", {"jpeg": None}
    conditions.update(enc)
    h, w = out.shape[:2]
    name = f"{background}-{seed:04d}" + ("-clean" if n == 0 else "")
    return Scene(name, background, data, suffix, int(w), int(h), marks, conditions)


def make_suite(n_marked: int, n_clean: int, seed: int = 0) -> list[Scene]:
    """N_MARKED marked and N_CLEAN clean scenes per background type."""
    scenes = []
    for background in BACKGROUNDS:
        for i in range(n_marked):
            scenes.append(make_scene(seed * 100_000 + i, background))
        for i in range(n_clean):
            scenes.append(make_scene(seed * 100_000 + 50_000 + i, background, n_marks=0))
    return scenes
