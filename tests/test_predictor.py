"""predictor.py: the one prediction path, from label config and tasks to typed predictions."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from backend_helpers import (
    CAPTION_CONFIG,
    CHOICES_CONFIG,
    GROUNDING_CONFIG,
    MEMO_CAPTION,
    MEMO_QUESTION,
    VQA_CONFIG,
    ImageServer,
    ScriptedEngine,
)
from label_studio_sdk.label_interface import LabelInterface

from ml_backend.cache import PredictionCache
from ml_backend.engines.base import AdapterRef, EngineError, GenerationRequest
from ml_backend.holder import ModelHolder
from ml_backend.metrics import Metrics
from ml_backend.predictor import ImageLoader, Predictor
from ml_backend.regions import BoxRegion, ChoiceRegion, TextRegion
from ml_backend.settings import Settings

pytest_plugins = ["backend_fixtures"]

MIXED_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <TextArea name="caption" toName="image"/>
  <Header value="$question"/>
  <TextArea name="answer" toName="image"/>
  <RectangleLabels name="label" toName="image"><Label value="cat"/><Label value="dog"/></RectangleLabels>
  <Choices name="scene" toName="image" choice="multiple">
    <Choice value="indoor"/><Choice value="outdoor"/><Choice value="studio"/>
  </Choices>
  <Choices name="light" toName="image"><Choice value="day"/><Choice value="dusk"/><Choice value="night"/></Choices>
  <Polygon name="outline" toName="image"/>
</View>"""


@pytest.fixture
def build(
    make_settings: Callable[..., Settings], image_server: ImageServer, redis_client: redis.Redis
) -> Iterator[Callable[..., Predictor]]:
    """``build(engine, cache=False, **settings) -> Predictor`` on the image server, Redis-backed when asked."""
    made: list[Predictor] = []

    def make(engine: Any, *, cache: bool = False, **overrides: Any) -> Predictor:
        settings = make_settings(allowed_hosts=[image_server.host], fetch_timeout=0.5, **overrides)
        metrics = Metrics()
        holder = ModelHolder(settings, lambda s: engine)
        store = PredictionCache(redis_client, prefix="t", ttl=60, metrics=metrics) if cache else None
        predictor = Predictor(settings, holder, ImageLoader(settings), store, metrics=metrics)
        made.append(predictor)
        return predictor

    yield make
    for predictor in made:
        predictor.close()


def task(task_id: int, server: ImageServer, size: str = "640x480", **data: Any) -> dict[str, Any]:
    return {"id": task_id, "data": {"image": f"{server.url}/img/{size}.png", **data}}


FAMILY_ANSWERS = [
    ("qwen2_vl", "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(500,250),(1000,750)<|box_end|>"),
    # the tiny processor resizes 640x480 to 252x168: (126, 42)-(252, 126) is the same box in its pixels
    ("qwen2_5_vl", '```json\n[\n\t{"bbox_2d": [126, 42, 252, 126], "label": "cats"}\n]\n```'),
    ("qwen3_vl", '[{"bbox_2d": [500, 250, 1000, 750], "label": "Cat"}, {"bbox_2d": [1, 1, 9, 9], "label": "bird"}]'),
]


@pytest.mark.parametrize(("family", "answer"), FAMILY_ANSWERS)
def test_each_family_lands_the_same_box(
    build: Callable[..., Predictor], image_server: ImageServer, family: str, answer: str
) -> None:
    engine = ScriptedEngine(family=family, answer=answer, logprob=math.log(0.9))
    [prediction] = build(engine).predict([task(1, image_server)], GROUNDING_CONFIG, project=None)
    [region] = prediction.regions
    assert isinstance(region, BoxRegion)
    assert (region.label, region.x, region.y, region.width, region.height) == ("cat", 50.0, 25.0, 50.0, 50.0)
    assert (region.original_width, region.original_height) == (640, 480)
    assert prediction.score == pytest.approx(0.9, rel=1e-4)
    assert LabelInterface(GROUNDING_CONFIG).validate_prediction(prediction.to_ls(), return_errors=True) == []


