"""A Label Studio label config, read once into typed :class:`ControlSpec` objects.

Shared by the exporter (which rows to write) and the ML backend (what to ask the model for each control), so
both agree on what every control means. The config is parsed with label-studio-sdk's ``LabelInterface``
(controls, objects, labels) plus its XML tree for what ``LabelInterface`` leaves out (``Header`` tags are not
objects); no regular expressions on XML.

How controls are read (one :class:`ControlSpec` per usable control, in config order):

- ``TextArea`` bound to an ``Image``:
    - **vqa** when it has a question: a ``question="..."`` attribute (literal text, or ``$key`` to read the
      task data), or a ``Text``/``HyperText`` object in its ``toName``, or the nearest preceding sibling
      ``Header``/``Text`` whose ``value`` is ``$key`` (no other control in between). ``data[key]`` may be a
      string or a list of strings: several questions, answered by the TextArea's text entries in order.
      Literal ``Header`` text (no ``$``) is an instruction to annotators and is not used as a question.
    - **marked** (a description of a screenshot whose drawn marks are visual prompts) when a
      ``RectangleLabels`` on the same image has the marks label (``marks`` by default);
    - **caption** otherwise.
    An explicit ``labelloopKind="caption|vqa|marked"`` attribute overrides the rules.
- ``RectangleLabels`` bound to an ``Image``: **grounding**, with its labels. The redact label (``redact`` by
  default) is not a label to learn: its regions are blurred in the written image and left out of rows.
- ``Choices`` named like the review control (``review`` by default): **review**, the accept/reject verdict;
  the accept value must be one of its choices. Other ``Choices``: **choices**, with the same question sources
  as a TextArea (default question when there is none).
- Anything else (``Polygon``, ``Brush``, per-region controls, controls bound to no Image, a second Image) is
  listed in :attr:`LabelConfig.skipped` with the reason.

Prompts, per control: its own ``prompt="..."`` attribute, else ``prompts[control name]`` (``Settings.prompts``),
else :data:`DEFAULT_PROMPTS` for its kind. Placeholders ``{question}``, ``{options}``, ``{labels}``,
``{name}`` and ``{how}`` are filled by :meth:`ControlSpec.render_prompt`; other braces are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from converters.errors import ConvertError, LabelConfigError

ControlKind = Literal["caption", "vqa", "marked", "grounding", "choices", "review"]
KINDS: tuple[ControlKind, ...] = get_args(ControlKind)
PromptSource = Literal["attribute", "settings", "default"]

DEFAULT_PROMPTS: dict[ControlKind, str] = {
    "caption": "Describe this image.",
    "marked": "Describe what the marks drawn on this screenshot point out.",
    "vqa": "{question}",
    "grounding": "Find every object of these kinds in the image: {labels}. Give each object's label and box.",
    "choices": "{question}\nOptions: {options}.\nAnswer with {how}.",
    "review": "",
}
KIND_ATTRIBUTE = "labelloopKind"
_TEXT_KINDS: frozenset[str] = frozenset({"caption", "vqa", "marked"})
_QUESTION_TAGS = frozenset({"header", "text", "hypertext"})


@dataclass(frozen=True, slots=True)
class Question:
    """Where a control's question comes from: literal ``text`` or the task-data key ``data_key``.

    ``origin`` says how it was found: ``attribute`` (``question="..."``), ``object`` (a Text object in
    ``toName``) or ``header`` (a preceding ``Header``/``Text``).
    """

    origin: Literal["attribute", "object", "header"]
    text: str | None = None
    data_key: str | None = None

    def resolve(self, data: Mapping[str, Any]) -> list[str]:
        """The question(s) for one task's ``data``.

        Raises:
            ConvertError: the data key is missing, empty, or not a string or list of strings (the message names
                ``data.<key>``; callers prefix the task).
        """
        if self.text is not None:
            return [self.text]
        key = self.data_key or ""
        if key not in data:
            raise ConvertError(f"data.{key}: missing (the label config reads the question from it)")
        value = data[key]
        if isinstance(value, str):
            values = [value]
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            values = list(value)
        else:
            raise ConvertError(f"data.{key}: expected a question string or a list of them, got {value!r:.80}")
        if not values or not all(item.strip() for item in values):
            raise ConvertError(f"data.{key}: empty question")
        return values


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One usable control of the label config and what it means for training and prompting.

    Attributes:
        name: the control's ``name`` (the ``from_name`` of its results).
        tag: the tag as written in the config (``TextArea``, ``RectangleLabels``, ``Choices``).
        kind: caption, vqa, marked, grounding, choices or review.
        image: name of the ``Image`` object it is bound to (None only for a review control bound to no image).
        data_key: the task-data key that image reads (``$image`` -> ``image``).
        labels: RectangleLabels labels or Choices choices, in config order (empty for text controls).
        multiple: Choices with ``choice="multiple"``.
        question: where the question comes from (vqa, and choices when given one).
        prompt: the prompt template (see :meth:`render_prompt`).
        prompt_source: whether the prompt came from the control's attribute, the settings or the default.
        attrs: the control's raw XML attributes.
    """

    name: str
    tag: str
    kind: ControlKind
    image: str | None
    data_key: str | None
    labels: tuple[str, ...] = ()
    multiple: bool = False
    question: Question | None = None
    prompt: str = ""
    prompt_source: PromptSource = "default"
    attrs: Mapping[str, str] = field(default_factory=dict)

    def render_prompt(self, *, question: str | None = None, labels: Sequence[str] | None = None) -> str:
        """The prompt with its placeholders filled.

        Args:
            question: the question for ``{question}`` (vqa, choices); choices without a question get
                ``Which <name> fits this image?``.
            labels: the labels for ``{labels}`` (grounding); defaults to :attr:`labels`.

        Returns:
            The prompt text, without the ``<image>`` tag (``rows.py`` adds it).
        """
        if question is None and self.kind == "choices":
            question = f"Which {self.name} fits this image?"
        how = "every option that applies, separated by commas" if self.multiple else "one of the options"
        values = {
            "{question}": question or "",
            "{options}": ", ".join(self.labels),
            "{labels}": ", ".join(self.labels if labels is None else labels),
            "{name}": self.name,
            "{how}": how,
        }
        text = self.prompt
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        return text.strip()


