"""ml_backend/marks.py: marks drawn on screenshots become pre-annotation rectangles through the predictor.

The images are drawn here (``marks_conftest_helpers``: a text page with anti-aliased marks, as screenshot tools
draw them), read from a local-files root the way Label Studio's ``/data/local-files/?d=`` URLs are, and the
real marks detector runs on them. Most tests use the scripted engine, to see what the model is asked; one uses
the real tiny Qwen2-VL on the shipped ``marked_screenshot.xml``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from backend_helpers import ScriptedEngine
from label_studio_sdk.label_interface import LabelInterface
from marks_conftest_helpers import ellipse, page, rectangle
from PIL import Image

import converters.marks.adapter
from converters.marks.model import iou
from ml_backend.cache import PredictionCache
from ml_backend.engines.base import AdapterRef
from ml_backend.holder import ModelHolder
from ml_backend.metrics import Metrics
from ml_backend.predictor import ImageLoader, Predictor
from ml_backend.protocol import TaskPrediction
from ml_backend.regions import BoxRegion, TextRegion
from ml_backend.settings import Settings

pytest_plugins = ["backend_fixtures"]

REPO = Path(__file__).resolve().parents[1]
MARKED_CONFIG = (REPO / "label_configs" / "marked_screenshot.xml").read_text()
BUTTON_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="regions" toName="image">
    <Label value="marks"/><Label value="button"/><Label value="redact"/>
  </RectangleLabels>
</View>"""
RED_BOX = (100.0, 60.0, 300.0, 150.0)  # outer bounds of the drawn marks, pixels of a 720x480 page
BLUE_ELLIPSE = (400.0, 250.0, 600.0, 380.0)


@pytest.fixture
def files_root(tmp_path: Path) -> Path:
    """The local-files root (Label Studio's LOCAL_FILES_DOCUMENT_ROOT as the backend sees it)."""
    root = tmp_path / "files"
    root.mkdir()
    return root


@pytest.fixture
def images(files_root: Path) -> Callable[[int, Image.Image], dict[str, Any]]:
    """``images(task_id, image) -> task``: the image saved under the local-files root, as a Label Studio task."""

    def make(task_id: int, image: Image.Image) -> dict[str, Any]:
        image.save(files_root / f"{task_id}.png")
        return {"id": task_id, "data": {"image": f"/data/local-files/?d={task_id}.png"}}

    return make


@pytest.fixture
def build(
    make_settings: Callable[..., Settings], files_root: Path, redis_client: redis.Redis
) -> Iterator[Callable[..., Predictor]]:
    """``build(engine, cache=False, **settings) -> Predictor`` reading images from the local-files root."""
    made: list[Predictor] = []

    def make(engine: Any, *, cache: bool = False, **overrides: Any) -> Predictor:
        settings = make_settings(ls_local_files_root=files_root, **overrides)
        metrics = Metrics()
        holder = ModelHolder(settings, lambda s: engine)
        store = PredictionCache(redis_client, prefix="t", ttl=60, metrics=metrics) if cache else None
        predictor = Predictor(settings, holder, ImageLoader(settings), store, metrics=metrics)
        made.append(predictor)
        return predictor

    yield make
    for predictor in made:
        predictor.close()


def marked_page() -> Image.Image:
    return ellipse(rectangle(page(), RED_BOX), BLUE_ELLIPSE, color="#0000ff")


def boxes(prediction: TaskPrediction, label: str) -> list[BoxRegion]:
    return [r for r in prediction.regions if isinstance(r, BoxRegion) and r.label == label]


def pixels(region: BoxRegion) -> tuple[float, float, float, float]:
    w, h = region.original_width, region.original_height
    return (region.x * w / 100, region.y * h / 100, (region.x + region.width) * w / 100,
            (region.y + region.height) * h / 100)  # fmt: skip


def prompts(engine: ScriptedEngine) -> list[str]:
    return [request.prompt for call in engine.calls for request in call]


def test_marks_become_regions_and_the_model_is_not_asked_to_ground_them(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]]
) -> None:
    engine = ScriptedEngine(answer="a red box around the first lines")
    [prediction] = build(engine).predict([images(1, marked_page())], MARKED_CONFIG, project=None)
    marks = boxes(prediction, "marks")
    assert len(marks) == 2
    for region, truth in zip(sorted(marks, key=lambda r: r.y), (RED_BOX, BLUE_ELLIPSE), strict=True):
        assert iou(pixels(region), truth) >= 0.5
        assert (region.from_name, region.to_name, region.original_width, region.original_height) == (
            "regions", "image", 720, 480,
        )  # fmt: skip
        assert region.score is not None and 0.0 < region.score <= 1.0
    assert len({r.region_id for r in marks}) == 2 and all(r.region_id for r in marks)
    # one engine call, for the description: the marks-only control costs none
    assert prompts(engine) == ["Describe what the marks drawn on this screenshot point out."]
    assert prediction.control_scores["regions"] == pytest.approx(sum(r.score or 0 for r in marks) / 2)
    assert LabelInterface(MARKED_CONFIG).validate_prediction(prediction.to_ls(), return_errors=True) == []


def test_a_clean_screenshot_gets_no_marks(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]]
) -> None:
    engine = ScriptedEngine(answer="a settings page")
    [prediction] = build(engine).predict([images(1, page())], MARKED_CONFIG, project=None)
    assert prediction.ok and boxes(prediction, "marks") == []
    assert [r.from_name for r in prediction.regions] == ["description"]
    assert prediction.score == pytest.approx(prediction.control_scores["description"])


