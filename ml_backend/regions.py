"""Model text → typed regions: per-family box parsing, coordinate frames, label matching and scores.

A model family's conventions stop here (and in ``prompts.py``):

- **Qwen2-VL** writes ``<|object_ref_start|>cat<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`` on a
  0–1000 grid of the image; one reference may be followed by several boxes.
- **Qwen2.5-VL** writes JSON ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]`` (often in a markdown fence) in
  *pixels of its resized input*: the processor's smart resize (sides multiples of 28, pixel count between
  ``min_pixels`` and ``max_pixels``) must be undone with the size the engine reports.
- **Qwen3-VL** writes the same JSON on a 0–1000 grid.

Both syntaxes are accepted for every family: a base model answers in its native one, and a model fine-tuned on
the exporter's rows (ms-swift ``objects``, ``<ref-object><bbox>``) writes what ms-swift 4.6's Qwen templates
render, which is the token syntax for all three families (``QWENVL_BBOX_FORMAT=legacy``, its default and what
labelloop's training pins) in the family's own frame: ``Qwen2VLTemplate`` and ``Qwen3VLTemplate`` normalise to
0-1000 (``norm_bbox='norm1000'``), ``Qwen2_5VLTemplate`` (``norm_bbox='none'``) to pixels of the image after
its smart resize. So the *frame* is always the family's, whatever the syntax. ms-swift's other rendering,
``QWENVL_BBOX_FORMAT=new`` (``cat[x1, y1, x2, y2]``), is read as a fallback, as is Qwen2-VL's syntax with its
special tokens stripped (``cat(x1,y1),(x2,y2)``). Truncated JSON keeps its complete objects, markdown fences and
prose around the answer are ignored, single-quoted pseudo-JSON is read by a fallback pattern.

Inside labelloop a box is ``(x0, y0, x1, y1)`` in pixels of the original image; :func:`box_region` turns it
into Label Studio's percent ``x, y, width, height`` with ``original_width``/``original_height``.

Scores come from the engine's token log-probabilities: a region's score is ``exp(mean log-prob)`` of the
tokens that wrote it (its label and coordinates), i.e. the geometric-mean token probability. The mean, not the
minimum, because a box is ~15 tokens of digits and punctuation and a single hesitant digit (``4`` vs ``5`` in
the last place of a coordinate) should not make a good box look as doubtful as a hallucinated one; the mean is
also comparable across regions of different length. An answer's score is the same over all its tokens.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ml_backend.engines.base import Generation
    from ml_backend.settings import Family

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in pixels of the original image."""

NORM1000_FAMILIES: frozenset[str] = frozenset({"qwen2_vl", "qwen3_vl"})
PATCH_FACTOR: dict[str, int] = {"qwen2_vl": 28, "qwen2_5_vl": 28, "qwen3_vl": 32}
"""Side multiple of each family's resized input (patch size x spatial merge)."""


# --- parsing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedBox:
    """One box as the model wrote it: its label text (None if it gave none), coordinates in the family's frame
    and the character span of ``text`` that wrote it (for scoring)."""

    label: str | None
    coords: Box
    span: tuple[int, int]


_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_REF_RE = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.DOTALL)
_TOKEN_BOX_RE = re.compile(rf"<\|box_start\|>\s*\({_NUM},{_NUM}\)\s*,?\s*\({_NUM},{_NUM}\)\s*<\|box_end\|>")
_BARE_BOX_RE = re.compile(rf"\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)")
_LIST_BOX_RE = re.compile(rf"\[{_NUM},{_NUM},{_NUM},{_NUM}\]")
_LOOSE_BBOX_RE = re.compile(rf"""["']?bbox(?:_2d)?["']?\s*:\s*\[{_NUM},{_NUM},{_NUM},{_NUM}\]""")
_LOOSE_LABEL_RE = re.compile(r"""["']?label["']?\s*:\s*["']([^"'\n]*)["']""")


def parse_boxes(text: str) -> list[ParsedBox]:
    """Every box in ``text``, in order, from the token syntax and from JSON objects with ``bbox_2d``.

    Never raises: malformed pieces are skipped (a truncated last object, a box with three numbers, a label
    that is not a string). Token-syntax boxes take the label of the nearest reference before them, so
    ``<ref>trees</ref><box>..</box><box>..</box>`` gives two ``trees``. Coordinates are returned as written.
    """
    boxes = _parse_token_boxes(text)
    boxes.extend(_parse_json_boxes(text))
    if not boxes:
        boxes = _parse_labelled_boxes(text, _BARE_BOX_RE)
    if not boxes:
        boxes = _parse_labelled_boxes(text, _LIST_BOX_RE)
    boxes.sort(key=lambda box: box.span[0])
    return boxes


