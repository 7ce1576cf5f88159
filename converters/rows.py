"""A labelled task -> ms-swift training rows, one builder per control kind.

This module (and the trainer) are the only places that know ms-swift's data format (``docs/MS_SWIFT.md`` §4.1)::

    {"messages": [{"role": "user", "content": "<image>PROMPT"}, {"role": "assistant", "content": "ANSWER"}],
     "images": ["/abs/out/images/<sha256>.jpg"],
     "objects": {"ref": [...], "bbox": [[x0, y0, x1, y1], ...], "bbox_type": "real"},   # grounding only
     "labelloop": {"task_id": 7, "annotation_id": 3, ...}}                               # metadata, see below

What each kind becomes (prompts come from :class:`~converters.label_config.ControlSpec`):

- caption / marked: ``<image>PROMPT`` -> the text (a marked screenshot is kept as drawn: its marks are visual
  prompts, the description is the answer).
- vqa: every (question, answer) pair of the image -> one multi-turn conversation (``vqa_mode="multi_turn"``)
  or one row per pair (``"per_pair"``).
- grounding: ``<image>PROMPT`` listing the config's labels -> one ``<ref-object><bbox>`` line per box, with
  ms-swift's ``objects``: ``ref`` the labels, ``bbox`` integer pixels of the *written* image,
  ``bbox_type: real``; ms-swift rescales them per template (Qwen2-VL: norm-1000). Boxes are sorted by label
  order, then top to bottom, left to right. Rotated boxes become their axis-aligned bounds, boxes reaching out
  of the image are clipped, boxes entirely outside are dropped; redacted regions are never rows.
- choices: the question and the options -> the chosen option(s), in config order.
- marks referred to (``RowOptions.refer_marks``, for marked screenshots): ``<image>`` + the annotation text (or a
  mark's label text) -> ``<bbox>`` per place the marks point out, with ``objects`` ``ref`` that text and ``bbox``
  the marks' targets (a person's ``marks`` boxes, else the detector's). The image is the task's unmarked original
  (or the ``--unmark`` copy) when there is one, so the model learns to find on a clean screenshot what the note is
  about; else the marked image.

Metadata: one nested key, ``labelloop``. ms-swift 4.6's ``load_dataset`` keeps only its standard columns
(``RowPreprocessor.remove_useless_columns``) and drops ``labelloop`` before encoding; a flat key named like a
standard or auto-mapped column (``label``, ``channel``, ``solution``, ``system``, ``query``, ``response``, ...)
would be kept or renamed and change training, so nothing else is added at the top level. Checked with ms-swift's
own loader and Qwen2-VL template in ``tests/test_swift_dataset.py``. Values keep one type per field (int task
ids, strings or null elsewhere), which Arrow's JSON reader needs for a stable schema.

Problems found while building rows are :class:`Note` s (counted in the report; when a task yields no row at all,
they are why it is dropped).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from converters.boxes import Box, PercentRect
from converters.errors import ConvertError
from converters.label_config import ControlKind, ControlSpec, LabelConfig
from converters.tasks import Annotation, Region, Task
from converters.text import collapse_whitespace, normalize_text

VqaMode = Literal["multi_turn", "per_pair"]
METADATA_KEY = "labelloop"
IMAGE_TAG = "<image>"
REFER_PROMPT = "Where on this screenshot is what this note is about: <ref-object>? Give the box of each place."
"""Prompt of the rows that point a marked screenshot's note at the marked places (``<ref-object>``: the note)."""
_EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    "caption": ("textarea",),
    "marked": ("textarea",),
    "vqa": ("textarea",),
    "choices": ("choices",),
    "review": ("choices",),
    "grounding": ("rectanglelabels",),
}


@dataclass(frozen=True, slots=True)
class RowOptions:
    """How rows are built.

    Attributes:
        min_caption_chars: captions and marked-screenshot descriptions shorter than this are dropped.
        min_answer_chars: VQA answers shorter than this are dropped.
        normalize_text: apply :func:`~converters.text.normalize_text` (else only whitespace is tidied).
        vqa_mode: ``multi_turn`` (one conversation per image) or ``per_pair`` (one row per question).
        refer_marks: for marked screenshots, also write rows pointing the annotation text at the marks' targets.
        refer_prompt: the prompt of those rows (``<ref-object>`` stands for the text).
    """

    min_caption_chars: int = 3
    min_answer_chars: int = 1
    normalize_text: bool = True
    vqa_mode: VqaMode = "multi_turn"
    refer_marks: bool = False
    refer_prompt: str = REFER_PROMPT


