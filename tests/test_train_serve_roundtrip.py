"""Train/serve agreement, per Qwen-VL family: what a LoRA adapter learns from the exporter's rows is what the backend
asks it and can read back.

Rows come from the exporter's row builders (``converters/rows.py``) for one annotated task with every control kind
(caption, two VQA questions, boxes of two labels plus a redacted region, a single and a multiple Choices), are
loaded by ms-swift's own ``load_dataset`` and encoded by ms-swift's own template of the family in train mode (the
tiny model's real processor; no weights). Then:

- the prompt tokens ms-swift trains on are the tokens the ``transformers`` engine sends for the prompt the
  backend asks (chat template, system prompt, image placeholders);
- the backend's real :class:`~ml_backend.predictor.Predictor`, serving an adapter, runs on an engine that replays
  the trained answers (the decoded ``labels != -100`` tokens) for the prompts it is asked, with the ``input_size``
  the ``transformers`` engine computes for the image; an unknown prompt fails the test. Its regions must give back
  the annotation: texts exactly, boxes within half a frame unit (<= 1 px) with their labels, the choices;
- a single choice's trained answer is exactly the token sequence the engine scores for that option;
- ms-swift's other box rendering (``QWENVL_BBOX_FORMAT=new``) is read back too.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from converters.boxes import Box
from converters.label_config import LabelConfig, parse_label_config
from converters.rows import ImageFrame, RowOptions, build_rows
from converters.samples import LabelStudioExport
from converters.tasks import parse_task
from ml_backend.engines.base import AdapterRef, Generation, GenerationRequest
from ml_backend.engines.transformers import END_OF_TURN, chat_text, configure_processor, input_size
from ml_backend.holder import ModelHolder
from ml_backend.predictor import Predictor
from ml_backend.prompts import GROUNDING_PROMPTS, asks_for
from ml_backend.protocol import TaskPrediction
from ml_backend.regions import BoxRegion, ChoiceRegion, TextRegion, boxes_from_generation
from ml_backend.settings import Settings

pytestmark = pytest.mark.swift

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PROJECT = 3
# Not a multiple of 28 or 32, so the Qwen2.5-VL frame (pixels of the resized input) differs from the image; small
# enough for every pixel bound ms-swift may have set in this process (MAX_PIXELS=50176, as tests/test_swift_dataset).
WIDTH, HEIGHT = 230, 130
XML = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image"/>
  <RectangleLabels name="objects" toName="image">
    <Label value="cat"/><Label value="dog"/><Label value="redact"/>
  </RectangleLabels>
  <Choices name="weather" toName="image"><Choice value="sun"/><Choice value="rain"/></Choices>
  <Choices name="tags" toName="image" choice="multiple" question="Which apply?">
    <Choice value="indoor"/><Choice value="people"/><Choice value="text"/>
  </Choices>
</View>"""
CAPTION = "Two cats and a dog on a grey mat."
QUESTIONS = ["How many  cats?", "What colour is\u200b the mat?"]  # rows normalise questions; so must the backend
ANSWERS = ["Two.", "Grey."]
BOXES = [("cat", (20, 10, 90, 70)), ("dog", (100, 5, 229, 60)), ("cat", (120, 40, 200, 120))]
REDACTED = (0, 100, 40, 130)
MULTIPLE = ("indoor", "text")


@dataclass
class Trained:
    """One encoded row: the user prompts and the assistant answers as the model is trained on them."""

    kind: str
    input_ids: list[int]
    labels: list[int]
    prompts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    answer_ids: list[list[int]] = field(default_factory=list)
    grid: list[int] = field(default_factory=list)  # image_grid_thw: the image ms-swift trained on, in patches

    @property
    def prompt_ids(self) -> list[int]:
        """The tokens before the first trained one (system, user turn with the image, assistant header)."""
        return self.input_ids[: next(i for i, label in enumerate(self.labels) if label != -100)]


@dataclass
class Family:
    name: str
    model: Path
    template: Any  # ms-swift's, QWENVL_BBOX_FORMAT=legacy (its default)
    new_template: Any  # ms-swift's, QWENVL_BBOX_FORMAT=new
    processor: Any  # transformers', configured as the engine configures it
    patch: int
    settings: Settings


@pytest.fixture(scope="module")
def config() -> LabelConfig:
    return parse_label_config(XML)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("roundtrip")
    (root / "media" / "upload" / "1").mkdir(parents=True)
    image = Image.new("RGB", (WIDTH, HEIGHT), (120, 120, 120))
    image.paste((200, 40, 40), (20, 10, 90, 70))
    image.save(root / "media" / "upload" / "1" / "mat.png")
    return root


