"""regions.py: parsing real model outputs of each Qwen family, coordinate frames, labels, scores."""

from __future__ import annotations

import math

import pytest

from ml_backend.engines.base import Generation
from ml_backend.regions import (
    BoxRegion,
    answer_score,
    box_region,
    boxes_from_generation,
    choices_from_text,
    clean_answer,
    match_label,
    option_probabilities,
    parse_boxes,
    smart_resize,
    span_score,
    to_original_pixels,
)

# Real answers, as the models wrote them (sources in the ids' comments).
REAL_OUTPUTS = [
    pytest.param(
        # OS-Atlas-Base-7B (a Qwen2-VL-7B fine-tune), model card example, decoded with special tokens kept.
        "<|object_ref_start|>language switch<|object_ref_end|><|box_start|>(576,12),(592,42)<|box_end|><|im_end|>",
        [("language switch", (576, 12, 592, 42))],
        id="qwen2_vl-os-atlas",
    ),
    pytest.param(
        # Qwen2-VL grounding with two boxes after one reference (a Qwen2-VL output parser's documented example).
        "<|object_ref_start|>birch tree<|object_ref_end|><|box_start|>(530,351),(602,516)<|box_end|>"
        "<|box_start|>(176,106),(232,160)<|box_end|>",
        [("birch tree", (530, 351, 602, 516)), ("birch tree", (176, 106, 232, 160))],
        id="qwen2_vl-two-boxes-one-ref",
    ),
    pytest.param(
        # Qwen2-VL rollout from an RL counting reward's docstring.
        "<|object_ref_start|>people<|object_ref_end|><|box_start|>(495,246),(999,997)<|box_end|><|im_end|>",
        [("people", (495, 246, 999, 997))],
        id="qwen2_vl-counting-rollout",
    ),
    pytest.param(
        # Qwen-VL-style grounded caption (box inside prose), from a quality-assessment dataset.
        "There is one distortion in the image: <|object_ref_start|>Moderate low clarity<|object_ref_end|>"
        "<|box_start|>(3,5),(998,995)<|box_end|> affects the tree branches.",
        [("Moderate low clarity", (3, 5, 998, 995))],
        id="qwen2_vl-box-in-prose",
    ),
    pytest.param(
        # Qwen2.5-VL's cookbook format (fenced, tab-indented list), from an engine's test of a real reply.
        '```json\n[\n\t{"bbox_2d": [611, 336, 832, 498], "label": "stamp"}\n]\n```',
        [("stamp", (611, 336, 832, 498))],
        id="qwen2_5_vl-fenced",
    ),
    pytest.param(
        # Qwen2.5-VL answer with prose after the fence (a streaming parser's test of a real reply).
        '```json\n[\n\t{"bbox_2d": [233, 318, 552, 641], "label": "program dial"}\n]\n```\nTurn the dial to OFF first.',
        [("program dial", (233, 318, 552, 641))],
        id="qwen2_5_vl-fence-then-prose",
    ),
    pytest.param(
        # Qwen3-VL-8B (Ollama) on a RefCOCO sample: bare object, no label, 0-1000 grid.
        '{"bbox_2d": [734, 0, 999, 243]}',
        [(None, (734, 0, 999, 243))],
        id="qwen3_vl-refcoco-bare",
    ),
    pytest.param(
        # Qwen3.5-9B (MLX), 0-1000 grid like Qwen3-VL, cookbook formatting.
        '```json\n[\n\t{"bbox_2d": [215, 585, 350, 665], "label": "scratch"}\n]\n```',
        [("scratch", (215, 585, 350, 665))],
        id="qwen3-family-fenced",
    ),
    pytest.param(
        # Qwen3-VL fine-tuning data format with two objects on one line.
        '[{"bbox_2d": [135, 114, 1016, 672], "label": "house"}, {"bbox_2d": [12, 40, 100, 200], "label": "tree"}]',
        [("house", (135, 114, 1016, 672)), ("tree", (12, 40, 100, 200))],
        id="qwen3_vl-two-objects",
    ),
]


