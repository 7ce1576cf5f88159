"""A realistic sample Label Studio project on disk, for the demo, the benchmark and the tests.

:func:`write_sample_project` writes::

    DIR/label_config.xml        caption + VQA + boxes (with marks and redact) + a scene choice + review
    DIR/export.json             a JSON export shaped like Label Studio 1.23's (snapshot style: full predictions)
    DIR/media/upload/1/...      uploaded images (``/data/upload/1/<8 hex>-<name>``)
    DIR/files/images/...        local-files storage (``/data/local-files/?d=images/<name>``)

The images are drawn here: coloured shapes on textured backgrounds (JPEG and PNG; EXIF-rotated, CMYK,
paletted-with-transparency, RGBA and grayscale ones), and "screenshots" with red rectangles drawn on them like
FastStone Capture marks. The export holds what real projects hold: accepted, rejected, unreviewed and cancelled
annotations, a task with only a prediction, a duplicate and a near-duplicate image, a missing and a truncated
image, a rotated box, a box reaching out of the image, an empty caption, full-width and CJK text.
:attr:`SampleProject.expected_drops` says which tasks the exporter must drop and why.

:class:`LabelStudioExport` builds task dicts in Label Studio's export shape and is what the tests use to write
their own exports.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from converters.boxes import Box, PercentRect

SHAPES = ("circle", "square", "triangle")
SAMPLE_LABEL_CONFIG = """<!-- labelloop sample project: a caption, questions, boxes (with screenshot marks and privacy
     redactions), a scene choice and a review verdict, all on one image. -->
<View>
  <Image name="image" value="$image" zoom="true"/>
  <Header value="Describe the image"/>
  <TextArea name="caption" toName="image" labelloopKind="caption" rows="2" maxSubmissions="1"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image" rows="2"/>
  <TextArea name="description" toName="image" rows="3" maxSubmissions="1"
            prompt="Describe what the red marks on this screenshot point out."/>
  <RectangleLabels name="objects" toName="image">
    <Label value="circle" background="#e6194b"/>
    <Label value="square" background="#3cb44b"/>
    <Label value="triangle" background="#4363d8"/>
    <Label value="marks" background="#f58231"/>
    <Label value="redact" background="#000000"/>
  </RectangleLabels>
  <Choices name="scene" toName="image" choice="single">
    <Choice value="shapes"/>
    <Choice value="screenshot"/>
  </Choices>
  <Choices name="review" toName="image" choice="single">
    <Choice value="accept"/>
    <Choice value="reject"/>
  </Choices>