@dataclass(frozen=True, slots=True)
class SkippedControl:
    """A control the exporter and the ML backend leave alone, and why."""

    name: str
    tag: str
    reason: str


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """A parsed label config: the usable controls, the skipped ones, and the names that steer the export.

    Attributes:
        xml: the config as given.
        controls: usable controls in config order, the review control included.
        skipped: controls that are not used, with the reason.
        images: ``Image`` object name -> the task-data key it reads.
        review: the review control, if the config has one.
        review_accept: the choice of the review control that accepts an annotation.
        redact_label: RectangleLabels label whose regions are blurred and never exported.
        marks_label: RectangleLabels label for marks drawn on screenshots.
    """

    xml: str
    controls: tuple[ControlSpec, ...]
    skipped: tuple[SkippedControl, ...]
    images: Mapping[str, str]
    review: ControlSpec | None
    review_accept: str
    redact_label: str
    marks_label: str

    def control(self, name: str) -> ControlSpec | None:
        """The usable control called ``name``, or None."""
        for spec in self.controls:
            if spec.name == name:
                return spec
        return None

    def by_kind(self, *kinds: ControlKind) -> list[ControlSpec]:
        """Usable controls of the given kinds, in config order."""
        return [spec for spec in self.controls if spec.kind in kinds]

    @property
    def image_key(self) -> str:
        """The task-data key of the image the usable controls are bound to."""
        return next(iter(self.images.values()))

    def skipped_reason(self, name: str) -> str | None:
        """Why control ``name`` is skipped, or None when it is not a skipped control."""
        for skipped in self.skipped:
            if skipped.name == name:
                return skipped.reason
        return None

    def box_labels(self, spec: ControlSpec) -> tuple[str, ...]:
        """The labels a grounding control is trained on and predicted with: its labels but the redact label
        (redacted regions are blurred, never learnt)."""
        return tuple(label for label in spec.labels if label != self.redact_label)

    def prompt_for(self, spec: ControlSpec, *, question: str | None = None) -> str:
        """The user prompt of ``spec`` (for one ``question`` of it) as training rows carry it, after their
        ``<image>`` tag: the one definition shared by the exporter's rows and the backend's questions to a model
        trained on them. Grounding lists :meth:`box_labels`; the question is used as given (rows normalise it
        first, see ``converters/text.py``)."""
        if spec.kind == "grounding":
            return spec.render_prompt(labels=self.box_labels(spec))
        return spec.render_prompt(question=question)