@dataclass(frozen=True, slots=True)
class ImageFrame:
    """The written image of a task and how it relates to the source.

    Attributes:
        path: the path put in the row's ``images`` (absolute: ms-swift resolves relative paths from its cwd).
        sha256: sha256 of the written bytes (also the file name).
        source_sha256: sha256 of the source bytes.
        source: the source URL or path (secrets masked).
        source_width: source width after EXIF orientation (the frame of Label Studio's percentages).
        source_height: source height after EXIF orientation.
        width: written width.
        height: written height.
        clean_path: the written unmarked copy of a marked screenshot (its original, or the marks inpainted away),
            used by the rows that refer to the marks; None when there is none.
        clean_sha256: sha256 of the clean copy's written bytes.
        clean_width: the clean copy's written width.
        clean_height: the clean copy's written height.
    """

    path: str
    sha256: str
    source_sha256: str
    source: str
    source_width: int
    source_height: int
    width: int
    height: int
    clean_path: str | None = None
    clean_sha256: str = ""
    clean_width: int = 0
    clean_height: int = 0


@dataclass(frozen=True, slots=True)
class Note:
    """A problem met while building rows: a stable ``code`` and a message naming the task and field."""

    code: str
    message: str


@dataclass(slots=True)
class Row:
    """One JSONL row and what the report needs to know about it."""

    kind: ControlKind
    control: str
    data: dict[str, Any]
    labels: tuple[str, ...] = ()
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()