@pytest.fixture(scope="module")
def rows_jsonl(media: Path, config: LabelConfig) -> Path:
    """The exporter's rows for one task (the written image is the source: no export resize in between)."""
    ls = LabelStudioExport()
    result = [
        ls.textarea("caption", CAPTION),
        ls.textarea("answer", *ANSWERS),
        *[ls.rectangle("objects", Box(*box), WIDTH, HEIGHT, [label]) for label, box in BOXES],
        ls.rectangle("objects", Box(*REDACTED), WIDTH, HEIGHT, ["redact"]),
        ls.choice("weather", "sun"),
        ls.choice("tags", *reversed(MULTIPLE)),
    ]
    task = parse_task(ls.task({"image": "/data/upload/1/mat.png", "question": QUESTIONS}, [ls.annotation(result)]))
    path = str(media / "media" / "upload" / "1" / "mat.png")
    frame = ImageFrame(path=path, sha256="x", source_sha256="x", source="/data/upload/1/mat.png",
                       source_width=WIDTH, source_height=HEIGHT, width=WIDTH, height=HEIGHT)  # fmt: skip
    built = build_rows(task, task.annotations[0], config, frame, RowOptions())
    assert built.notes == []
    assert [(row.kind, row.control) for row in built.rows] == [
        ("caption", "caption"), ("vqa", "answer"), ("grounding", "objects"), ("choices", "weather"),
        ("choices", "tags"),
    ]  # fmt: skip
    out = media / "train.jsonl"
    out.write_text("".join(json.dumps(row.data) + "\n" for row in built.rows))
    return out


@pytest.fixture(scope="module")
def dataset(rows_jsonl: Path) -> list[dict[str, Any]]:
    """The rows as ms-swift's loader hands them to the template (metadata column dropped)."""
    from swift import load_dataset

    loaded, _ = load_dataset([str(rows_jsonl)], strict=True, num_proc=None, load_from_cache_file=False)
    return [loaded[index] for index in range(len(loaded))]


@pytest.fixture(scope="module")
def families(
    tiny_model: Callable[..., Path], make_module_settings: Callable[..., Settings]
) -> Iterator[Callable[[str], Family]]:
    """``families(name)``: ms-swift's templates and the engine's processor for the tiny model of ``name``."""
    import os

    from swift import get_processor, get_template
    from transformers import AutoProcessor

    built: dict[str, Family] = {}
    saved = {key: os.environ.get(key) for key in ("MAX_PIXELS", "QWENVL_BBOX_FORMAT")}

    def get(name: str) -> Family:
        if name not in built:
            model = tiny_model(name)
            settings = make_module_settings(model=str(model), model_family=name)
            swift_processor = get_processor(str(model), model_type=name)
            templates = []
            for bbox_format in ("legacy", "new"):
                os.environ["QWENVL_BBOX_FORMAT"] = bbox_format  # read when the template is made
                template = get_template(swift_processor, template_type=name, max_length=4096,
                                        truncation_strategy="raise")  # fmt: skip
                template.set_mode("train")
                templates.append(template)
            processor = AutoProcessor.from_pretrained(str(model))
            patch = configure_processor(processor, settings)
            built[name] = Family(name, model, templates[0], templates[1], processor, patch, settings)
        return built[name]

    os.environ["MAX_PIXELS"] = "50176"  # as tests/test_swift_dataset.py: ms-swift keeps the first value it sees
    try:
        yield get
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def make_module_settings(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path_factory.mktemp("data"), "ls_media_dir": media / "media",
                                  "cache_ttl": 0, "device": "cpu"}  # fmt: skip
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


_USER_TURN = re.compile(
    r"<\|im_start\|>user\n(?:<\|vision_start\|>(?:<\|image_pad\|>)*<\|vision_end\|>)?(.*?)<\|im_end\|>", re.DOTALL
)