def parse_label_config(
    xml: str,
    *,
    prompts: Mapping[str, str] | None = None,
    review_control: str = "review",
    review_accept: str = "accept",
    redact_label: str = "redact",
    marks_label: str = "marks",
) -> LabelConfig:
    """Read a Label Studio label config into a :class:`LabelConfig`.

    Args:
        xml: the label config XML (the project's ``label_config``).
        prompts: prompt templates per control name (``Settings.prompts``); a control's ``prompt`` attribute wins.
        review_control: name of the Choices control that holds the review verdict (``Settings.review_control``).
        review_accept: the verdict that accepts an annotation (``Settings.review_accept``).
        redact_label: RectangleLabels label whose regions are privacy redactions.
        marks_label: RectangleLabels label for marks drawn on screenshots.

    Returns:
        The parsed config.

    Raises:
        LabelConfigError: the XML is empty or malformed, has a DOCTYPE, has no Image with a ``$variable``, the
            review control lacks the accept choice, a ``labelloopKind`` is unknown or impossible, or no control
            is usable; the message says which.
    """
    root, interface = _parse_xml(xml)
    objects = {obj.name: obj for obj in (interface.objects or [])}
    images, skipped = _read_images(objects)
    controls = list(interface.controls or [])
    reader = _ControlReader(
        objects=objects,
        images=images,
        elements={el.get("name"): el for el in root.iter() if isinstance(el.tag, str) and el.get("toName")},
        marks_images={
            name
            for control in controls
            if control.tag.lower() == "rectanglelabels" and marks_label in (control.labels or [])
            for name in control.to_name
        },
        prompts=prompts or {},
        review_control=review_control,
    )
    specs: list[ControlSpec] = []
    review: ControlSpec | None = None
    for control in controls:
        result = reader.read(control)
        if isinstance(result, SkippedControl):
            skipped.append(result)
            continue
        if result.kind == "review":
            if review_accept not in result.labels:
                raise LabelConfigError(
                    f"label config: review control {result.name!r} has no choice {review_accept!r} "
                    f"(choices: {', '.join(result.labels) or 'none'})"
                )
            review = result
        specs.append(result)
    if not any(spec.kind != "review" for spec in specs):
        detail = "; ".join(f"{s.name} ({s.tag}): {s.reason}" for s in skipped) or "no controls at all"
        raise LabelConfigError(
            "label config: nothing labelloop can export: no TextArea, Choices or RectangleLabels bound to an "
            f"Image ({detail})"
        )
    return LabelConfig(
        xml=xml,
        controls=tuple(specs),
        skipped=tuple(skipped),
        images=images,
        review=review,
        review_accept=review_accept,
        redact_label=redact_label,
        marks_label=marks_label,
    )