@pytest.mark.parametrize(("text", "expected"), REAL_OUTPUTS)
def test_parses_real_outputs(text: str, expected: list[tuple[str | None, tuple[float, ...]]]) -> None:
    boxes = parse_boxes(text)
    assert [(box.label, box.coords) for box in boxes] == [(label, tuple(map(float, c))) for label, c in expected]
    for box in boxes:
        start, end = box.span
        assert 0 <= start < end <= len(text)


MALFORMED = [
    pytest.param(
        '```json\n[\n\t{"bbox_2d": [10, 20, 30, 40], "label": "cat"},\n\t{"bbox_2d": [50, 60, 7',
        [("cat", (10, 20, 30, 40))],
        id="truncated-json-keeps-complete-objects",
    ),
    pytest.param('```json\n[\n\t{"bbox_2d": [10, 20, 3', [], id="truncated-first-object"),
    pytest.param('{"bbox_2d": [1, 2, 3], "label": "cat"}', [], id="three-numbers"),
    pytest.param('{"bbox_2d": [1, 2, 3, 4], "label": 5}', [(None, (1, 2, 3, 4))], id="label-not-a-string"),
    pytest.param('{"bbox_2d": ["1", "2", "3", "4.5"], "label": "cat"}', [("cat", (1, 2, 3, 4.5))], id="numbers-as-strings"),
    pytest.param('{"bbox_2d": [1, 2, "x", 4], "label": "cat"}', [], id="not-numbers"),
    pytest.param("[{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'},]", [("cat", (1, 2, 3, 4))], id="python-dict-quotes"),
    pytest.param('{"cat": {"bbox_2d": [1, 2, 3, 4]}}', [(None, (1, 2, 3, 4))], id="nested-object"),
    pytest.param('[{"point_2d": [346, 328], "label": "person"}]', [], id="points-are-not-boxes"),
    pytest.param("<|object_ref_start|>cat<|object_ref_end|><|box_start|>(1,2),(3,", [], id="truncated-token-box"),
    pytest.param("I cannot find any cat in this image.", [], id="prose-only"),
    pytest.param("", [], id="empty"),
    pytest.param("\n\n\n\n", [], id="tiny-model-newlines"),
    pytest.param("language switch(576,12),(592,42)", [("language switch", (576, 12, 592, 42))], id="special-tokens-stripped-by-server"),
    # ms-swift 4.6 with QWENVL_BBOX_FORMAT=new renders the exporter's `<ref-object><bbox>` lines so
    pytest.param("cat[87, 77, 391, 538]\ndog[435, 38, 996, 462]", [("cat", (87, 77, 391, 538)), ("dog", (435, 38, 996, 462))], id="ms-swift-new-bbox-format"),
    pytest.param("[10, 20, 30, 40]", [(None, (10, 20, 30, 40))], id="ms-swift-new-bbox-format-no-ref"),
    pytest.param('{"bbox_2d": [1, 2, 3, 4], "label": "a \\"quoted\\" {brace}"}', [('a "quoted" {brace}', (1, 2, 3, 4))], id="braces-in-strings"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_tolerates_malformed_outputs(text: str, expected: list[tuple[str | None, tuple[float, ...]]]) -> None:
    assert [(box.label, box.coords) for box in parse_boxes(text)] == [
        (label, tuple(map(float, c))) for label, c in expected
    ]


@pytest.mark.parametrize(
    ("width", "height", "factor", "min_pixels", "max_pixels"),
    [
        (640, 480, 28, 3136, 12845056),
        (640, 480, 28, 3136, 50176),
        (1920, 1080, 28, 3136, 1003520),
        (33, 29, 28, 3136, 50176),
        (100, 300, 28, 3136, 50176),
        (4000, 30, 28, 3136, 1003520),
        (333, 222, 32, 4096, 65536),
        (1, 1, 28, 3136, 50176),
    ],
)
def test_smart_resize_is_the_processors(width: int, height: int, factor: int, min_pixels: int, max_pixels: int) -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as theirs

    expected_h, expected_w = theirs(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    assert smart_resize(width, height, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels) == (
        expected_w,
        expected_h,
    )


@pytest.mark.parametrize(
    ("size", "message"),
    [((0, 10), "expected positive width and height, got 0x10"), ((201, 1), "aspect ratio must be at most 200")],
)
def test_smart_resize_refuses_what_the_processor_refuses(size: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        smart_resize(*size)


@pytest.mark.parametrize(
    ("family", "coords", "input_size", "expected"),
    [
        ("qwen2_vl", (500, 250, 1000, 750), (0, 0), (320.0, 120.0, 640.0, 360.0)),
        ("qwen3_vl", (500, 250, 1000, 750), (0, 0), (320.0, 120.0, 640.0, 360.0)),
        # Qwen2.5-VL: pixels of the 644x476 resized input the processor made of a 640x480 image
        ("qwen2_5_vl", (322, 119, 644, 357), (644, 476), (320.0, 120.0, 640.0, 360.0)),
        ("qwen2_vl", (1000, 750, 500, 250), (0, 0), (320.0, 120.0, 640.0, 360.0)),  # corners swapped
        ("qwen2_vl", (-20, 0, 1200, 1000), (0, 0), (0.0, 0.0, 640.0, 480.0)),  # clamped to the image
    ],
)
def test_to_original_pixels_per_family(
    family: str, coords: tuple[float, ...], input_size: tuple[int, int], expected: tuple[float, ...]
) -> None:
    got = to_original_pixels(coords, family, (640, 480), input_size)  # type: ignore[arg-type]
    assert got == pytest.approx(expected, abs=1e-9)


def test_boxes_without_area_are_dropped() -> None:
    assert to_original_pixels((1200, 100, 1300, 200), "qwen2_vl", (640, 480), (0, 0)) is None
    assert to_original_pixels((100, 100, 100, 200), "qwen3_vl", (640, 480), (0, 0)) is None


def test_qwen2_5_boxes_need_the_input_size() -> None:
    with pytest.raises(ValueError, match="qwen2_5_vl boxes are in pixels of the resized input"):
        to_original_pixels((1, 2, 3, 4), "qwen2_5_vl", (640, 480), (0, 0))


@pytest.mark.parametrize(
    ("raw", "labels", "expected"),
    [
        ("cat", ["cat", "dog"], "cat"),
        ("Cat", ["cat", "dog"], "cat"),
        ("dogs", ["cat", "dog"], "dog"),
        ("boxes", ["box", "bag"], "box"),
        ("puppies", ["puppy"], "puppy"),
        ("Traffic lights", ["traffic_light", "car"], "traffic_light"),
        ("traffic-light", ["traffic_light", "car"], "traffic_light"),
        ("black cat", ["cat", "dog"], "cat"),
        ("cat and dog", ["cat", "dog"], None),  # ambiguous
        ("bird", ["cat", "dog"], None),
        (None, ["cat"], "cat"),  # the only label
        (None, ["cat", "dog"], None),
        ("", ["cat", "dog"], None),
        ("glass", ["glass", "cup"], "glass"),  # not made singular into "glas"
    ],
)
def test_match_label(raw: str | None, labels: list[str], expected: str | None) -> None:
    assert match_label(raw, labels) == expected


def test_box_region_in_percent_within_0_100() -> None:
    region = box_region(
        (320, 120, 640, 360), label="cat", from_name="label", to_name="image", original_size=(640, 480),
        score=0.9, region_id="r1",
    )  # fmt: skip
    assert (region.x, region.y, region.width, region.height) == (50.0, 25.0, 50.0, 50.0)
    assert (region.original_width, region.original_height) == (640, 480)
    odd = box_region((0.0, 0.0, 333.0, 222.0), label="cat", from_name="l", to_name="i", original_size=(333, 222),
                     score=None, region_id="r2")  # fmt: skip
    assert odd.x + odd.width <= 100.0
    assert odd.y + odd.height <= 100.0


def _generation(
    text: str, tokens: list[str], logprobs: list[float], input_size: tuple[int, int] = (0, 0)
) -> Generation:
    return Generation(text, tuple(tokens), tuple(logprobs), input_size)


def test_span_score_uses_the_tokens_that_wrote_the_region() -> None:
    tokens = ["cat:", " [1,2,3,4]", " dog:", " [5,6,7,8]"]
    generation = _generation("".join(tokens), tokens, [-0.1, -0.1, -2.0, -2.0])
    first = span_score(generation, (0, len("cat: [1,2,3,4]")))
    second = span_score(generation, (len("cat: [1,2,3,4]"), len(generation.text)))
    assert first == pytest.approx(math.exp(-0.1), rel=1e-5)
    assert second == pytest.approx(math.exp(-2.0), rel=1e-5)


def test_span_score_falls_back_to_the_answer_when_tokens_do_not_align() -> None:
    generation = _generation("abc", ["x", "y"], [-1.0, -3.0])
    assert span_score(generation, (0, 1)) == pytest.approx(math.exp(-2.0), rel=1e-5)
    assert answer_score(_generation("", [], [])) is None


def test_option_probabilities() -> None:
    shares = option_probabilities([math.log(0.2), math.log(0.6), -math.inf])
    assert shares == pytest.approx([0.25, 0.75, 0.0])
    assert option_probabilities([-math.inf, -math.inf]) == [0.5, 0.5]


@pytest.mark.parametrize(
    ("family", "text", "input_size", "expected"),
    [
        ("qwen2_vl", "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(500,250),(1000,750)<|box_end|>", (0, 0),
         [("cat", 50.0, 25.0, 50.0, 50.0)]),
        ("qwen2_5_vl", '```json\n[{"bbox_2d": [322, 119, 644, 357], "label": "dogs"}]\n```', (644, 476),
         [("dog", 50.0, 25.0, 50.0, 50.0)]),
        ("qwen3_vl", '[{"bbox_2d": [500, 250, 1000, 750], "label": "cat"}, {"bbox_2d": [0, 0, 10, 10], "label": "bird"}]',
         (0, 0), [("cat", 50.0, 25.0, 50.0, 50.0)]),
    ],
)  # fmt: skip
def test_boxes_from_generation_per_family(
    family: str, text: str, input_size: tuple[int, int], expected: list[tuple[str, float, float, float, float]]
) -> None:
    tokens = [text[i : i + 4] for i in range(0, len(text), 4)]
    generation = _generation(text, tokens, [-0.05] * len(tokens), input_size)
    regions = boxes_from_generation(
        generation, family=family, labels=["cat", "dog"], from_name="label", to_name="image",  # type: ignore[arg-type]
        original_size=(640, 480), id_prefix="t1-",
    )  # fmt: skip
    assert [(r.label, r.x, r.y, r.width, r.height) for r in regions] == expected
    assert all(isinstance(r, BoxRegion) and r.score == pytest.approx(math.exp(-0.05), rel=1e-4) for r in regions)


def test_dropped_labels_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    generation = _generation('{"bbox_2d": [1, 2, 300, 400], "label": "bird"}', [], [])
    with caplog.at_level("INFO", logger="ml_backend.regions"):
        assert boxes_from_generation(generation, family="qwen3_vl", labels=["cat", "dog"], from_name="label",
                                     to_name="image", original_size=(64, 48), id_prefix="") == []  # fmt: skip
    assert "label dropped a box labelled 'bird' (config labels: ['cat', 'dog'])" in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  A red square on white.\n", "A red square on white."),
        ("```\nA caption in a fence\n```", "A caption in a fence"),
        ("two cats<|im_end|>", "two cats"),
        ("\n\n\n", ""),
    ],
)
def test_clean_answer(text: str, expected: str) -> None:
    assert clean_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("indoor, text", ("indoor", "text")),  # the training target: chosen options joined by ", ", config order
        ("Text; Indoor.", ("indoor", "text")),  # case, punctuation and order as a model may vary them
        ("people\nnothing else", ("people",)),
        ("none of them", ()),
        ("yes, with text", ("yes, with text",)),  # an option holding a comma, as a whole answer
    ],
)
def test_choices_from_text(text: str, expected: tuple[str, ...]) -> None:
    assert choices_from_text(text, ["indoor", "people", "text", "yes, with text"]) == expected