def encode(template: Any, row: dict[str, Any], kind: str) -> Trained:
    """ms-swift's train-mode encoding of ``row``, split into the user prompts and the trained answers."""
    encoded = template.encode(copy.deepcopy(row))
    ids, labels = list(encoded["input_ids"]), list(encoded["labels"])
    tokenizer = template.tokenizer
    trained = Trained(kind, ids, labels)
    trained.prompts = _USER_TURN.findall(tokenizer.decode(ids, skip_special_tokens=False))
    spans: list[list[int]] = []
    for index, label in enumerate(labels):
        if label == -100:
            continue
        if index == 0 or labels[index - 1] == -100:
            spans.append([])
        spans[-1].append(ids[index])
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    for span in spans:  # each answer ends with the end-of-turn token (and a new line): the engine stops there
        assert end in span
        trained.answer_ids.append(span[: span.index(end) + 1])
        trained.answers.append(tokenizer.decode(span[: span.index(end)], skip_special_tokens=False))
    assert len(trained.prompts) == len(trained.answers)
    trained.grid = encoded["image_grid_thw"].tolist()[0]
    return trained


class ReplayEngine:
    """The engine interface answering each prompt with what the adapter was trained to answer to it; the image
    size the model sees is computed as the ``transformers`` engine computes it."""

    def __init__(self, family: Family, trained: Sequence[Trained]) -> None:
        self.family = family.name
        self.base_name = "tiny"
        self._family = family
        self.answers: dict[str, str] = {}
        for row in trained:
            self.answers.update(zip(row.prompts, row.answers, strict=True))
        self.asked: list[str] = []
        self.adapters: list[str] = []

    def input_size(self, image: Image.Image) -> tuple[int, int]:
        grid = self._family.processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
        return input_size(grid[0].tolist(), self._family.patch)

    def _answer(self, request: GenerationRequest) -> str:
        assert request.adapter is not None, "the adapter's own prompts are only asked of the adapter"
        self.asked.append(request.prompt)
        assert request.prompt in self.answers, f"asked {request.prompt!r}; training asked {list(self.answers)}"
        return self.answers[request.prompt]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [Generation(self._answer(r), input_size=self.input_size(r.image)) for r in requests]

    def score_options(self, request: GenerationRequest, options: Sequence[str]) -> list[float]:
        answer = self._answer(request)
        assert answer in options, f"the trained answer {answer!r} is not one of the options {options}"
        return [0.0 if option == answer else -math.inf for option in options]

    def load_adapter(self, adapter: AdapterRef) -> None:
        self.adapters.append(adapter.version)

    def unload_adapter(self, adapter: AdapterRef) -> None:
        pass

    def close(self) -> None:
        pass


def pixel_boxes(regions: Sequence[Any]) -> list[tuple[str, tuple[float, ...]]]:
    """Box regions (Label Studio percent) back in pixels of the image."""
    boxes = [(r.label, (r.x, r.y, r.x + r.width, r.y + r.height)) for r in regions if isinstance(r, BoxRegion)]
    return [(label, (x0 * WIDTH / 100, y0 * HEIGHT / 100, x1 * WIDTH / 100, y1 * HEIGHT / 100))
            for label, (x0, y0, x1, y1) in boxes]  # fmt: skip


def assert_boxes_round_trip(found: list[tuple[str, tuple[float, ...]]], frame: tuple[int, int]) -> None:
    """The annotation's boxes (the redacted one left out), in order, each coordinate within half a unit of the
    frame the family writes boxes in (the only rounding between annotation and answer: the boxes are whole pixels
    of the image already) — and so within 1 px."""
    tolerance = (0.5 * WIDTH / frame[0] + 1e-6, 0.5 * HEIGHT / frame[1] + 1e-6)
    assert max(tolerance) <= 1.0
    expected = sorted(BOXES, key=lambda item: (item[0] != "cat", item[1][1], item[1][0]))  # the rows' order
    assert [label for label, _ in found] == [label for label, _ in expected]
    for (_, got), (_, want) in zip(found, expected, strict=True):
        for axis, (a, b) in enumerate(zip(got, want, strict=True)):
            assert abs(a - b) <= tolerance[axis % 2], (got, want, tolerance)


def trained_size(family: Family, trained: Trained) -> tuple[int, int]:
    """(width, height) of the image as ms-swift resized it for training."""
    _, grid_h, grid_w = trained.grid
    return grid_w * family.patch, grid_h * family.patch


def frame_of(family: Family, trained: Trained) -> tuple[int, int]:
    """The frame of the family's boxes: 0-1000, or (Qwen2.5-VL) the pixels of the resized image ms-swift trained on."""
    if family.name == "qwen2_5_vl":
        return trained_size(family, trained)
    return 1000, 1000


