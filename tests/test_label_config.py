"""Label configs -> ControlSpecs: the shipped templates, every rule of converters.label_config, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.errors import ConvertError, LabelConfigError
from converters.label_config import DEFAULT_PROMPTS, ControlSpec, Question, parse_label_config
from converters.samples import SAMPLE_LABEL_CONFIG

TEMPLATES = Path(__file__).resolve().parent.parent / "label_configs"
REVIEW = '<Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>'


def summary(spec: ControlSpec) -> tuple[object, ...]:
    question = None
    if spec.question is not None:
        question = (spec.question.origin, spec.question.text, spec.question.data_key)
    return (spec.name, spec.tag, spec.kind, spec.image, spec.data_key, spec.labels, question, spec.prompt_source)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("caption.xml", [
            ("caption", "TextArea", "caption", "image", "image", (), None, "default"),
            ("review", "Choices", "review", "image", "image", ("accept", "reject"), None, "default"),
        ]),
        ("vqa.xml", [
            ("answer", "TextArea", "vqa", "image", "image", (), ("header", None, "question"), "default"),
            ("review", "Choices", "review", "image", "image", ("accept", "reject"), None, "default"),
        ]),
        ("grounding.xml", [
            ("label", "RectangleLabels", "grounding", "image", "image", ("person", "car", "dog", "cat", "redact"), None, "default"),
            ("review", "Choices", "review", "image", "image", ("accept", "reject"), None, "default"),
        ]),
        ("marked_screenshot.xml", [
            ("description", "TextArea", "marked", "image", "image", (), None, "default"),
            ("regions", "RectangleLabels", "grounding", "image", "image", ("marks", "redact"), None, "default"),
            ("review", "Choices", "review", "image", "image", ("accept", "reject"), None, "default"),
        ]),
    ],
)  # fmt: skip
def test_templates_parse_into_the_expected_controls(template: str, expected: list[tuple[object, ...]]) -> None:
    config = parse_label_config((TEMPLATES / template).read_text())
    assert [summary(spec) for spec in config.controls] == expected
    assert config.skipped == ()
    assert config.review is not None and config.review.name == "review"
    assert config.image_key == "image"
    assert (TEMPLATES / template).read_text().lstrip().startswith("<!--")


def test_the_sample_project_config_mixes_every_kind() -> None:
    config = parse_label_config(SAMPLE_LABEL_CONFIG)
    kinds = {spec.name: spec.kind for spec in config.controls}
    assert kinds == {
        "caption": "caption",  # labelloopKind="caption" wins over the marks rule
        "answer": "vqa",
        "description": "marked",  # the image has a RectangleLabels with a "marks" label
        "objects": "grounding",
        "scene": "choices",
        "review": "review",
    }
    description = config.control("description")
    assert description is not None and description.prompt_source == "attribute"


def config_with(body: str, **kwargs: object) -> list[ControlSpec]:
    xml = f'<View><Image name="image" value="$image"/>{body}{REVIEW}</View>'
    return list(parse_label_config(xml, **kwargs).controls)[:-1]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "kind", "question"),
    [
        ('<TextArea name="t" toName="image"/>', "caption", None),
        ('<TextArea name="t" toName="image" question="What colour is the car?"/>', "vqa", ("attribute", "What colour is the car?", None)),
        ('<TextArea name="t" toName="image" question="$q"/>', "vqa", ("attribute", None, "q")),
        ('<Text name="q" value="$question"/><TextArea name="t" toName="image,q"/>', "vqa", ("object", None, "question")),
        ('<Header value="$question"/><TextArea name="t" toName="image"/>', "vqa", ("header", None, "question")),
        ('<Text name="qq" value="$asked"/><TextArea name="t" toName="image"/>', "vqa", ("header", None, "asked")),
        ('<Header value="Describe the picture"/><TextArea name="t" toName="image"/>', "caption", None),
        ('<Header value="$question"/><Choices name="c" toName="image"><Choice value="x"/></Choices><TextArea name="t" toName="image"/>', "caption", None),
        ('<TextArea name="t" toName="image" labelloopKind="marked"/>', "marked", None),
        ('<TextArea name="t" toName="image"/><RectangleLabels name="r" toName="image"><Label value="marks"/></RectangleLabels>', "marked", None),
    ],
)  # fmt: skip
def test_how_a_textarea_becomes_caption_vqa_or_marked(
    body: str, kind: str, question: tuple[str, str | None, str | None] | None
) -> None:
    spec = next(s for s in config_with(body) if s.name == "t")
    assert spec.kind == kind
    got = None if spec.question is None else (spec.question.origin, spec.question.text, spec.question.data_key)
    assert got == question


def test_a_textarea_bound_only_to_a_question_text_uses_the_one_image() -> None:
    (spec,) = config_with('<Text name="q" value="$question"/><TextArea name="t" toName="q"/>')
    assert (spec.kind, spec.image, spec.data_key) == ("vqa", "image", "image")


def test_choices_read_the_same_question_sources_and_render_their_options() -> None:
    (plain,) = config_with(
        '<Choices name="weather" toName="image"><Choice value="sun"/><Choice value="rain"/></Choices>'
    )
    assert plain.kind == "choices" and plain.question is None
    assert (
        plain.render_prompt() == "Which weather fits this image?\nOptions: sun, rain.\nAnswer with one of the options."
    )
    (asked,) = config_with(
        '<Header value="$q"/><Choices name="tags" toName="image" choice="multiple"><Choice value="a"/><Choice value="b"/></Choices>'
    )
    assert asked.multiple and asked.question == Question("header", data_key="q")
    assert asked.render_prompt(question="Which apply?") == (
        "Which apply?\nOptions: a, b.\nAnswer with every option that applies, separated by commas."
    )


def test_prompts_come_from_the_attribute_then_the_settings_then_the_default() -> None:
    body = (
        '<TextArea name="a" toName="image" prompt="Say what {name} shows."/>'
        '<TextArea name="b" toName="image"/><TextArea name="c" toName="image"/>'
        '<RectangleLabels name="r" toName="image"><Label value="cat"/><Label value="redact"/></RectangleLabels>'
    )
    a, b, c, r = config_with(body, prompts={"b": "Caption it {weird} please.", "a": "ignored"})
    assert (a.prompt_source, a.render_prompt()) == ("attribute", "Say what a shows.")
    assert (b.prompt_source, b.render_prompt()) == ("settings", "Caption it {weird} please.")
    assert (c.prompt_source, c.render_prompt()) == ("default", DEFAULT_PROMPTS["caption"])
    assert r.render_prompt(labels=["cat"]) == (
        "Find every object of these kinds in the image: cat. Give each object's label and box."
    )


@pytest.mark.parametrize(
    ("body", "name", "reason"),
    [
        ('<Polygon name="p" toName="image"/>', "p", "Polygon is not exported by labelloop"),
        ('<TextArea name="t" toName="image" perRegion="true"/>', "t", "per-region TextArea (attached to regions, not to the image)"),
        ('<Image name="second" value="$other"/><TextArea name="t" toName="second"/>', "second", "a second Image: one image per task is exported for now"),
        ('<Image name="second" value="$other"/><TextArea name="t" toName="second"/>', "t", "bound to second, not to an exported Image"),
        ('<Rectangle name="box" toName="image"/>', "box", "Rectangle is not exported by labelloop"),
        ('<Image name="logo" value="https://example.com/logo.png"/>', "logo", "Image value 'https://example.com/logo.png' is not a $variable"),
    ],
)  # fmt: skip
def test_unusable_controls_are_skipped_with_a_reason(body: str, name: str, reason: str) -> None:
    xml = f'<View><Image name="image" value="$image"/><TextArea name="keep" toName="image"/>{body}</View>'
    config = parse_label_config(xml)
    assert config.skipped_reason(name) == reason
    assert config.control("keep") is not None


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "label config: empty (expected <View> with an <Image> and controls)"),
        ("   \n", "label config: empty (expected <View> with an <Image> and controls)"),
        ("<View><Image name='image' value='$image'/>", "label config: not valid XML: Premature end of data in tag View line 1 (line 1, column 43)"),
        ('<!DOCTYPE View [<!ENTITY x "y">]><View><Image name="image" value="$image"/></View>', "label config: a DOCTYPE is not allowed"),
        ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>', 'label config: no <Image name="..." value="$key"/> to read images from'),
        ('<View><Image name="image" value="$image"/><Polygon name="p" toName="image"/></View>', "label config: nothing labelloop can export: no TextArea, Choices or RectangleLabels bound to an Image (p (Polygon): Polygon is not exported by labelloop)"),
        ('<View><Image name="image" value="$image"/><TextArea name="t" toName="image"/><Choices name="review" toName="image"><Choice value="ok"/><Choice value="bad"/></Choices></View>', "label config: review control 'review' has no choice 'accept' (choices: ok, bad)"),
        ('<View><Image name="image" value="$image"/><TextArea name="t" toName="image" labelloopKind="poem"/></View>', "label config: TextArea 't': labelloopKind='poem' is not one of caption, vqa, marked"),
        ('<View><Image name="image" value="$image"/><TextArea name="t" toName="image" labelloopKind="vqa"/></View>', "label config: TextArea 't': labelloopKind='vqa' but it has no question (add question=\"...\" or a <Header value=\"$question\"/> before it)"),
    ],
)  # fmt: skip
def test_broken_configs_raise_label_config_error_naming_the_problem(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError) as info:
        parse_label_config(xml)
    assert str(info.value) == message


def test_the_review_control_name_and_accept_value_come_from_the_caller() -> None:
    xml = (
        '<View><Image name="image" value="$image"/><TextArea name="t" toName="image"/>'
        '<Choices name="qa" toName="image"><Choice value="good"/><Choice value="bad"/></Choices></View>'
    )
    config = parse_label_config(xml, review_control="qa", review_accept="good")
    assert config.review is not None and config.review.kind == "review"
    assert config.review_accept == "good"
    assert parse_label_config(xml).control("qa").kind == "choices"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("question", "data", "expected"),
    [
        (Question("attribute", text="Why?"), {}, ["Why?"]),
        (Question("header", data_key="q"), {"q": "What?"}, ["What?"]),
        (Question("header", data_key="q"), {"q": ["One?", "Two?"]}, ["One?", "Two?"]),
    ],
)
def test_questions_resolve_from_task_data(question: Question, data: dict[str, object], expected: list[str]) -> None:
    assert question.resolve(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "data.q: missing (the label config reads the question from it)"),
        ({"q": 3}, "data.q: expected a question string or a list of them, got 3"),
        ({"q": ["ok", 2]}, "data.q: expected a question string or a list of them, got ['ok', 2]"),
        ({"q": "  "}, "data.q: empty question"),
        ({"q": []}, "data.q: empty question"),
    ],
)
def test_bad_question_data_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConvertError) as info:
        Question("header", data_key="q").resolve(data)
    assert str(info.value) == message