</View>
"""
_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
_EPOCH = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


# --- drawing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrawnShape:
    """A shape drawn on a sample image: its kind, colour name and pixel box."""

    kind: str
    colour: str
    box: Box


def textured_background(width: int, height: int, rng: np.random.Generator, noise: float = 8.0) -> Image.Image:
    """A smooth two-colour gradient in a random direction with mild noise (photo-like, distinct per seed)."""
    a = rng.uniform(40, 230, 3)
    b = rng.uniform(40, 230, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xs * np.cos(angle) + ys * np.sin(angle)) / max(width, height)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    pixels = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    if noise:
        pixels += rng.normal(0, noise, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw_shapes(
    width: int, height: int, rng: np.random.Generator, count: int = 3
) -> tuple[Image.Image, list[DrawnShape]]:
    """A textured image with ``count`` filled shapes that do not overlap; returns the image and their boxes."""
    image = textured_background(width, height, rng)
    draw = ImageDraw.Draw(image)
    for _ in range(3):  # large soft patches make every background distinct for perceptual hashing
        x0, y0 = rng.uniform(-0.2, 0.8) * width, rng.uniform(-0.2, 0.8) * height
        x1, y1 = x0 + rng.uniform(0.2, 0.6) * width, y0 + rng.uniform(0.2, 0.6) * height
        draw.ellipse([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(30, 230, 3)))
    shapes: list[DrawnShape] = []
    side = min(width, height)
    for _ in range(count * 20):
        if len(shapes) == count:
            break
        size = int(rng.uniform(0.12, 0.3) * side)
        x0 = int(rng.uniform(0, width - size))
        y0 = int(rng.uniform(0, height - size))
        box = Box(x0, y0, x0 + size, y0 + size)
        if any(_overlaps(box, other.box) for other in shapes):
            continue
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(_COLOURS)[int(rng.integers(len(_COLOURS)))]
        fill = _COLOURS[colour]
        corners = [x0, y0, x0 + size, y0 + size]
        if kind == "circle":
            draw.ellipse(corners, fill=fill, outline=(20, 20, 20), width=2)
        elif kind == "square":
            draw.rectangle(corners, fill=fill, outline=(20, 20, 20), width=2)
        else:
            draw.polygon(
                [(x0 + size / 2, y0), (x0 + size, y0 + size), (x0, y0 + size)], fill=fill, outline=(20, 20, 20)
            )
        shapes.append(DrawnShape(kind, colour, box))
    return image, shapes


def draw_screenshot(width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, list[Box], Box, str]:
    """A UI-like screenshot (random theme and layout) with a red rectangle drawn on it and a line of personal data.

    Returns:
        The image, the boxes of the red marks, the box of the e-mail line (to redact), and what is marked.
    """
    dark = bool(rng.integers(2))
    page = (34, 36, 40) if dark else tuple(int(v) for v in rng.integers(235, 252, 3))
    ink = (225, 225, 225) if dark else (30, 30, 30)
    accent = tuple(int(v) for v in rng.integers(30, 200, 3))
    image = Image.new("RGB", (width, height), page)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, height // int(rng.integers(30, 45))))
    bar = height // int(rng.integers(10, 16))
    draw.rectangle([0, 0, width, bar], fill=accent)
    draw.text((12, bar // 4), "Settings - Example App", fill=(255, 255, 255), font=font)
    side = width // int(rng.integers(4, 7))
    on_left = bool(rng.integers(2))
    panel = (48, 50, 56) if dark else tuple(int(v) - 20 for v in page)
    sx0 = 0 if on_left else width - side
    draw.rectangle([sx0, bar, sx0 + side, height], fill=panel)
    for index, item in enumerate(("Profile", "Security", "Billing", "Notifications", "Help")):
        draw.text((sx0 + 14, bar + 20 + index * (height // 16)), item, fill=ink, font=font)
    left = (side + 30) if on_left else 30
    lines = ["Name: Alex Example", "E-mail: alex@example.com", "Plan: Pro (renews monthly)", "Two-factor: off"]
    top = bar + int(rng.integers(30, 120))
    step = height // int(rng.integers(9, 13))
    line_boxes = []
    for index, line in enumerate(lines):
        y = top + index * step
        draw.text((left, y), line, fill=ink, font=font)
        x0, y0, x1, y1 = draw.textbbox((left, y), line, font=font)
        line_boxes.append(Box(x0 - 4, y0 - 4, x1 + 4, y1 + 4))
    bx = left + int(rng.integers(0, width // 4))
    by = top + 5 * step
    button = Box(bx, by, bx + width * 0.2, by + height * 0.07)
    draw.rounded_rectangle([button.x0, button.y0, button.x1, button.y1], radius=6, fill=accent)
    draw.text((button.x0 + 12, button.y0 + 6), "Save changes", fill=(255, 255, 255), font=font)
    choice = int(rng.integers(2))
    targets = [(line_boxes[3], "the two-factor setting, which is off"), (button, "the Save changes button")]
    marked, what = targets[choice]
    marks = [Box(marked.x0 - 8, marked.y0 - 8, marked.x1 + 8, marked.y1 + 8)]
    for mark in marks:
        draw.rectangle([mark.x0, mark.y0, mark.x1, mark.y1], outline=(230, 20, 20), width=4)
    return image, marks, line_boxes[1], what


def _overlaps(a: Box, b: Box, margin: float = 6) -> bool:
    return not (a.x1 + margin < b.x0 or b.x1 + margin < a.x0 or a.y1 + margin < b.y0 or b.y1 + margin < a.y0)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """``image`` encoded as ``fmt`` (JPEG or PNG) with Pillow ``params``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def exif_rotated_jpeg(upright: Image.Image, quality: int = 90) -> bytes:
    """A JPEG whose pixels are stored turned 90 degrees, with EXIF orientation 6 telling viewers to turn them back."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


# --- Label Studio export shape ---------------------------------------------------------------------------


@dataclass
class LabelStudioExport:
    """Builds tasks in the shape of Label Studio 1.23's JSON export (ids, times and bookkeeping fields included).

    Example::

        ls = LabelStudioExport()
        task = ls.task({"image": "/data/upload/1/ab12cd34-cat.jpg"},
                       [ls.annotation([ls.textarea("caption", "A cat."), ls.choice("review", "accept")])])
    """

    project: int = 1
    user: int = 1
    _task_id: int = 0
    _annotation_id: int = 0
    _prediction_id: int = 0
    _clock: int = 0

    def _now(self) -> str:
        self._clock += 1
        return (_EPOCH + timedelta(minutes=self._clock)).isoformat().replace("+00:00", "Z")

    _serial: int = 0

    def _region_id(self) -> str:
        self._serial += 1
        return hashlib.sha1(f"region-{self._serial}".encode(), usedforsecurity=False).hexdigest()[:10]

    def textarea(self, name: str, *texts: str, to_name: str = "image") -> dict[str, Any]:
        """A TextArea result."""
        return {
            "value": {"text": list(texts)},
            "id": self._region_id(),
            "from_name": name,
            "to_name": to_name,
            "type": "textarea",
            "origin": "manual",
        }

    def choice(self, name: str, *choices: str, to_name: str = "image") -> dict[str, Any]:
        """A Choices result."""
        return {
            "value": {"choices": list(choices)},
            "id": self._region_id(),
            "from_name": name,
            "to_name": to_name,
            "type": "choices",
            "origin": "manual",
        }

    def rectangle(
        self,
        name: str,
        box: Box,
        width: int,
        height: int,
        labels: Sequence[str],
        *,
        rotation: float = 0.0,
        to_name: str = "image",
    ) -> dict[str, Any]:
        """A RectangleLabels result for a pixel ``box`` of a ``width`` x ``height`` image (stored in percent)."""
        rect = PercentRect.from_pixels(box, width, height)
        return {
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": rect.x,
                "y": rect.y,
                "width": rect.width,
                "height": rect.height,
                "rotation": rotation,
                "rectanglelabels": list(labels),
            },
            "id": self._region_id(),
            "from_name": name,
            "to_name": to_name,
            "type": "rectanglelabels",
            "origin": "manual",
        }

    def annotation(
        self,
        result: list[dict[str, Any]],
        *,
        cancelled: bool = False,
        ground_truth: bool = False,
        user: int | None = None,
    ) -> dict[str, Any]:
        """An annotation with ``result``; ids and times increase with each call."""
        self._annotation_id += 1
        created = self._now()
        return {
            "id": self._annotation_id,
            "completed_by": user or self.user,
            "result": result,
            "was_cancelled": cancelled,
            "ground_truth": ground_truth,
            "created_at": created,
            "updated_at": self._now(),
            "draft_created_at": None,
            "lead_time": 12.5,
            "prediction": {},
            "result_count": len(result),
            "unique_id": str(
                uuid.UUID(hashlib.md5(f"annotation-{self._annotation_id}".encode(), usedforsecurity=False).hexdigest())
            ),
            "import_id": None,
            "last_action": None,
            "bulk_created": False,
            "task": self._task_id + 1,
            "project": self.project,
            "updated_by": user or self.user,
            "parent_prediction": None,
            "parent_annotation": None,
            "last_created_by": None,
        }

    def prediction(self, result: list[dict[str, Any]], model_version: str = "capture-v1") -> dict[str, Any]:
        """A full prediction (as in the snapshot export with ``only_id: false``)."""
        self._prediction_id += 1
        return {
            "id": self._prediction_id,
            "model_version": model_version,
            "created_ago": "1 minute",
            "result": result,
            "score": 0.9,
            "cluster": None,
            "neighbors": None,
            "mislabeling": 0.0,
            "created_at": self._now(),
            "updated_at": self._now(),
            "model": None,
            "model_run": None,
            "task": self._task_id + 1,
            "project": self.project,
        }

    def task(
        self,
        data: dict[str, Any],
        annotations: list[dict[str, Any]] | None = None,
        predictions: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A task with ``data``, its annotations and predictions (fix each annotation's ``task`` to this id)."""
        self._task_id += 1
        annotations = annotations or []
        for annotation in annotations:
            annotation["task"] = self._task_id
        for prediction in predictions or []:
            prediction["task"] = self._task_id
        image = str(data.get("image", ""))
        return {
            "id": self._task_id,
            "data": data,
            "annotations": annotations,
            "file_upload": image.rsplit("/", 1)[-1] if image.startswith("/data/upload/") else None,
            "drafts": [],
            "predictions": predictions or [],
            "meta": {},
            "created_at": self._now(),
            "updated_at": self._now(),
            "inner_id": self._task_id,
            "total_annotations": sum(not a["was_cancelled"] for a in annotations),
            "cancelled_annotations": sum(bool(a["was_cancelled"]) for a in annotations),
            "total_predictions": len(predictions or []),
            "comment_count": 0,
            "unresolved_comment_count": 0,
            "last_comment_updated_at": None,
            "project": self.project,
            "updated_by": self.user,
            "comment_authors": [],
        }