@pytest.mark.parametrize("name", FAMILIES)
def test_an_adapter_is_asked_what_it_was_trained_on_and_read_back(
    name: str, families: Callable[[str], Family], dataset: list[dict[str, Any]], config: LabelConfig
) -> None:
    family = families(name)
    kinds = ["caption", "vqa", "grounding", "choices", "choices_multiple"]
    trained = [encode(family.template, row, kind) for row, kind in zip(dataset, kinds, strict=True)]
    by_kind = {row.kind: row for row in trained}
    grounding = by_kind["grounding"]
    assert "redact" not in grounding.prompts[0] and "redact" not in grounding.answers[0]
    assert "<|box_start|>" in grounding.answers[0]  # ms-swift's legacy rendering, whatever the family

    # The whole prompt the adapter was trained on is what the transformers engine builds for the backend's prompt.
    image = Image.open(family.settings.ls_media_dir / "upload" / "1" / "mat.png")  # type: ignore[operator]
    for row in trained:
        if len(row.prompts) == 1:
            chat = chat_text(family.processor, row.prompts[0])
            sent = family.processor(text=[chat], images=[image], return_tensors="pt")["input_ids"][0].tolist()
            assert sent == row.prompt_ids, row.kind
    # A single choice is trained on exactly the tokens the engine scores for that option (option, end of turn).
    choices = by_kind["choices"]
    scored = chat_text(family.processor, choices.prompts[0]) + "sun" + END_OF_TURN
    ids = family.processor(text=[scored], images=[image], return_tensors="pt")["input_ids"][0].tolist()
    assert ids == choices.prompt_ids + choices.answer_ids[0]

    # The backend's own prediction path, serving an adapter, on the replayed answers.
    engine = ReplayEngine(family, trained)
    holder = ModelHolder(family.settings, lambda settings: engine)
    predictor = Predictor(family.settings, holder)
    try:
        holder.activate(PROJECT, AdapterRef("p3-v1", "/adapters/p3-v1"))
        task = {"id": 1, "data": {"image": "/data/upload/1/mat.png", "question": QUESTIONS}}
        [prediction] = predictor.predict([task], XML, project=PROJECT)
    finally:
        predictor.close()
    assert isinstance(prediction, TaskPrediction) and prediction.error is None
    assert sorted(engine.asked) == sorted(p for row in trained for p in row.prompts)  # every trained prompt, once
    assert engine.input_size(image) == trained_size(family, grounding)  # the model sees what it was trained on
    texts = {r.from_name: r.texts for r in prediction.regions if isinstance(r, TextRegion)}
    assert texts == {"caption": (CAPTION,), "answer": tuple(ANSWERS)}
    choices_found = {r.from_name: r.choices for r in prediction.regions if isinstance(r, ChoiceRegion)}
    assert choices_found == {"weather": ("sun",), "tags": MULTIPLE}
    assert_boxes_round_trip(pixel_boxes(prediction.regions), frame_of(family, grounding))


@pytest.mark.parametrize("name", FAMILIES)
def test_ms_swift_new_bbox_format_is_read_back_too(
    name: str, families: Callable[[str], Family], dataset: list[dict[str, Any]], config: LabelConfig
) -> None:
    family = families(name)
    grounding = encode(family.new_template, dataset[2], "grounding")
    [answer] = grounding.answers
    assert "<|box_start|>" not in answer and re.fullmatch(
        r"(cat|dog)\[\d+, \d+, \d+, \d+\](\n(cat|dog)\[.*\])*", answer
    )
    image = Image.open(family.settings.ls_media_dir / "upload" / "1" / "mat.png")  # type: ignore[operator]
    generation = Generation(answer, input_size=ReplayEngine(family, []).input_size(image))
    spec = config.control("objects")
    assert spec is not None
    regions = boxes_from_generation(
        generation, family=name, labels=config.box_labels(spec), from_name="objects", to_name="image",
        original_size=(WIDTH, HEIGHT), id_prefix="",
    )  # fmt: skip
    assert_boxes_round_trip(pixel_boxes(regions), frame_of(family, grounding))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_base_model_gets_its_own_grounding_phrasing_and_an_adapter_its_training_prompt(
    name: str, config: LabelConfig, rows_jsonl: Path
) -> None:
    spec = config.control("objects")
    assert spec is not None
    [base] = asks_for(spec, {}, name, config=config, tuned=False)  # type: ignore[arg-type]
    [adapter] = asks_for(spec, {}, name, config=config, tuned=True)  # type: ignore[arg-type]
    assert base.prompt == GROUNDING_PROMPTS[name].replace("{labels}", "cat, dog")
    grounding = json.loads(rows_jsonl.read_text().splitlines()[2])
    assert "<image>" + adapter.prompt == grounding["messages"][0]["content"]