def _parse_token_boxes(text: str) -> list[ParsedBox]:
    refs = [(m.start(), m.group(1).strip()) for m in _REF_RE.finditer(text)]
    found: list[ParsedBox] = []
    for match in _TOKEN_BOX_RE.finditer(text):
        label, start = None, match.start()
        for ref_start, ref_label in refs:
            if ref_start > match.start():
                break
            label, start = ref_label or None, ref_start
        coords = (float(match[1]), float(match[2]), float(match[3]), float(match[4]))
        # the span runs from the label's reference when this box is the first after it, else the box alone
        span_start = start if not found or found[-1].span[1] <= start else match.start()
        found.append(ParsedBox(label, coords, (span_start, match.end())))
    return found


def _parse_labelled_boxes(text: str, pattern: re.Pattern[str]) -> list[ParsedBox]:
    """Boxes of ``pattern`` labelled by the text before them on their line (else the line before): Qwen2-VL's
    syntax after a server dropped its special tokens, ``dog(10,20),(300,400)``, and ms-swift's
    ``QWENVL_BBOX_FORMAT=new`` rendering of ``<ref-object><bbox>``, ``dog[10, 20, 300, 400]``."""
    found: list[ParsedBox] = []
    previous_end = 0
    for match in pattern.finditer(text):
        lines = [line for line in text[previous_end : match.start()].splitlines() if line.strip()]
        label = lines[-1].strip(" \t,.;:") if lines else ""
        coords = (float(match[1]), float(match[2]), float(match[3]), float(match[4]))
        found.append(ParsedBox(label or None, coords, (previous_end if label else match.start(), match.end())))
        previous_end = match.end()
    return found


def _balanced_objects(text: str) -> list[tuple[int, int]]:
    """Spans of ``{...}`` with balanced braces (strings respected), innermost objects included."""
    spans = []
    stack: list[int] = []
    in_string: str | None = None
    escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == in_string:
                in_string = None
        elif char == '"':
            in_string = char
        elif char == "{":
            stack.append(index)
        elif char == "}" and stack:
            spans.append((stack.pop(), index + 1))
    return spans


def _parse_json_boxes(text: str) -> list[ParsedBox]:
    found: list[ParsedBox] = []
    taken: list[tuple[int, int]] = []
    for start, end in sorted(_balanced_objects(text), key=lambda span: span[1] - span[0]):
        if any(start <= t_start and t_end <= end for t_start, t_end in taken):
            continue  # an enclosing object of a box already found (e.g. {"cat": {"bbox_2d": ...}})
        box = _object_box(text[start:end])
        if box is None:
            continue
        label, coords = box
        found.append(ParsedBox(label, coords, (start, end)))
        taken.append((start, end))
    return found


def _object_box(chunk: str) -> tuple[str | None, Box] | None:
    try:
        item = json.loads(chunk)
    except ValueError:
        item = None
    if isinstance(item, dict):
        raw = item.get("bbox_2d", item.get("bbox"))
        if not (isinstance(raw, list) and len(raw) == 4):
            return None
        try:
            coords = tuple(float(value) for value in raw)
        except (TypeError, ValueError):
            return None
        label = item.get("label")
        return (label.strip() if isinstance(label, str) and label.strip() else None), coords  # type: ignore[return-value]
    match = _LOOSE_BBOX_RE.search(chunk)  # pseudo-JSON: single quotes, trailing commas, comments
    if match is None:
        return None
    label_match = _LOOSE_LABEL_RE.search(chunk)
    label = label_match.group(1).strip() if label_match else None
    return (label or None), (float(match[1]), float(match[2]), float(match[3]), float(match[4]))


# --- coordinate frames ---------------------------------------------------------------------------------------


