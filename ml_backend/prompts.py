"""What to ask the model for each control of a label config, per model family.

The label config is read by :mod:`converters.label_config` (one :class:`ControlSpec` per usable control, its
question source and its prompt template); this module turns a spec and one task's data into :class:`Ask`
objects, which the predictor sends to the engine:

- ``caption`` / ``marked`` (TextArea): the spec's prompt; the answer becomes the text.
- ``vqa`` (TextArea with a question): the question(s) from the task data, one answer per question.
- ``grounding`` (RectangleLabels): a family-specific prompt naming the config's labels, so each family answers
  in the syntax it was trained on (Qwen2-VL special tokens, Qwen2.5-VL/Qwen3-VL ``bbox_2d`` JSON).
- ``choices`` (Choices): the spec's prompt, and every option scored by its likelihood as the answer.
- ``review`` (the reviewer's verdict): never predicted.

Templates: a control's ``prompt="..."`` attribute, else ``Settings.prompts[control name]``, else the default
(for grounding: :data:`GROUNDING_PROMPTS` of the family). Placeholders: ``{question}``, ``{options}``,
``{labels}``, ``{name}``, ``{how}``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from converters.label_config import ControlSpec, LabelConfig, parse_label_config

if TYPE_CHECKING:
    from ml_backend.settings import Family, Settings

GROUNDING_PROMPTS: dict[str, str] = {
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
def _parse(xml: str, prompts_json: str, review_control: str, review_accept: str) -> LabelConfig:
    return parse_label_config(
        xml, prompts=json.loads(prompts_json), review_control=review_control, review_accept=review_accept
    )


def read_label_config(xml: str, settings: Settings) -> LabelConfig:
    """The parsed label config (cached per config text and prompt settings).

    Raises:
        converters.errors.LabelConfigError: the config cannot be parsed or has no usable control.
    """
    prompts = json.dumps(settings.prompts, sort_keys=True)
    return _parse(xml, prompts, settings.review_control, settings.review_accept)


def predictable(config: LabelConfig) -> list[ControlSpec]:
    """The controls the backend predicts (every usable one but the review verdict)."""
    return [spec for spec in config.controls if spec.kind != "review"]


def grounding_prompt(spec: ControlSpec, family: Family) -> str:
    """The grounding prompt: the family's default unless the config or the settings gave one."""
    if spec.prompt_source != "default":
        return spec.render_prompt()
    return GROUNDING_PROMPTS[family].replace("{labels}", ", ".join(spec.labels))


def asks_for(spec: ControlSpec, data: Mapping[str, Any], family: Family) -> list[Ask]:
    """What to ask the model for ``spec`` about one task.

    Raises:
        converters.errors.ConvertError: the task lacks the question the control reads (``data.<key>: missing``).
    """
    if spec.kind in ("caption", "marked"):
        return [Ask(spec, spec.render_prompt())]
    if spec.kind == "vqa":
        questions = spec.question.resolve(data) if spec.question else []
        return [Ask(spec, spec.render_prompt(question=q), index=i) for i, q in enumerate(questions)]
    if spec.kind == "grounding":
        return [Ask(spec, grounding_prompt(spec, family))]
    if spec.kind == "choices":
        question = spec.question.resolve(data)[0] if spec.question else None
        return [Ask(spec, spec.render_prompt(question=question), options=spec.labels)]
    return []
