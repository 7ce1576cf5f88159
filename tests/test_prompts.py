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
def test_the_base_model_gets_its_familys_grounding_prompt(
    make_settings: Callable[..., Settings], family: str, expected: str
) -> None:
    xml = GROUNDING_CONFIG.replace('<Label value="dog"/>', '<Label value="dog"/><Label value="redact"/>')
    config = read_label_config(xml, make_settings())
    [ask] = asks_for(config.controls[0], {"image": "x"}, family, config=config, tuned=False)  # type: ignore[arg-type]
    assert ask.prompt == expected  # the redact label is never asked for
    assert set(GROUNDING_PROMPTS) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_an_adapter_gets_the_prompt_of_its_training_rows(make_settings: Callable[..., Settings], family: str) -> None:
    xml = GROUNDING_CONFIG.replace('<Label value="dog"/>', '<Label value="dog"/><Label value="redact"/>')
    config = read_label_config(xml, make_settings())
    [ask] = asks_for(config.controls[0], {"image": "x"}, family, config=config, tuned=True)  # type: ignore[arg-type]
    assert (
        ask.prompt
        == config.prompt_for(config.controls[0])
        == ("Find every object of these kinds in the image: cat, dog. Give each object's label and box.")
    )  # what converters/rows.py writes (tests/test_train_serve_roundtrip.py checks it through ms-swift)


def test_the_exporters_label_names_come_from_the_settings(make_settings: Callable[..., Settings]) -> None:
    xml = GROUNDING_CONFIG.replace('<Label value="dog"/>', '<Label value="dog"/><Label value="hide"/>')
    config = read_label_config(xml, make_settings(redact_label="hide", marks_label="dog"))
    assert (config.redact_label, config.marks_label) == ("hide", "dog")
    assert config.box_labels(config.controls[0]) == ("cat", "dog")


def test_prompt_from_the_config_attribute_wins(make_settings: Callable[..., Settings]) -> None:
    xml = GROUNDING_CONFIG.replace('name="label"', 'name="label" prompt="Box every {labels}."')
    config = read_label_config(xml, make_settings(prompts={"label": "from settings"}))
    for tuned in (False, True):
        [ask] = asks_for(config.controls[0], {}, "qwen2_vl", config=config, tuned=tuned)
        assert ask.prompt == "Box every cat, dog."


def test_prompt_from_settings(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(GROUNDING_CONFIG, make_settings(prompts={"label": "Find {labels} quickly."}))
    [ask] = asks_for(config.controls[0], {}, "qwen3_vl", config=config, tuned=False)
    assert ask.prompt == "Find cat, dog quickly."


def test_vqa_asks_each_question_of_the_task(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(VQA_CONFIG, make_settings())
    data = {"image": "x", "question": ["What  colour?", "How\u200b many？"]}
    asks = asks_for(config.controls[0], data, "qwen2_vl", config=config, tuned=False)
    # normalised as the exporter's rows normalise questions (whitespace, invisible characters, full width)
    assert [(ask.prompt, ask.index) for ask in asks] == [("What colour?", 0), ("How many?", 1)]


def test_vqa_without_its_question_names_the_data_key(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(VQA_CONFIG, make_settings())
    with pytest.raises(ConvertError, match=r"data\.question: missing"):
        asks_for(config.controls[0], {"image": "x"}, "qwen2_vl", config=config, tuned=False)


def test_choices_are_scored_options(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(CHOICES_CONFIG, make_settings())
    [ask] = asks_for(config.controls[0], {"image": "x"}, "qwen2_vl", config=config, tuned=False)
    assert ask.options == ("indoor", "outdoor")
    assert ask.prompt == "Which scene fits this image?\nOptions: indoor, outdoor.\nAnswer with one of the options."


def test_multiple_choices_are_generated_like_their_training_answer(make_settings: Callable[..., Settings]) -> None:
    config = read_label_config(
        CHOICES_CONFIG.replace('name="scene"', 'name="scene" choice="multiple"'), make_settings()
    )
    [ask] = asks_for(config.controls[0], {"image": "x"}, "qwen2_vl", config=config, tuned=True)
    assert ask.options == ()  # the training target is "indoor, outdoor": no single option is a whole answer
    assert ask.prompt.endswith("Answer with every option that applies, separated by commas.")


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