def test_every_control_of_a_mixed_config(
    build: Callable[..., Predictor], image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(request: GenerationRequest) -> str:
        if request.prompt.startswith("Detect"):
            return "<|object_ref_start|>dog<|object_ref_end|><|box_start|>(0,0),(500,500)<|box_end|>"
        if request.prompt.startswith("Which scene"):  # multiple choice: generated, as trained ("a, b")
            return "Indoor, outdoor"
        return "What colour?" if request.prompt == "What colour?" else "a red square"

    def options(request: GenerationRequest, names: Any) -> list[float]:
        return [math.log(0.5), math.log(0.4), math.log(0.1)]

    engine = ScriptedEngine(answer=answer, options=options, logprob=math.log(0.8))
    predictor = build(engine)
    with caplog.at_level(logging.WARNING, logger="ml_backend.predictor"):
        [first] = predictor.predict([task(1, image_server, question="What colour?")], MIXED_CONFIG, project=None)
        predictor.predict([task(2, image_server, question="What colour?")], MIXED_CONFIG, project=None)
    kinds = [(type(r).__name__, r.from_name) for r in first.regions]
    assert kinds == [("TextRegion", "caption"), ("TextRegion", "answer"), ("BoxRegion", "label"),
                     ("ChoiceRegion", "scene"), ("ChoiceRegion", "light")]  # fmt: skip
    caption, answer_region, box, choices, choice = first.regions
    assert isinstance(caption, TextRegion) and caption.texts == ("a red square",)
    assert isinstance(answer_region, TextRegion) and answer_region.texts == ("What colour?",)
    assert isinstance(box, BoxRegion) and box.label == "dog" and (box.x, box.width) == (0.0, 50.0)
    # multiple choice: the options the answer names, scored like a text answer
    assert isinstance(choices, ChoiceRegion) and choices.choices == ("indoor", "outdoor")
    assert choices.score == pytest.approx(0.8, rel=1e-4)
    # single choice: the likeliest option, scored by its share of the options' probability
    assert isinstance(choice, ChoiceRegion) and choice.choices == ("day",) and choice.score == 0.5
    assert first.score == 0.5  # the lowest control
    assert first.control_scores["caption"] == pytest.approx(0.8, rel=1e-4)
    assert LabelInterface(MIXED_CONFIG).validate_prediction(first.to_ls(), return_errors=True) == []
    skipped = [r for r in caplog.records if "not predicting Polygon 'outline'" in r.getMessage()]
    assert len(skipped) == 1  # reported once, not per request


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/status/404", "HTTP 404"),
        ("/status/401", "HTTP 401"),
        ("/slow.png", "timed out after 0.5 s"),
        ("/text", "not an image (Content-Type text/html)"),
        ("/garbage.png", "not an image (Pillow cannot identify it)"),
        ("/bomb.png", "decompression-bomb guard"),
    ],
)
def test_a_bad_image_fails_only_its_task(
    build: Callable[..., Predictor], image_server: ImageServer, path: str, reason: str
) -> None:
    engine = ScriptedEngine(answer="a caption")
    predictor = build(engine)
    bad = {"id": 2, "data": {"image": f"{image_server.url}{path}"}}
    good, failed = predictor.predict([task(1, image_server), bad], CAPTION_CONFIG, project=None)
    assert good.ok and good.regions
    assert not failed.ok and failed.regions == ()
    assert failed.error is not None and reason in failed.error and image_server.url.split("//")[1] in failed.error
    assert [len(call) for call in engine.calls] == [1]  # only the good task reached the engine


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "refused: file:// URLs are not allowed"),
        ("http://169.254.169.254/latest/meta-data/", "is not Label Studio's and not in allowed_hosts"),
        ("http://127.0.0.1:6379/", "host 127.0.0.1:6379 is not Label Studio's and not in allowed_hosts"),
        ("/etc/passwd", "refused: local paths are not allowed"),
    ],
)
def test_ssrf_urls_are_refused(build: Callable[..., Predictor], url: str, reason: str) -> None:
    [prediction] = build(ScriptedEngine()).predict([{"id": 1, "data": {"image": url}}], CAPTION_CONFIG, project=None)
    assert prediction.error is not None and reason in prediction.error


def test_a_redirect_to_the_metadata_address_is_refused(
    build: Callable[..., Predictor], image_server: ImageServer
) -> None:
    url = f"{image_server.url}/redirect?to=http://169.254.169.254/latest/meta-data/"
    [prediction] = build(ScriptedEngine()).predict([{"id": 1, "data": {"image": url}}], CAPTION_CONFIG, project=None)
    assert prediction.error is not None and "169.254.169.254" in prediction.error and "refused" in prediction.error


