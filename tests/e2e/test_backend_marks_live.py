"""Marks drawn on a screenshot reach Label Studio as pre-annotations: a marked-screenshot project, a real Label
Studio, labelloop's backend (the real tiny Qwen2-VL and the real marks detector) connected to it, and the
"Retrieve predictions" action. What LS stores must hold a ``marks`` rectangle where the mark was drawn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from label_studio_sdk import LabelStudio
from marks_conftest_helpers import page, rectangle

from ml_backend.app import create_app
from ml_backend.holder import ModelHolder
from ml_backend.settings import Settings

from .test_backend_label_studio import Backend, check_against_config, connect, predictions_of, retrieve

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MARKED_CONFIG = (REPO / "label_configs" / "marked_screenshot.xml").read_text()
DRAWN = (140.0, 90.0, 420.0, 200.0)  # the red rectangle's outer bounds on a 720x480 page


@pytest.fixture
def marks_backend(tiny_model: Callable[..., Path], redis_url: str, tmp_path: Path) -> Iterator[Backend]:
    """labelloop's app with the base tiny Qwen2-VL; it learns Label Studio's URL and token from ``/setup``."""
    settings = Settings(
        _env_file=None, model=str(tiny_model("qwen2_vl")), model_name="tiny", device="cpu", redis_url=redis_url,
        data_dir=tmp_path / "backend-data", max_new_tokens=8,
    )  # fmt: skip
    holder = ModelHolder(settings)
    served = Backend(create_app(settings, holder=holder))
    try:
        yield served
    finally:
        served.stop()
        holder.close()


def test_detected_marks_are_stored_as_a_prediction(
    ls_client: LabelStudio, marks_backend: Backend, upload_images: Callable[[int, list[Path]], list[int]],
    tmp_path: Path,
) -> None:  # fmt: skip
    path = tmp_path / "marked.png"
    rectangle(page(), DRAWN).save(path)
    project = ls_client.projects.create(title="backend marks", label_config=MARKED_CONFIG)
    [task_id] = upload_images(project.id, [path])
    assert connect(ls_client, project.id, marks_backend).state == "CO"

    retrieve(ls_client, project.id)
    [prediction] = predictions_of(ls_client, project.id)
    assert (prediction.task, prediction.model_version) == (task_id, "tiny@base")
    check_against_config(MARKED_CONFIG, prediction)
    [mark] = [r for r in prediction.result if r["type"] == "rectanglelabels"]
    value = mark["value"]
    assert (mark["from_name"], mark["to_name"], value["rectanglelabels"]) == ("regions", "image", ["marks"])
    assert (mark["original_width"], mark["original_height"]) == (720, 480)
    x0, y0 = value["x"] * 7.2, value["y"] * 4.8
    x1, y1 = x0 + value["width"] * 7.2, y0 + value["height"] * 4.8
    assert (x0, y0, x1, y1) == pytest.approx(DRAWN, abs=4)
    assert 0.0 < mark["score"] <= 1.0