@dataclass(slots=True)
class TaskRows:
    """The rows of one task, the notes, and counters (rotated_boxes, clipped_boxes, ...)."""

    rows: list[Row] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class RowContext:
    """Everything a builder needs about one task."""

    task: Task
    annotation: Annotation
    config: LabelConfig
    frame: ImageFrame
    options: RowOptions
    detected_marks: tuple[Box, ...]
    out: TaskRows

    def note(self, code: str, message: str) -> None:
        """Record a problem; the message gets the ``task <id>:`` prefix."""
        self.out.notes.append(Note(code, f"task {self.task.id}: {message}"))

    def clean(self, text: str) -> str:
        """Text as written to rows (normalised, or only whitespace-tidied)."""
        return normalize_text(text) if self.options.normalize_text else collapse_whitespace(text)

    def user(self, prompt: str, *, first: bool = True) -> dict[str, str]:
        """A user message; the first one carries the ``<image>`` tag."""
        return {"role": "user", "content": (IMAGE_TAG if first else "") + prompt}

    def row(self, spec: ControlSpec, messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
        """A row dict with the image and the metadata."""
        annotation = self.annotation
        data: dict[str, Any] = {"messages": messages, "images": [self.frame.path]}
        data.update(extra)
        data[METADATA_KEY] = {
            "task_id": self.task.id,
            "annotation_id": annotation.id,
            "annotator": annotation.completed_by,
            "created_at": annotation.created_at.isoformat() if annotation.created_at else None,
            "updated_at": annotation.updated_at.isoformat() if annotation.updated_at else None,
            "source": self.frame.source,
            "source_sha256": self.frame.source_sha256,
            "image_sha256": self.frame.sha256,
            "control": spec.name,
            "kind": spec.kind,
        }
        return data

    def regions(self, spec: ControlSpec) -> list[Region]:
        """The annotation's regions for ``spec`` whose type fits the control."""
        return [r for r in self.annotation.regions_of(spec.name) if r.type in _EXPECTED_TYPES[spec.kind]]


class RowBuilder:
    """Builds the rows of one control kind; subclasses set :attr:`kinds` and implement :meth:`build`."""

    kinds: ClassVar[tuple[ControlKind, ...]] = ()

    @classmethod
    def matches(cls, spec: ControlSpec) -> bool:
        """True when this builder handles ``spec``."""
        return spec.kind in cls.kinds

    def build(self, context: RowContext, specs: Sequence[ControlSpec]) -> list[Row]:
        """Rows for the controls ``specs`` (all of this builder's kinds, in config order)."""
        raise NotImplementedError


class TextBuilder(RowBuilder):
    """caption and marked: ``<image>PROMPT`` -> the TextArea's text (entries joined by new lines)."""

    kinds = ("caption", "marked")

    def build(self, context: RowContext, specs: Sequence[ControlSpec]) -> list[Row]:
        rows = []
        for spec in specs:
            regions = context.regions(spec)
            if not regions:
                continue
            text = context.clean("\n".join(entry for region in regions for entry in region.text))
            where = f"{regions[0].path}.value.text"
            what = "description" if spec.kind == "marked" else "caption"
            if not _long_enough(context, text, context.options.min_caption_chars, where, what):
                continue
            messages = [context.user(spec.render_prompt()), {"role": "assistant", "content": text}]
            rows.append(Row(spec.kind, spec.name, context.row(spec, messages)))
        return rows


class VqaBuilder(RowBuilder):
    """vqa: every (question, answer) pair of the image -> one conversation, or one row per pair."""

    kinds = ("vqa",)

    def build(self, context: RowContext, specs: Sequence[ControlSpec]) -> list[Row]:
        pairs: list[tuple[ControlSpec, str, str]] = []
        for spec in specs:
            pairs.extend(self._pairs(context, spec))
        if not pairs:
            return []
        if context.options.vqa_mode == "per_pair":
            rows = []
            for spec, question, answer in pairs:
                messages = [context.user(spec.render_prompt(question=question)), _assistant(answer)]
                rows.append(Row("vqa", spec.name, context.row(spec, messages)))
            return rows
        messages = []
        for index, (spec, question, answer) in enumerate(pairs):
            messages += [context.user(spec.render_prompt(question=question), first=index == 0), _assistant(answer)]
        first = pairs[0][0]
        names = ",".join(dict.fromkeys(spec.name for spec, _, _ in pairs))
        row = context.row(first, messages)
        row[METADATA_KEY]["control"] = names
        return [Row("vqa", names, row)]

    def _pairs(self, context: RowContext, spec: ControlSpec) -> list[tuple[ControlSpec, str, str]]:
        regions = context.regions(spec)
        if not regions or spec.question is None:
            return []
        answers = [entry for region in regions for entry in region.text]
        where = f"{regions[0].path}.value.text"
        try:
            questions = spec.question.resolve(context.task.data)
        except ConvertError as exc:
            context.note("bad_question", f"{spec.name}: {exc}")
            return []
        if len(questions) == 1:
            answers = ["\n".join(answers)]
        elif len(answers) != len(questions):
            source = f"data.{spec.question.data_key}"
            context.note("answer_count", f"{where}: {len(answers)} answers for {len(questions)} questions in {source}")
            return []
        pairs = []
        for raw_question, raw_answer in zip(questions, answers, strict=True):
            question, answer = context.clean(raw_question), context.clean(raw_answer)
            if not question:
                context.note("empty_text", f"{spec.name}: empty question")
                continue
            if _long_enough(context, answer, context.options.min_answer_chars, where, "answer"):
                pairs.append((spec, question, answer))
        return pairs


class ChoicesBuilder(RowBuilder):
    """choices: ``<image>`` question and options -> the chosen option(s)."""

    kinds = ("choices",)

    def build(self, context: RowContext, specs: Sequence[ControlSpec]) -> list[Row]:
        rows = []
        for spec in specs:
            regions = context.regions(spec)
            if not regions:
                continue
            chosen = {choice for region in regions for choice in region.choices}
            unknown = sorted(chosen - set(spec.labels))
            if unknown:
                context.note(
                    "unknown_choice",
                    f"{regions[0].path}.value.choices: {', '.join(map(repr, unknown))} not among "
                    f"{spec.name}'s choices ({', '.join(spec.labels)})",
                )
            answer = [label for label in spec.labels if label in chosen]
            if not answer:
                continue
            question = None
            if spec.question is not None:
                try:
                    question = context.clean(spec.question.resolve(context.task.data)[0])
                except ConvertError as exc:
                    context.note("bad_question", f"{spec.name}: {exc}")
                    continue
            messages = [context.user(spec.render_prompt(question=question)), _assistant(", ".join(answer))]
            rows.append(Row("choices", spec.name, context.row(spec, messages), labels=tuple(answer)))
        return rows


class GroundingBuilder(RowBuilder):
    """grounding: ``<image>`` + the labels -> ``<ref-object><bbox>`` per box, with ms-swift ``objects``."""

    kinds = ("grounding",)

    def build(self, context: RowContext, specs: Sequence[ControlSpec]) -> list[Row]:
        rows = []
        config = context.config
        for spec in specs:
            labels = [label for label in spec.labels if label != config.redact_label]
            objects: list[tuple[int, str, list[int]]] = []
            for region in context.regions(spec):
                objects.extend(self._objects(context, spec, region, labels))
            human_marks = any(label == config.marks_label for _, label, _ in objects)
            if context.detected_marks and config.marks_label in labels and not human_marks:
                # Seam for the screenshot-mark detector (converters/marks/): its boxes label the marks when no
                # person drew them. They are already in pixels of the written image.
                order = labels.index(config.marks_label)
                for box in context.detected_marks:
                    clipped = box.clipped(context.frame.width, context.frame.height)
                    if clipped is not None:
                        objects.append((order, config.marks_label, clipped.rounded()))
                        context.out.stats["detected_marks"] += 1
            referring: list[Row] = []
            if context.options.refer_marks and config.marks_label in labels:
                people = [box for _, label, box in objects if label == config.marks_label] if human_marks else []
                referring = _refer_rows(context, spec, people)
            if not objects:
                rows.extend(referring)
                continue
            objects.sort(key=lambda item: (item[0], item[2][1], item[2][0]))
            refs = [label for _, label, _ in objects]
            boxes = [box for _, _, box in objects]
            messages = [
                context.user(spec.render_prompt(labels=labels)),
                _assistant("\n".join("<ref-object><bbox>" for _ in objects)),
            ]
            data = context.row(spec, messages, objects={"ref": refs, "bbox": boxes, "bbox_type": "real"})
            drawn = tuple((label, (b[0], b[1], b[2], b[3])) for label, b in zip(refs, boxes, strict=True))
            rows.append(Row("grounding", spec.name, data, labels=tuple(refs), boxes=drawn))
            rows.extend(referring)
        return rows

    def _objects(
        self, context: RowContext, spec: ControlSpec, region: Region, labels: list[str]
    ) -> list[tuple[int, str, list[int]]]:
        frame = context.frame
        if region.rect is None or context.config.redact_label in region.labels:
            return []
        recorded = (region.original_width, region.original_height)
        if all(recorded) and recorded != (frame.source_width, frame.source_height):
            context.out.stats["size_mismatch"] += 1
        box = region.rect.to_pixels(frame.source_width, frame.source_height)
        if region.rect.is_rotated:
            context.out.stats["rotated_boxes"] += 1
        if not box.is_inside(frame.source_width, frame.source_height):
            clipped = box.clipped(frame.source_width, frame.source_height)
            if clipped is None:
                context.note(
                    "box_outside",
                    f"{region.path}.value: box {box.rounded()} lies outside the "
                    f"{frame.source_width}x{frame.source_height} image; dropped",
                )
                return []
            context.out.stats["clipped_boxes"] += 1
            box = clipped
        scaled = box.scaled(frame.width / frame.source_width, frame.height / frame.source_height).rounded()
        if scaled[2] - scaled[0] < 1 or scaled[3] - scaled[1] < 1:
            context.note("box_degenerate", f"{region.path}.value: box {box.rounded()} is empty once resized")
            return []
        found = []
        for label in region.labels:
            if label not in labels:
                context.note(
                    "unknown_label",
                    f"{region.path}.value.rectanglelabels: {label!r} is not a label of {spec.name} "
                    f"({', '.join(spec.labels)})",
                )
                continue
            found.append((labels.index(label), label, list(scaled)))
        return found


def marked_text(annotation: Annotation, config: LabelConfig) -> str:
    """The annotation's text for the marked-screenshot controls (what the marks point out), entries joined."""
    return "\n".join(
        entry
        for spec in config.by_kind("marked")
        for region in annotation.regions_of(spec.name)
        if region.type == "textarea"
        for entry in region.text
    )


def _refer_rows(context: RowContext, spec: ControlSpec, drawn: list[list[int]]) -> list[Row]:
    """Rows pointing the annotation text (or each mark's label text) at the places the marks point out.

    DRAWN are a person's marks boxes (pixels of the written image); without them the detector's marks are used,
    each by its ``target`` (an arrow points at what lies past its tip; a label is no place of its own). Boxes go
    to the clean copy's pixels when the rows use it.
    """
    text = context.clean(marked_text(context.annotation, context.config))
    if not text:
        return []
    places: list[tuple[str, Box]] = [(text, Box(*map(float, box))) for box in drawn]
    if not drawn:
        for mark in context.detected_marks:
            target = getattr(mark, "target", mark)
            if not isinstance(target, Box):
                continue
            label = getattr(mark, "label", None)
            places.append((context.clean(label) if isinstance(label, str) and label.strip() else text, target))
    frame = context.frame
    path, width, height = frame.path, frame.width, frame.height
    if frame.clean_path is not None and frame.clean_width > 0 and frame.clean_height > 0:
        path, width, height = frame.clean_path, frame.clean_width, frame.clean_height
    by_ref: dict[str, list[list[int]]] = {}
    for ref, box in places:
        clipped = box.scaled(width / frame.width, height / frame.height).clipped(width, height)
        if clipped is None:
            continue
        rounded = clipped.rounded()
        if rounded[2] - rounded[0] >= 1 and rounded[3] - rounded[1] >= 1:
            by_ref.setdefault(ref, []).append(rounded)
    rows = []
    for ref, boxes in by_ref.items():
        boxes.sort(key=lambda b: (b[1], b[0]))
        messages = [
            context.user(context.options.refer_prompt),
            _assistant("\n".join("<bbox>" for _ in boxes)),
        ]
        data = context.row(spec, messages, objects={"ref": [ref], "bbox": boxes, "bbox_type": "real"})
        data["images"] = [path]
        rows.append(Row("grounding", spec.name, data, boxes=tuple(("marks", (b[0], b[1], b[2], b[3])) for b in boxes)))
        context.out.stats["mark_reference_rows"] += 1
    return rows


BUILDERS: tuple[RowBuilder, ...] = (TextBuilder(), VqaBuilder(), GroundingBuilder(), ChoicesBuilder())


def build_rows(
    task: Task,
    annotation: Annotation,
    config: LabelConfig,
    frame: ImageFrame,
    options: RowOptions,
    *,
    detected_marks: Sequence[Box] = (),
) -> TaskRows:
    """All rows for one task's chosen annotation, with notes about what was left out.

    Args:
        task: the task.
        annotation: the annotation that counts (:func:`~converters.annotations.select_annotation`).
        config: the parsed label config.
        frame: the written image.
        options: row options.
        detected_marks: boxes from the screenshot-mark detector, in pixels of the written image.

    Returns:
        Rows in builder order (text, vqa, grounding, choices); an empty list when nothing usable was labelled,
        with notes saying why.
    """
    out = TaskRows()
    context = RowContext(task, annotation, config, frame, options, tuple(detected_marks), out)
    _check_regions(context)
    for builder in BUILDERS:
        specs = [spec for spec in config.controls if builder.matches(spec)]
        if specs:
            out.rows.extend(builder.build(context, specs))
    return out


def redaction_rects(annotation: Annotation, config: LabelConfig) -> list[PercentRect]:
    """Rectangles of ``annotation`` labelled with the redact label, in any grounding control."""
    names = {spec.name for spec in config.by_kind("grounding")}
    return [
        region.rect
        for region in annotation.regions
        if region.from_name in names and region.rect is not None and config.redact_label in region.labels
    ]


def _check_regions(context: RowContext) -> None:
    config = context.config
    for region in context.annotation.regions:
        spec = config.control(region.from_name)
        if spec is None:
            if config.skipped_reason(region.from_name) is not None:
                context.out.stats["skipped_control_results"] += 1
                continue
            names = ", ".join(s.name for s in config.controls)
            context.note(
                "unknown_control",
                f"{region.path}.from_name: {region.from_name!r} is not a control of the label config "
                f"(controls: {names})",
            )
        elif region.type not in _EXPECTED_TYPES[spec.kind]:
            context.note(
                "wrong_type",
                f"{region.path}.type: {region.type!r} does not fit {spec.tag} {spec.name!r}",
            )


def _long_enough(context: RowContext, text: str, minimum: int, where: str, what: str) -> bool:
    if not text:
        context.note("empty_text", f"{where}: empty {what}")
        return False
    if len(text) < minimum:
        context.note("short_text", f"{where}: {what} {text!r} is shorter than {minimum} characters")
        return False
    return True


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}
