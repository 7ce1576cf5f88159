"""prompts.py: what is asked per control and family, built on converters.label_config."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from backend_helpers import CHOICES_CONFIG, GROUNDING_CONFIG, VQA_CONFIG

from converters.errors import ConvertError, LabelConfigError
from ml_backend.prompts import GROUNDING_PROMPTS, asks_for, predictable, read_label_config
from ml_backend.settings import Settings


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("qwen2_vl", "Detect every object of these categories in the image: cat, dog. Output the bounding box of "
                     "each object together with its category."),
        ("qwen2_5_vl", 'Locate every object of these categories in the image: cat, dog. Output the bbox coordinates '
                       'of each one in JSON format: [{"bbox_2d": [x1, y1, x2, y2], "label": "<category>"}].'),
        ("qwen3_vl", 'Locate every instance that belongs to the following categories: "cat, dog". Report bbox '
                     "coordinates in JSON format."),
    ],
)  # fmt: skip
def test_grounding_prompt_per_family(make_settings: Callable[..., Settings], family: str, expected: str) -> None:
    config = read_label_config(GROUNDING_CONFIG, make_settings())
    [ask] = asks_for(config.controls[0], {"image": "x"}, family)  # type: ignore[arg-type]
    assert ask.prompt == expected
    assert set(GROUNDING_PROMPTS) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


def test_prompt_from_the_config_attribute_wins(make_settings: Callable[..., Settings]) -> None:
    xml = GROUNDING_CONFIG.replace('name="label"', 'name="label" prompt="Box every {labels}."')
    config = read_label_config(xml, make_settings(prompts={"label": "from settings"}))
    [ask] = asks_for(config.controls[0], {}, "qwen2_vl")
    assert ask.prompt == "Box every cat, dog."


def test_prompt_from_settings(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(GROUNDING_CONFIG, make_settings(prompts={"label": "Find {labels} quickly."}))
    [ask] = asks_for(config.controls[0], {}, "qwen3_vl")
    assert ask.prompt == "Find cat, dog quickly."


def test_vqa_asks_each_question_of_the_task(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(VQA_CONFIG, make_settings())
    asks = asks_for(config.controls[0], {"image": "x", "question": ["What colour?", "How many?"]}, "qwen2_vl")
    assert [(ask.prompt, ask.index) for ask in asks] == [("What colour?", 0), ("How many?", 1)]


def test_vqa_without_its_question_names_the_data_key(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(VQA_CONFIG, make_settings())
    with pytest.raises(ConvertError, match=r"data\.question: missing"):
        asks_for(config.controls[0], {"image": "x"}, "qwen2_vl")


def test_choices_are_scored_options(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(CHOICES_CONFIG, make_settings())
    [ask] = asks_for(config.controls[0], {"image": "x"}, "qwen2_vl")
    assert ask.options == ("indoor", "outdoor")
    assert ask.prompt == "Which scene fits this image?\nOptions: indoor, outdoor.\nAnswer with one of the options."


def test_review_control_and_unsupported_tags_are_not_asked(make_settings: Callable[..., Settings]) -> None:
    xml = CHOICES_CONFIG.replace(
        "</View>",
        '<Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices>'
        '<Polygon name="poly" toName="image"/></View>',
    )
    config = read_label_config(xml, make_settings())
    assert [spec.name for spec in predictable(config)] == ["scene"]
    assert [(s.name, s.tag) for s in config.skipped] == [("poly", "Polygon")]


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "label config: empty"),
        ("<View><Image name='i' value='$i'/>", "label config: not valid XML"),
        ("<View><Image name='i' value='$i'/><Polygon name='p' toName='i'/></View>", "nothing labelloop can export"),
    ],
)
def test_unusable_configs_raise(make_settings: Callable[..., Settings], xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message):
        read_label_config(xml, make_settings())