def smart_resize(
    width: int, height: int, *, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """The (width, height) a Qwen-VL processor resizes an image to: sides multiples of ``factor``, pixel count
    within ``[min_pixels, max_pixels]``, aspect ratio kept as well as possible (Qwen's own algorithm).

    Raises:
        ValueError: a side is not positive or the aspect ratio exceeds 200 (the processor refuses those too).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size: expected positive width and height, got {width}x{height}")
    if max(width, height) / min(width, height) > 200:
        raise ValueError(f"image size: aspect ratio must be at most 200, got {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


def to_original_pixels(
    coords: Box, family: Family, original_size: tuple[int, int], input_size: tuple[int, int]
) -> Box | None:
    """Map coordinates in ``family``'s frame to pixels of the original image, clamped to it.

    Corners are re-ordered when the model wrote them swapped. Returns None for a box with no area inside the
    image.

    Raises:
        ValueError: a Qwen2.5-VL box without the engine's ``input_size`` (it cannot be placed).

    Example: Qwen2-VL ``(500, 250, 1000, 750)`` on a 640x480 image → ``(320.0, 120.0, 640.0, 360.0)``.
    """
    width, height = original_size
    if family in NORM1000_FAMILIES:
        sx, sy = width / 1000.0, height / 1000.0
    else:
        in_w, in_h = input_size
        if in_w <= 0 or in_h <= 0:
            raise ValueError(f"{family} boxes are in pixels of the resized input; the engine reported {input_size}")
        sx, sy = width / in_w, height / in_h
    x0, y0, x1, y1 = coords
    x0, x1 = sorted((x0 * sx, x1 * sx))
    y0, y1 = sorted((y0 * sy, y1 * sy))
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return (x0, y0, x1, y1)


# --- labels --------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\w]+", re.UNICODE)


def _norm(text: str) -> str:
    return " ".join(_WORD_RE.sub(" ", text.casefold().replace("_", " ")).split())


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _singular_phrase(text: str) -> str:
    return " ".join(_singular(word) for word in text.split())


def match_label(raw: str | None, labels: Sequence[str]) -> str | None:
    """The config label ``raw`` names, or None.

    Tries, in order: exact text; case, punctuation and ``_``/``-`` ignored; plurals (``dogs`` → ``dog``,
    ``boxes`` → ``box``); a label contained as whole words (``black cat`` → ``cat``) when exactly one label
    is. A box without a label takes the config's only label when there is exactly one.

    Example: ``match_label("Traffic lights", ["traffic_light", "car"]) == "traffic_light"``.
    """
    if raw is None or not raw.strip():
        return labels[0] if len(labels) == 1 else None
    if raw in labels:
        return raw
    norm = _norm(raw)
    by_norm = {_norm(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    singular = _singular_phrase(norm)
    by_singular = {_singular_phrase(key): label for key, label in by_norm.items()}
    if singular in by_singular:
        return by_singular[singular]
    words = f" {singular} "
    contained = [label for key, label in by_singular.items() if key and f" {key} " in words]
    return contained[0] if len(contained) == 1 else None


# --- scores --------------------------------------------------------------------------------------------------


def _offsets(generation: Generation) -> list[int] | None:
    if not generation.tokens or len(generation.tokens) != len(generation.logprobs):
        return None
    if "".join(generation.tokens) != generation.text:
        return None
    offsets, position = [], 0
    for token in generation.tokens:
        offsets.append(position)
        position += len(token)
    return offsets


def _mean_prob(logprobs: Sequence[float]) -> float | None:
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return None
    return round(math.exp(sum(finite) / len(finite)), 6)


def answer_score(generation: Generation) -> float | None:
    """exp(mean token log-prob) of the whole answer (end-of-turn excluded); None without log-probs."""
    return _mean_prob(generation.logprobs)


def span_score(generation: Generation, span: tuple[int, int]) -> float | None:
    """exp(mean log-prob) of the tokens overlapping the character ``span`` of the answer.

    Falls back to :func:`answer_score` when tokens and text cannot be aligned (an engine without token detail).
    """
    offsets = _offsets(generation)
    if offsets is None:
        return answer_score(generation)
    start, end = span
    picked = [
        lp
        for offset, token, lp in zip(offsets, generation.tokens, generation.logprobs, strict=True)
        if offset < end and offset + len(token) > start
    ]
    return _mean_prob(picked) if picked else answer_score(generation)


def option_probabilities(logprobs: Sequence[float]) -> list[float]:
    """Softmax of the options' total log-probs: each option's share of the probability the model gives to
    any of them. Options the engine could not score (``-inf``) get 0."""
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return [1.0 / len(logprobs)] * len(logprobs) if logprobs else []
    top = max(finite)
    weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in logprobs]
    total = sum(weights)
    return [weight / total for weight in weights]


# --- typed regions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextRegion:
    """A TextArea answer: one text (caption) or one per question (VQA with several questions)."""

    from_name: str
    to_name: str
    texts: tuple[str, ...]
    score: float | None
    kind: Literal["textarea"] = "textarea"


@dataclass(frozen=True)
class ChoiceRegion:
    """The chosen option(s) of a Choices control."""

    from_name: str
    to_name: str
    choices: tuple[str, ...]
    score: float | None
    kind: Literal["choices"] = "choices"


@dataclass(frozen=True)
class BoxRegion:
    """A labelled rectangle in Label Studio percent of the original image (all four within 0–100)."""

    from_name: str
    to_name: str
    label: str
    x: float
    y: float
    width: float
    height: float
    original_width: int
    original_height: int
    score: float | None
    region_id: str
    kind: Literal["rectanglelabels"] = "rectanglelabels"


Region = TextRegion | ChoiceRegion | BoxRegion


def box_region(
    box: Box, *, label: str, from_name: str, to_name: str, original_size: tuple[int, int], score: float | None,
    region_id: str,
) -> BoxRegion:  # fmt: skip
    """A pixel box of the original image as a Label Studio rectangle in percent, rounded to 1e-4 and inside
    0–100.

    Example: ``(320, 120, 640, 360)`` on 640x480 → x=50, y=25, width=50, height=50.
    """
    width, height = original_size
    x0, y0, x1, y1 = box

    def pct(value: float, total: int) -> float:
        return min(100.0, max(0.0, round(value / total * 100.0, 4)))

    x, y = pct(x0, width), pct(y0, height)
    return BoxRegion(
        from_name=from_name,
        to_name=to_name,
        label=label,
        x=x,
        y=y,
        width=min(pct(x1 - x0, width), round(100.0 - x, 4)),
        height=min(pct(y1 - y0, height), round(100.0 - y, 4)),
        original_width=width,
        original_height=height,
        score=score,
        region_id=region_id,
    )


def boxes_from_generation(
    generation: Generation,
    *,
    family: Family,
    labels: Sequence[str],
    from_name: str,
    to_name: str,
    original_size: tuple[int, int],
    id_prefix: str,
) -> list[BoxRegion]:
    """Parse ``generation`` into rectangles of ``labels``: family frame → original pixels → LS percent.

    Boxes whose label matches none of ``labels``, and boxes with no area inside the image, are dropped with
    one log line each (the raw label is logged, never the whole answer). Never raises.
    """
    regions = []
    for index, parsed in enumerate(parse_boxes(generation.text)):
        label = match_label(parsed.label, labels)
        if label is None:
            log.info("regions: %s dropped a box labelled %r (config labels: %s)", from_name, parsed.label, labels)
            continue
        try:
            box = to_original_pixels(parsed.coords, family, original_size, generation.input_size)
        except ValueError as exc:
            log.warning("regions: %s dropped a box: %s", from_name, exc)
            continue
        if box is None:
            log.info("regions: %s dropped a box with no area inside the image: %s", from_name, parsed.coords)
            continue
        regions.append(
            box_region(
                box,
                label=label,
                from_name=from_name,
                to_name=to_name,
                original_size=original_size,
                score=span_score(generation, parsed.span),
                region_id=f"{id_prefix}{index}",
            )
        )
    return regions


def choices_from_text(text: str, options: Sequence[str]) -> tuple[str, ...]:
    """The options a generated multiple-choice answer names, in the options' order.

    Training rows answer with the chosen options joined by ", " (``converters/rows.py``); the answer is split at
    commas, semicolons and new lines and each piece matched like a box label (:func:`match_label`: case,
    punctuation, plurals). An answer that is one option as a whole is that option (an option may hold a comma).
    Pieces naming no option are ignored.

    Example: ``choices_from_text("Indoor, text", ["indoor", "people", "text"]) == ("indoor", "text")``.
    """
    answer = clean_answer(text)
    if answer in options:
        return (answer,)
    named = {match_label(piece, options) for piece in re.split(r"[,;\n]", answer) if piece.strip()}
    return tuple(option for option in options if option in named)


def clean_answer(text: str) -> str:
    """A TextArea answer from generated text: special tokens and a surrounding markdown fence removed,
    whitespace trimmed."""
    text = re.sub(r"<\|[a-z_]+\|>", "", text)
    fenced = re.fullmatch(r"\s*```[a-zA-Z]*\n?(.*?)\n?```\s*", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    return text.strip()
