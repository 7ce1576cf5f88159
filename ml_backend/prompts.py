"""What to ask the model for each control of a label config, per model family.

The label config is read by :mod:`converters.label_config` (one :class:`ControlSpec` per usable control, its
question source and its prompt template); this module turns a spec and one task's data into :class:`Ask`
objects, which the predictor sends to the engine.

**A model is asked the way it was trained.** A LoRA adapter of labelloop learnt from the exporter's rows
(``converters/rows.py``), so it is asked with exactly their prompt: :meth:`LabelConfig.prompt_for`, the one
definition both sides call, with questions normalised as the rows normalise them (``converters/text.py``). The
base model was trained by Qwen, so for grounding with the default prompt it gets its family's own phrasing
(:data:`GROUNDING_PROMPTS`), which makes it answer in its native syntax. A prompt given by the config or the
settings is used for both. ``tests/test_train_serve_roundtrip.py`` encodes exporter rows with ms-swift's own
templates and checks that the backend asks the same and parses the trained answers back.

- ``caption`` / ``marked`` (TextArea): the spec's prompt; the answer becomes the text.
- ``vqa`` (TextArea with a question): the question(s) from the task data, one answer per question.
- ``grounding`` (RectangleLabels): a prompt naming the config's labels but the redact label (see above for
  which prompt).
- ``choices`` (Choices): the spec's prompt; a single choice scores every option by its likelihood as the whole
  answer (its training target is the option), a ``choice="multiple"`` one is generated, as its training target
  is the chosen options joined by ", " (no single option is a whole answer there).
- ``review`` (the reviewer's verdict): never predicted.

Templates: a control's ``prompt="..."`` attribute, else ``Settings.prompts[control name]``, else the default.
Placeholders: ``{question}``, ``{options}``, ``{labels}``, ``{name}``, ``{how}``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from converters.label_config import ControlSpec, LabelConfig, parse_label_config
from converters.text import normalize_text

if TYPE_CHECKING:
    from ml_backend.settings import Family, Settings

GROUNDING_PROMPTS: dict[str, str] = {
    # The base models' own grounding phrasing (never a labelloop adapter's: see the module docstring).
    # Qwen2-VL answers grounding requests with <|object_ref_start|>…<|box_start|>(x1,y1),(x2,y2)<|box_end|>.
    "qwen2_vl": "Detect every object of these categories in the image: {labels}. "
    "Output the bounding box of each object together with its category.",
    # The Qwen2.5-VL cookbook's phrasing; boxes come back in pixels of the resized input.
    "qwen2_5_vl": "Locate every object of these categories in the image: {labels}. Output the bbox coordinates "
    'of each one in JSON format: [{"bbox_2d": [x1, y1, x2, y2], "label": "<category>"}].',
    # The Qwen3-VL cookbook's phrasing; boxes come back on a 0-1000 grid.
    "qwen3_vl": 'Locate every instance that belongs to the following categories: "{labels}". '
    "Report bbox coordinates in JSON format.",
}


@dataclass(frozen=True)
class Ask:
    """One question to the model about one task's image.

    Attributes:
        control: the control the answer fills.
        prompt: the user prompt (the engine adds the image).
        options: non-empty for Choices: score these instead of generating.
        index: which question of a multi-question VQA control this is (answers keep this order).
    """

    control: ControlSpec
    prompt: str
    options: tuple[str, ...] = ()
    index: int = 0


@functools.lru_cache(maxsize=64)
def _parse(xml: str, prompts_json: str, names: tuple[str, str, str, str]) -> LabelConfig:
    review_control, review_accept, redact_label, marks_label = names
    return parse_label_config(
        xml,
        prompts=json.loads(prompts_json),
        review_control=review_control,
        review_accept=review_accept,
        redact_label=redact_label,
        marks_label=marks_label,
    )


def read_label_config(xml: str, settings: Settings) -> LabelConfig:
    """The parsed label config, read with the same settings as the exporter's (prompts, review control and
    accept value, redact and marks labels), cached per config text and settings.

    Raises:
        converters.errors.LabelConfigError: the config cannot be parsed or has no usable control.
    """
    prompts = json.dumps(settings.prompts, sort_keys=True)
    names = (settings.review_control, settings.review_accept, settings.redact_label, settings.marks_label)
    return _parse(xml, prompts, names)


def predictable(config: LabelConfig) -> list[ControlSpec]:
    """The controls the backend predicts (every usable one but the review verdict)."""
    return [spec for spec in config.controls if spec.kind != "review"]


def grounding_prompt(config: LabelConfig, spec: ControlSpec, family: Family, *, tuned: bool) -> str:
    """The grounding prompt: the training prompt for a labelloop adapter (``tuned``) or when the config or the
    settings gave one; the family's own phrasing for the base model."""
    if tuned or spec.prompt_source != "default":
        return config.prompt_for(spec)
    return GROUNDING_PROMPTS[family].replace("{labels}", ", ".join(config.box_labels(spec)))


def asks_for(
    spec: ControlSpec, data: Mapping[str, Any], family: Family, *, config: LabelConfig, tuned: bool
) -> list[Ask]:
    """What to ask the model for ``spec`` (a control of ``config``) about one task.

    ``tuned``: the model answering is a labelloop adapter, trained on the exporter's rows.

    Raises:
        converters.errors.ConvertError: the task lacks the question the control reads (``data.<key>: missing``).
    """
    if spec.kind in ("caption", "marked"):
        return [Ask(spec, config.prompt_for(spec))]
    if spec.kind == "vqa":
        questions = spec.question.resolve(data) if spec.question else []
        return [Ask(spec, config.prompt_for(spec, question=_question(q)), index=i) for i, q in enumerate(questions)]
    if spec.kind == "grounding":
        return [Ask(spec, grounding_prompt(config, spec, family, tuned=tuned))]
    if spec.kind == "choices":
        question = _question(spec.question.resolve(data)[0]) if spec.question else None
        options = () if spec.multiple else spec.labels
        return [Ask(spec, config.prompt_for(spec, question=question), options=options)]
    return []


def _question(text: str) -> str:
    """A question as the exporter's rows write it (``RowOptions.normalize_text``, on by default and in the loop)."""
    return normalize_text(text)