def _parse_xml(xml: str) -> tuple[Any, Any]:
    """The XML tree (safe parser: no entities, no network, no DTD) and label-studio-sdk's LabelInterface."""
    from label_studio_sdk.label_interface import LabelInterface
    from lxml import etree  # type: ignore[import-untyped]  # lxml ships no type hints

    if not xml or not xml.strip():
        raise LabelConfigError("label config: empty (expected <View> with an <Image> and controls)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)
    try:
        root = etree.fromstring(xml.encode("utf-8"), parser)
    except etree.XMLSyntaxError as exc:
        last = exc.error_log.last_error
        what = last.message if last is not None else str(exc)
        line, column = exc.position
        raise LabelConfigError(f"label config: not valid XML: {what} (line {line}, column {column})") from exc
    if root.getroottree().docinfo.doctype:
        raise LabelConfigError("label config: a DOCTYPE is not allowed")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # label-studio-sdk raises bare Exception subclasses for bad configs
        raise LabelConfigError(f"label config: Label Studio cannot parse it: {exc}") from exc
    return root, interface


def _read_images(objects: Mapping[str, Any]) -> tuple[dict[str, str], list[SkippedControl]]:
    """The exported Image (name -> data key) and the Image tags that are not used."""
    images: dict[str, str] = {}
    skipped: list[SkippedControl] = []
    for obj in objects.values():
        if obj.tag.lower() != "image":
            continue
        if not obj.value_is_variable:
            skipped.append(SkippedControl(obj.name, obj.tag, f"Image value {obj.value!r} is not a $variable"))
        elif images:
            skipped.append(SkippedControl(obj.name, obj.tag, "a second Image: one image per task is exported for now"))
        else:
            images[obj.name] = obj.value_name
    if not images:
        raise LabelConfigError('label config: no <Image name="..." value="$key"/> to read images from')
    return images, skipped


@dataclass(frozen=True, slots=True)
class _ControlReader:
    """Turns one LabelInterface control into a ControlSpec (or a SkippedControl) using the config around it."""

    objects: Mapping[str, Any]
    images: Mapping[str, str]
    elements: Mapping[str, Any]
    marks_images: set[str]
    prompts: Mapping[str, str]
    review_control: str

    def read(self, control: Any) -> ControlSpec | SkippedControl:
        name: str = control.name
        tag: str = control.tag
        attrs: dict[str, str] = dict(control.attr or {})
        lowered = tag.lower()
        image = next((target for target in control.to_name if target in self.images), None)
        labels = tuple(control.labels or ())
        if lowered == "choices" and name == self.review_control:
            return ControlSpec(name, tag, "review", image, self.images.get(image or ""), labels, attrs=attrs)
        problem = self._problem(control, attrs, labels)
        if problem is not None:
            return SkippedControl(name, tag, problem)
        if image is None:
            image = next(iter(self.images))  # bound to a question Text only: the config's one image is meant
        question = _find_question(attrs, control.to_name, self.elements.get(name), self.objects)
        kind: ControlKind = {"rectanglelabels": "grounding", "choices": "choices"}.get(lowered, "caption")  # type: ignore[assignment]
        if lowered == "textarea":
            kind = _text_kind(name, attrs, question, image in self.marks_images)
        prompt, source = _prompt(name, kind, attrs, self.prompts)
        return ControlSpec(
            name=name,
            tag=tag,
            kind=kind,
            image=image,
            data_key=self.images[image],
            labels=labels,
            multiple=attrs.get("choice", "single").lower() == "multiple",
            question=None if kind == "caption" else question,
            prompt=prompt,
            prompt_source=source,
            attrs=attrs,
        )

    def _problem(self, control: Any, attrs: Mapping[str, str], labels: tuple[str, ...]) -> str | None:
        """Why the control cannot be used, or None."""
        tag: str = control.tag
        lowered = tag.lower()
        if lowered not in ("textarea", "choices", "rectanglelabels"):
            return f"{tag} is not exported by labelloop"
        if attrs.get("perRegion", "").lower() == "true":
            return f"per-region {tag} (attached to regions, not to the image)"
        if not any(target in self.images for target in control.to_name):
            question_only = all(
                target in self.objects and self.objects[target].tag.lower() in _QUESTION_TAGS
                for target in control.to_name
            )
            if len(self.images) != 1 or lowered == "rectanglelabels" or not question_only:
                return f"bound to {', '.join(control.to_name)}, not to an exported Image"
        if lowered == "rectanglelabels" and not labels:
            return "RectangleLabels without labels"
        if lowered == "choices" and not labels:
            return "Choices without choices (dynamic choices are not exported)"
        return None


def _text_kind(name: str, attrs: Mapping[str, str], question: Question | None, marked_image: bool) -> ControlKind:
    explicit = attrs.get(KIND_ATTRIBUTE)
    if explicit is not None:
        if explicit not in _TEXT_KINDS:
            raise LabelConfigError(
                f"label config: TextArea {name!r}: {KIND_ATTRIBUTE}={explicit!r} is not one of caption, vqa, marked"
            )
        if explicit == "vqa" and question is None:
            raise LabelConfigError(
                f"label config: TextArea {name!r}: {KIND_ATTRIBUTE}='vqa' but it has no question (add "
                'question="..." or a <Header value="$question"/> before it)'
            )
        return explicit  # type: ignore[return-value]
    if question is not None:
        return "vqa"
    return "marked" if marked_image else "caption"


def _question(origin: Literal["attribute", "object", "header"], value: str) -> Question:
    if value.startswith("$") and len(value) > 1:
        return Question(origin, data_key=value[1:])
    return Question(origin, text=value)


def _find_question(
    attrs: Mapping[str, str], to_names: Sequence[str], element: Any, objects: Mapping[str, Any]
) -> Question | None:
    """The question source of a control: its attribute, a Text object it targets, or a preceding $Header."""
    attribute = (attrs.get("question") or "").strip()
    if attribute:
        return _question("attribute", attribute)
    for target in to_names:
        obj = objects.get(target)
        if obj is not None and obj.tag.lower() in _QUESTION_TAGS:
            return _question("object", obj.value or "")
    siblings = element.itersiblings(preceding=True) if element is not None else ()
    for sibling in siblings:
        if not isinstance(sibling.tag, str):
            continue
        if sibling.get("toName"):
            break  # another control sits between: the header belongs to it
        value = (sibling.get("value") or "").strip()
        if sibling.tag.lower() in _QUESTION_TAGS and value.startswith("$") and len(value) > 1:
            return Question("header", data_key=value[1:])
    return None


def _prompt(
    name: str, kind: ControlKind, attrs: Mapping[str, str], prompts: Mapping[str, str]
) -> tuple[str, PromptSource]:
    if attrs.get("prompt", "").strip():
        return attrs["prompt"], "attribute"
    if prompts.get(name, "").strip():
        return prompts[name], "settings"
    return DEFAULT_PROMPTS[kind], "default"