def test_other_labels_are_still_grounded_by_the_model(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]]
) -> None:
    answer = (
        "<|object_ref_start|>button<|object_ref_end|><|box_start|>(500,500),(750,750)<|box_end|>"
        "<|object_ref_start|>marks<|object_ref_end|><|box_start|>(0,0),(100,100)<|box_end|>"
    )
    engine = ScriptedEngine(answer=answer, logprob=-0.2)
    [prediction] = build(engine).predict([images(1, marked_page())], BUTTON_CONFIG, project=None)
    [prompt] = prompts(engine)
    assert "button" in prompt and "marks" not in prompt and "redact" not in prompt
    [button] = boxes(prediction, "button")
    assert (button.x, button.y, button.width, button.height) == (50.0, 50.0, 25.0, 25.0)
    marks = boxes(prediction, "marks")  # the model's own "marks" box is not asked for and dropped
    assert sorted(iou(pixels(r), RED_BOX) >= 0.5 or iou(pixels(r), BLUE_ELLIPSE) >= 0.5 for r in marks) == [
        True, True,
    ]  # fmt: skip
    everything = [button, *marks]
    assert prediction.control_scores["regions"] == pytest.approx(sum(r.score or 0 for r in everything) / 3, abs=1e-5)


def test_an_adapter_is_asked_as_trained_and_its_marks_boxes_give_way(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]]
) -> None:
    answer = "<|object_ref_start|>marks<|object_ref_end|><|box_start|>(0,0),(100,100)<|box_end|>"
    engine = ScriptedEngine(answer=answer)
    predictor = build(engine, model_name="tiny")
    predictor.holder.activate(3, AdapterRef("v1", "/adapters/v1"))
    [prediction] = predictor.predict([images(1, marked_page())], BUTTON_CONFIG, project=3)
    [prompt] = prompts(engine)
    assert "marks" in prompt and "button" in prompt  # the training rows' prompt lists every label but redact
    marks = boxes(prediction, "marks")
    assert len(marks) == 2 and all(max(iou(pixels(r), t) for t in (RED_BOX, BLUE_ELLIPSE)) >= 0.5 for r in marks)


def test_detection_off_asks_the_model_and_keys_the_cache_apart(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]]
) -> None:
    task = images(1, marked_page())
    answer = "<|object_ref_start|>marks<|object_ref_end|><|box_start|>(0,0),(100,100)<|box_end|>"
    off = ScriptedEngine(answer=answer)
    [prediction] = build(off, cache=True, marks_detect=False).predict([task], BUTTON_CONFIG, project=None)
    assert any("marks" in prompt for prompt in prompts(off))
    [mark] = boxes(prediction, "marks")
    assert (mark.x, mark.y, mark.width, mark.height) == (0.0, 0.0, 10.0, 10.0)
    on = ScriptedEngine(answer="")
    [again] = build(on, cache=True).predict([task], BUTTON_CONFIG, project=None)
    assert not again.cached and len(boxes(again, "marks")) == 2


def test_a_detector_failure_leaves_the_task_predicted_without_marks(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # Fault injection: no real screenshot makes the detector raise, so one call is made to fail.
    real = converters.marks.adapter.MarksDetector.__call__
    tasks = [images(1, marked_page()), images(2, marked_page())]

    def flaky(self: Any, image: Image.Image) -> Any:
        if image.getpixel((0, 0)) == (1, 2, 3):
            raise RuntimeError("detector broke")
        return real(self, image)

    broken = marked_page()
    broken.putpixel((0, 0), (1, 2, 3))
    tasks[1] = images(2, broken)
    monkeypatch.setattr(converters.marks.adapter.MarksDetector, "__call__", flaky)
    engine = ScriptedEngine(answer="a red box")
    predictor = build(engine)
    first, second = predictor.predict(tasks, MARKED_CONFIG, project=None)
    assert len(boxes(first, "marks")) == 2
    assert second.ok and boxes(second, "marks") == [] and "regions" not in second.control_scores
    assert [r.from_name for r in second.regions] == ["description"]
    assert "detector failed on task 2" in caplog.text
    assert predictor._metrics is not None
    assert predictor._metrics.value("labelloop_mark_detection_errors_total") == 1


def test_real_tiny_model_on_the_marked_screenshot_template(
    build: Callable[..., Predictor], images: Callable[..., dict[str, Any]], shared_engine: Callable[..., Any]
) -> None:
    predictor = build(shared_engine("qwen2_vl"), model_name="tiny", max_new_tokens=8)
    marked, clean = predictor.predict([images(1, marked_page()), images(2, page())], MARKED_CONFIG, project=None)
    assert [r.label for r in boxes(marked, "marks")] == ["marks", "marks"]
    assert boxes(clean, "marks") == []
    for prediction in (marked, clean):
        # the random tiny model's description may be blank (then no text region): only its control is checked
        assert all(r.from_name == "description" for r in prediction.regions if isinstance(r, TextRegion))
        assert set(prediction.control_scores) <= {"description", "regions"}
        assert prediction.model_version == "tiny@base"
        assert LabelInterface(MARKED_CONFIG).validate_prediction(prediction.to_ls(), return_errors=True) == []