def test_a_missing_question_fails_its_task(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    ok, missing = build(ScriptedEngine(answer="red")).predict(
        [task(1, image_server, question="What colour?"), task(2, image_server)], VQA_CONFIG, project=None
    )
    assert ok.ok and missing.error == "data.question: missing (the label config reads the question from it)"


def test_batches_of_batch_size(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(answer="x")
    build(engine, batch_size=2).predict([task(i, image_server) for i in range(1, 6)], CAPTION_CONFIG, project=None)
    assert [len(call) for call in engine.calls] == [2, 2, 1]


def test_cached_tasks_skip_the_engine(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(answer="a caption")
    predictor = build(engine, cache=True)
    tasks = [task(1, image_server), task(2, image_server, "320x240")]
    first = predictor.predict(tasks, CAPTION_CONFIG, project=None)
    again = predictor.predict(tasks, CAPTION_CONFIG, project=None)
    assert [p.cached for p in first] == [False, False] and [p.cached for p in again] == [True, True]
    assert [p.to_ls() for p in again] == [p.to_ls() for p in first]
    changed = predictor.predict([task(1, image_server, "100x100")], CAPTION_CONFIG, project=None)
    assert not changed[0].cached
    assert [len(call) for call in engine.calls] == [2, 1]


@pytest.mark.parametrize(
    "changed", [{"prompts": {"caption": "Say what you see."}}, {"max_new_tokens": 17}, {"image_max_pixels": 50_000}]
)
def test_a_setting_that_changes_the_answer_misses_the_cache(
    build: Callable[..., Predictor], image_server: ImageServer, changed: dict[str, Any]
) -> None:
    """Two backends on one Redis, one with another prompt or limit: neither serves the other's answers."""
    before, after = ScriptedEngine(answer="a caption"), ScriptedEngine(answer="another caption")
    tasks = [task(1, image_server)]
    build(before, cache=True).predict(tasks, CAPTION_CONFIG, project=None)
    [prediction] = build(after, cache=True, **changed).predict(tasks, CAPTION_CONFIG, project=None)
    assert not prediction.cached and len(after.calls) == 1


def test_past_the_deadline_tasks_are_deferred(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(answer="x")
    predictions = build(engine).predict(
        [task(1, image_server)], CAPTION_CONFIG, project=None, deadline=time.monotonic() - 1
    )
    assert predictions[0].deferred and predictions[0].to_ls() == [] and engine.calls == []


def test_a_batch_that_would_end_past_the_deadline_is_not_started(
    build: Callable[..., Predictor], image_server: ImageServer
) -> None:
    engine = ScriptedEngine(answer="x", delay=1.0)
    predictions = build(engine, batch_size=1).predict(
        [task(i, image_server) for i in (1, 2, 3)], CAPTION_CONFIG, project=None, deadline=time.monotonic() + 1.5
    )
    # the first batch took a second; a second one would end past the deadline: the rest is deferred
    assert [p.ok for p in predictions] == [True, False, False]
    assert [p.deferred for p in predictions] == [False, True, True] and len(engine.calls) == 1


def test_active_and_explicit_adapters(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(answer=lambda r: r.adapter.version if r.adapter else "base")
    predictor = build(engine, model_name="tiny")
    predictor.holder.activate(7, AdapterRef("v3", "/adapters/v3"))
    active = predictor.predict([task(1, image_server)], CAPTION_CONFIG, project=7)[0]
    other = predictor.predict([task(1, image_server)], CAPTION_CONFIG, project=8)[0]
    candidate = predictor.predict([task(1, image_server)], CAPTION_CONFIG, project=7,
                                  adapter=AdapterRef("v4", "/adapters/v4"))[0]  # fmt: skip
    base = predictor.predict([task(1, image_server)], CAPTION_CONFIG, project=7, adapter=None)[0]
    assert [(p.model_version, p.regions[0].texts) for p in (active, other, candidate, base)] == [  # type: ignore[union-attr]
        ("tiny@v3", ("v3",)), ("tiny@base", ("base",)), ("tiny@v4", ("v4",)), ("tiny@base", ("base",))
    ]  # fmt: skip


def test_engine_failures_raise(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(fail=EngineError("openai: http://vllm:8000/v1 timed out after 300 s"))
    with pytest.raises(EngineError, match="timed out"):
        build(engine).predict([task(1, image_server)], CAPTION_CONFIG, project=None)


def test_choices_pick_the_likeliest(build: Callable[..., Predictor], image_server: ImageServer) -> None:
    engine = ScriptedEngine(options=lambda r, o: [math.log(0.2), math.log(0.6)])
    [prediction] = build(engine).predict([task(1, image_server)], CHOICES_CONFIG, project=None)
    [region] = prediction.regions
    assert isinstance(region, ChoiceRegion) and region.choices == ("outdoor",)
    assert prediction.score == pytest.approx(0.75)


def test_real_tiny_model_with_the_memo_adapter(
    build: Callable[..., Predictor], image_server: ImageServer, shared_engine: Callable[..., Any],
    memo_adapter: AdapterRef,
) -> None:  # fmt: skip

    config = MIXED_CONFIG.replace('<Header value="$question"/>', f'<Header value="{MEMO_QUESTION}"/>').replace(
        '<TextArea name="answer" toName="image"/>',
        f'<TextArea name="answer" toName="image" question="{MEMO_QUESTION}"/>',
    )
    predictor = build(shared_engine("qwen2_vl"), model_name="tiny", max_new_tokens=48)
    predictor.holder.activate(1, memo_adapter)
    try:
        [prediction] = predictor.predict([task(1, image_server, "333x222")], config, project=1)
    finally:
        predictor.holder.activate(1, None)
    regions = {region.from_name: region for region in prediction.regions}
    caption, answer, box, choice = regions["caption"], regions["answer"], regions["label"], regions["light"]
    assert isinstance(caption, TextRegion) and caption.texts == (MEMO_CAPTION,)
    assert isinstance(answer, TextRegion) and answer.texts == ("it is a colour",)
    assert isinstance(box, BoxRegion) and box.label == "cat"
    # (125,346),(587,903) on the 0-1000 grid of a 333x222 image
    assert (box.x, box.y, box.width, box.height) == pytest.approx((12.5, 34.6, 46.2, 55.7), abs=0.01)
    assert (box.original_width, box.original_height) == (333, 222)
    assert box.score is not None and box.score > 0.9
    assert isinstance(choice, ChoiceRegion) and choice.choices
    assert prediction.model_version == "tiny@memo"
    assert LabelInterface(config).validate_prediction(prediction.to_ls(), return_errors=True) == []