# --- the sample project ----------------------------------------------------------------------------------


@dataclass
class SampleProject:
    """Paths of a written sample project and what an export of it must give."""

    root: Path
    export: Path
    label_config: Path
    media_dir: Path
    local_files_root: Path
    tasks: int
    expected_drops: dict[str, int] = field(default_factory=dict)

    @property
    def expected_written(self) -> int:
        """Tasks the exporter must write."""
        return self.tasks - sum(self.expected_drops.values())


@dataclass
class _Writer:
    root: Path
    rng: np.random.Generator
    ls: LabelStudioExport = field(default_factory=LabelStudioExport)
    tasks: list[dict[str, Any]] = field(default_factory=list)

    def upload(self, name: str, data: bytes) -> str:
        folder = self.root / "media" / "upload" / "1"
        folder.mkdir(parents=True, exist_ok=True)
        stored = f"{self.rng.integers(16**8):08x}-{name}"
        (folder / stored).write_bytes(data)
        return f"/data/upload/1/{stored}"

    def local_file(self, name: str, data: bytes) -> str:
        folder = self.root / "files" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return f"/data/local-files/?d=images/{name}"

    def shapes_result(
        self, shapes: list[DrawnShape], width: int, height: int, *, rotation: float = 0.0
    ) -> list[dict[str, Any]]:
        ls = self.ls
        result = [ls.rectangle("objects", shape.box, width, height, [shape.kind]) for shape in shapes]
        if rotation and result:
            result[0]["value"]["rotation"] = rotation
        return result

    def caption_for(self, shapes: list[DrawnShape]) -> str:
        parts = [f"a {shape.colour} {shape.kind}" for shape in shapes]
        listed = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        return f"{listed[0].upper()}{listed[1:]} on a textured background."

    def add(
        self, data: dict[str, Any], annotations: list[dict[str, Any]], predictions: list[dict[str, Any]] | None = None
    ) -> None:
        self.tasks.append(self.ls.task(data, annotations, predictions))

    def accepted(self, result: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        return self.ls.annotation([*result, self.ls.choice("review", "accept")], **kwargs)

    def shape_tasks(self) -> bytes:
        """Plain shape images (JPEG and PNG, uploaded or local files): caption, boxes, scene, some questions.

        Returns the bytes of the first image (the duplicate tasks reuse them).
        """
        ls, rng = self.ls, self.rng
        first = b""
        for index in range(18):
            width, height = int(rng.integers(320, 1400)), int(rng.integers(260, 1100))
            image, shapes = draw_shapes(width, height, rng, count=int(rng.integers(1, 4)))
            png = index % 3 == 0
            data = encode(image, "PNG") if png else encode(image, "JPEG", quality=int(rng.integers(80, 96)))
            name = f"shapes-{index:02d}.{'png' if png else 'jpg'}"
            url = self.local_file(name, data) if index % 4 == 1 else self.upload(name, data)
            first = first or data
            result = [
                ls.textarea("caption", self.caption_for(shapes)),
                *self.shapes_result(shapes, width, height),
                ls.choice("scene", "shapes"),
            ]
            task_data: dict[str, Any] = {"image": url}
            if index % 3 == 1:
                task_data["question"] = "How many shapes are there?"
                result.append(ls.textarea("answer", str(len(shapes))))
            prediction = ls.prediction([ls.textarea("caption", "a fixed caption")]) if index % 5 == 0 else None
            self.add(task_data, [self.accepted(result)], [prediction] if prediction else None)
        return first

    def text_tasks(self) -> None:
        """Several questions in the task data answered in order; full-width and CJK captions."""
        ls, rng = self.ls, self.rng
        image, shapes = draw_shapes(900, 700, rng, count=2)
        url = self.upload("questions.jpg", encode(image, "JPEG", quality=90))
        answers = ls.textarea("answer", f"The {shapes[0].kind}.", "A smooth gradient.")
        self.add(
            {"image": url, "question": ["What is the largest shape?", "What colour is the background?"]},
            [self.accepted([answers, ls.choice("scene", "shapes")])],
        )
        image, shapes = draw_shapes(800, 600, rng, count=1)
        url = self.upload("fullwidth.jpg", encode(image, "JPEG", quality=90))
        caption = ls.textarea("caption", "Ａ ｒｅｄ\u3000ｓｈａｐｅ  on a background（textured）.")
        self.add({"image": url}, [self.accepted([caption])])
        image, shapes = draw_shapes(800, 600, rng, count=1)
        url = self.upload("cjk.png", encode(image, "PNG"))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "一个彩色的形状，背景有纹理。")])])

    def unusual_files(self) -> None:
        """An EXIF-rotated JPEG, a CMYK JPEG, a paletted PNG with transparency, RGBA and grayscale PNGs."""
        ls, rng = self.ls, self.rng
        upright, shapes = draw_shapes(1200, 800, rng, count=2)
        url = self.upload("phone-photo.jpg", exif_rotated_jpeg(upright))
        result = [ls.textarea("caption", self.caption_for(shapes)), *self.shapes_result(shapes, 1200, 800)]
        self.add({"image": url}, [self.accepted(result)])
        image, shapes = draw_shapes(700, 500, rng, count=2)
        url = self.upload("print.jpg", encode(image.convert("CMYK"), "JPEG", quality=90))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", self.caption_for(shapes))])])
        image, shapes = draw_shapes(600, 450, rng, count=2)
        paletted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        url = self.upload("palette.png", encode(paletted, "PNG", transparency=0))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", self.caption_for(shapes))])])
        image, shapes = draw_shapes(640, 480, rng, count=1)
        rgba = image.convert("RGBA")
        rgba.putalpha(230)
        url = self.upload("alpha.png", encode(rgba, "PNG"))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", self.caption_for(shapes))])])
        image, shapes = draw_shapes(640, 480, rng, count=1)
        url = self.upload("gray.png", encode(image.convert("L"), "PNG"))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "A gray shape on a gray background.")])])

    def tricky_boxes(self) -> None:
        """A rotated box, and a box reaching out of the image."""
        ls, rng = self.ls, self.rng
        image, shapes = draw_shapes(1000, 800, rng, count=2)
        url = self.upload("rotated-box.jpg", encode(image, "JPEG", quality=90))
        self.add({"image": url}, [self.accepted(self.shapes_result(shapes, 1000, 800, rotation=15.0))])
        image, shapes = draw_shapes(1000, 800, rng, count=1)
        url = self.upload("edge-box.jpg", encode(image, "JPEG", quality=90))
        edge = ls.rectangle("objects", Box(900, 700, 1100, 900), 1000, 800, ["square"])
        self.add({"image": url}, [self.accepted([*self.shapes_result(shapes, 1000, 800), edge])])

    def screenshots(self) -> None:
        """Marked screenshots: the description is the answer, the marks boxed, the e-mail line redacted."""
        ls, rng = self.ls, self.rng
        for index in range(4):
            width, height = (1280, 800) if index % 2 == 0 else (1440, 900)
            image, marks, email, what = draw_screenshot(width, height, rng)
            url = self.upload(f"screenshot-{index}.png", encode(image, "PNG"))
            result = [
                ls.textarea("description", f"The red rectangle marks {what}."),
                *[ls.rectangle("objects", mark, width, height, ["marks"]) for mark in marks],
                ls.rectangle("objects", email, width, height, ["redact"]),
                ls.choice("scene", "screenshot"),
            ]
            self.add({"image": url}, [self.accepted(result)])

    def annotations_that_do_not_count(self) -> dict[str, int]:
        """Cancelled, rejected, unreviewed and superseded annotations, and a task with only a prediction."""
        ls, rng = self.ls, self.rng
        image, shapes = draw_shapes(700, 500, rng, count=1)
        url = self.upload("latest-wins.jpg", encode(image, "JPEG", quality=90))
        older = self.accepted([ls.textarea("caption", "An older caption that a later annotation replaces.")])
        newer = self.accepted([ls.textarea("caption", self.caption_for(shapes))], user=2)
        self.add({"image": url}, [older, newer, ls.annotation([], cancelled=True, user=3)])
        image, _ = draw_shapes(700, 500, rng, count=1)
        url = self.upload("cancelled.jpg", encode(image, "JPEG", quality=90))
        self.add({"image": url}, [ls.annotation([], cancelled=True)])
        image, shapes = draw_shapes(700, 500, rng, count=1)
        url = self.upload("rejected.jpg", encode(image, "JPEG", quality=90))
        rejected = ls.annotation([ls.textarea("caption", "A wrong caption."), ls.choice("review", "reject")])
        unreviewed = ls.annotation([ls.textarea("caption", "Not reviewed yet.")])
        self.add({"image": url}, [rejected, unreviewed])
        image, shapes = draw_shapes(700, 500, rng, count=1)
        url = self.upload("unreviewed.jpg", encode(image, "JPEG", quality=90))
        self.add({"image": url}, [ls.annotation([ls.textarea("caption", self.caption_for(shapes))])])
        image, _ = draw_shapes(700, 500, rng, count=1)
        url = self.upload("predicted-only.jpg", encode(image, "JPEG", quality=90))
        self.add({"image": url}, [], [ls.prediction([ls.textarea("caption", "a model's guess")])])
        return {"cancelled": 1, "not_accepted": 2, "no_annotation": 1}

    def unusable_images(self, first: bytes) -> dict[str, int]:
        """A duplicate and a near-duplicate of the first image, a missing file, a truncated file, an empty caption."""
        ls, rng = self.ls, self.rng
        url = self.upload("shapes-00.png", first)  # the same bytes uploaded a second time
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "The same picture, uploaded twice.")])])
        near = Image.open(io.BytesIO(first)).convert("RGB")
        near = near.resize((near.width - 2, near.height - 2))
        url = self.upload("shapes-00-copy.jpg", encode(near, "JPEG", quality=70))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "A re-saved copy of the first picture.")])])
        missing = self.accepted([ls.textarea("caption", "Lost file.")])
        self.add({"image": "/data/upload/1/0000dead-missing.jpg"}, [missing])
        image, _ = draw_shapes(900, 700, rng, count=1)
        whole = encode(image, "JPEG", quality=90)
        url = self.upload("truncated.jpg", whole[: len(whole) // 2])
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "Half a file.")])])
        image, _ = draw_shapes(700, 500, rng, count=1)
        url = self.upload("empty-caption.jpg", encode(image, "JPEG", quality=90))
        self.add({"image": url}, [self.accepted([ls.textarea("caption", "   ")])])
        return {"exact_duplicate": 1, "near_duplicate": 1, "image_missing": 1, "image_truncated": 1, "empty_text": 1}


def write_sample_project(root: Path, *, seed: int = 0) -> SampleProject:
    """Write the sample project into ``root`` (created; existing sample files are replaced).

    Returns:
        Its paths and the drops an export with default options must report.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(root, np.random.default_rng(seed))
    first = writer.shape_tasks()
    writer.text_tasks()
    writer.unusual_files()
    writer.tricky_boxes()
    writer.screenshots()
    expected = writer.annotations_that_do_not_count()
    expected.update(writer.unusable_images(first))
    config_path = root / "label_config.xml"
    config_path.write_text(SAMPLE_LABEL_CONFIG, encoding="utf-8")
    export_path = root / "export.json"
    export_path.write_text(json.dumps(writer.tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return SampleProject(
        root=root,
        export=export_path,
        label_config=config_path,
        media_dir=root / "media",
        local_files_root=root / "files",
        tasks=len(writer.tasks),
        expected_drops=expected,
    )
