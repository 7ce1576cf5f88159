"""The ML backend against a real Label Studio 1.23: connect, retrieve predictions, read them back, bulk-fill.

The backend is labelloop's app (``create_app``) on a threaded werkzeug server on 127.0.0.1, with the real tiny
Qwen2-VL (transformers, CPU). Its text is random, so projects that must show real regions serve the tiny
model's *memo* adapter (activated on the holder exactly as the loop's swap watcher does), which answers the
caption, grounding and VQA prompts with fixed texts; the pipe is what is tested: LS's requests, the images
through LS's own URLs and tokens, parsing, coordinates, scores, and what LS stores.

Facts established here (LS 1.23.2):

- connecting through the SDK leaves the backend ``CO`` (connected) with the ``model_version`` from ``/setup``;
- the "Retrieve predictions" action stores one prediction per task, which validates against the config, and a
  second run adds nothing (LS skips tasks with a prediction of the current version);
- the token ``/setup`` sends (the creator's legacy token) fetches ``/data/upload/`` images; a personal access
  token configured on the backend is refreshed into a Bearer token for ``/data/local-files/`` images;
- bulk writes: ``POST /api/projects/{id}/import/predictions`` creates a list of predictions in one call, while
  ``POST /api/predictions/`` creates one per call (a list is refused).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from backend_helpers import GROUNDING_CONFIG, MEMO_ANSWER, MEMO_CAPTION, MEMO_QUESTION, VQA_CONFIG
from flask import Flask
from label_studio_sdk import LabelStudio
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image
from werkzeug.serving import make_server

from ml_backend.app import create_app
from ml_backend.engines.base import AdapterRef
from ml_backend.holder import ModelHolder
from ml_backend.settings import Settings
from ml_backend.studio import LocalLabelStudio

from .conftest import CAPTION_CONFIG

pytestmark = pytest.mark.e2e
pytest_plugins = ["backend_fixtures"]


class Backend:
    """labelloop's app served on 127.0.0.1 in a thread."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def holder(self) -> ModelHolder:
        holder: ModelHolder = self.app.extensions["labelloop"].holder
        return holder

    def metric(self, name: str, labels: dict[str, str]) -> float:
        return float(self.app.extensions["labelloop"].metrics.value(name, labels))

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()
        self.app.extensions["labelloop"].predictor.close()


@pytest.fixture(scope="module")
def backend_settings(
    tiny_model: Callable[..., Path], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model": str(tiny_model("qwen2_vl")), "model_name": "tiny", "device": "cpu", "redis_url": redis_url,
            "data_dir": tmp_path_factory.mktemp("backend-data"), "max_new_tokens": 48, "batch_size": 8,
        }  # fmt: skip
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture(scope="module")
def holder(backend_settings: Callable[..., Settings], memo_adapter: AdapterRef) -> Iterator[ModelHolder]:
    """One model for every backend of the module (as in production: one base per process)."""
    shared = ModelHolder(backend_settings())
    yield shared
    shared.close()


@pytest.fixture(scope="module")
def backend(backend_settings: Callable[..., Settings], holder: ModelHolder) -> Iterator[Backend]:
    """A backend that knows nothing about Label Studio but what ``/setup`` tells it (URL and legacy token)."""
    served = Backend(create_app(backend_settings(), holder=holder))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def pat_backend(
    backend_settings: Callable[..., Settings], holder: ModelHolder, label_studio: LocalLabelStudio, ls_pat: str
) -> Iterator[Backend]:
    """A backend configured with Label Studio's URL and a personal access token (refreshed into Bearer)."""
    settings = backend_settings(ls_url=label_studio.url, ls_api_key=ls_pat)
    served = Backend(create_app(settings, holder=holder))
    yield served
    served.stop()


def connect(client: LabelStudio, project_id: int, backend: Backend) -> Any:
    return client.ml.create(project=project_id, url=backend.url, title="labelloop")


def retrieve(client: LabelStudio, project_id: int) -> None:
    client.actions.create(id="retrieve_tasks_predictions", project=project_id,
                          selected_items={"all": True, "excluded": []})  # fmt: skip


def predictions_of(client: LabelStudio, project_id: int) -> list[Any]:
    return list(client.predictions.list(project=project_id))


def check_against_config(config: str, prediction: Any) -> None:
    body = {"result": prediction.result, "score": prediction.score, "model_version": prediction.model_version}
    assert LabelInterface(config).validate_prediction(body, return_errors=True) == []
    assert prediction.score is not None and 0.0 <= prediction.score <= 1.0


def test_caption_project_with_uploads(
    ls_client: LabelStudio, backend: Backend, memo_adapter: AdapterRef,
    upload_images: Callable[[int, list[Path]], list[int]], make_pngs: Callable[..., list[Path]],
) -> None:  # fmt: skip
    project = ls_client.projects.create(title="backend caption uploads", label_config=CAPTION_CONFIG)
    task_ids = upload_images(project.id, make_pngs(3))
    backend.holder.activate(project.id, memo_adapter)

    ml = connect(ls_client, project.id, backend)
    assert (ml.state, ml.model_version) == ("CO", "tiny@memo")

    retrieve(ls_client, project.id)
    stored = predictions_of(ls_client, project.id)
    assert sorted(p.task for p in stored) == sorted(task_ids)
    for prediction in stored:
        assert prediction.model_version == "tiny@memo"
        assert prediction.result == [{"from_name": "caption", "to_name": "image", "type": "textarea",
                                      "value": {"text": [MEMO_CAPTION]}, "score": prediction.result[0]["score"]}]  # fmt: skip
        check_against_config(CAPTION_CONFIG, prediction)

    retrieve(ls_client, project.id)
    assert len(predictions_of(ls_client, project.id)) == 3  # the current version is there: nothing added


def test_grounding_boxes_land_where_the_model_put_them(
    ls_client: LabelStudio, backend: Backend, memo_adapter: AdapterRef,
    upload_images: Callable[[int, list[Path]], list[int]], make_pngs: Callable[..., list[Path]],
) -> None:  # fmt: skip
    paths = make_pngs(3, size=(90, 60))
    project = ls_client.projects.create(title="backend grounding", label_config=GROUNDING_CONFIG)
    task_ids = upload_images(project.id, paths)
    sizes = {task_id: Image.open(path).size for task_id, path in zip(task_ids, paths, strict=True)}
    backend.holder.activate(project.id, memo_adapter)
    assert connect(ls_client, project.id, backend).state == "CO"

    retrieve(ls_client, project.id)
    stored = predictions_of(ls_client, project.id)
    assert len(stored) == 3
    for prediction in stored:
        check_against_config(GROUNDING_CONFIG, prediction)
        [region] = prediction.result
        value = region["value"]
        assert (region["from_name"], region["to_name"], region["type"]) == ("label", "image", "rectanglelabels")
        assert value["rectanglelabels"] == ["cat"]
        # the memo adapter answers MEMO_BOX: (125,346),(587,903) on Qwen2-VL's 0-1000 grid
        box = (value["x"], value["y"], value["width"], value["height"])
        assert box == pytest.approx((12.5, 34.6, 46.2, 55.7), abs=0.01)
        assert all(0 <= value[k] <= 100 for k in ("x", "y", "width", "height"))
        assert value["x"] + value["width"] <= 100 and value["y"] + value["height"] <= 100
        assert (region["original_width"], region["original_height"]) == sizes[prediction.task]
        assert region["score"] > 0.5


def test_vqa_project_with_local_files_and_a_personal_access_token(
    ls_client: LabelStudio, pat_backend: Backend, memo_adapter: AdapterRef, label_studio: LocalLabelStudio,
    make_pngs: Callable[..., list[Path]],
) -> None:  # fmt: skip
    directory = label_studio.files_root / "vqa-images"
    paths = make_pngs(2, directory=directory)
    project = ls_client.projects.create(title="backend vqa local files", label_config=VQA_CONFIG)
    # a local-files storage over the directory lets LS serve its files; tasks come with their questions
    ls_client.import_storage.local.create(project=project.id, path=str(directory), regex_filter=r"^$",
                                          use_blob_urls=True)  # fmt: skip
    relative = [path.relative_to(label_studio.files_root) for path in paths]
    tasks = [{"data": {"image": f"/data/local-files/?d={rel}", "question": MEMO_QUESTION}} for rel in relative]
    ls_client.projects.import_tasks(id=project.id, request=tasks)
    pat_backend.holder.activate(project.id, memo_adapter)
    assert connect(ls_client, project.id, pat_backend).model_version == "tiny@memo"

    retrieve(ls_client, project.id)
    stored = predictions_of(ls_client, project.id)
    assert len(stored) == 2
    for prediction in stored:
        check_against_config(VQA_CONFIG, prediction)
        assert [(r["from_name"], r["value"]["text"]) for r in prediction.result] == [("answer", [MEMO_ANSWER])]


def test_the_base_model_and_a_broken_image(
    ls_client: LabelStudio, ls_http: httpx.Client, backend: Backend,
    upload_images: Callable[[int, list[Path]], list[int]], make_pngs: Callable[..., list[Path]],
) -> None:  # fmt: skip
    project = ls_client.projects.create(title="backend base model", label_config=CAPTION_CONFIG)
    upload_images(project.id, make_pngs(2))
    ls_client.projects.import_tasks(id=project.id, request=[{"data": {"image": "/data/upload/999/missing.png"}}])
    assert connect(ls_client, project.id, backend).model_version == "tiny@base"
    failed_before = backend.metric("labelloop_predictions_total", {"outcome": "failed"})

    retrieve(ls_client, project.id)
    stored = predictions_of(ls_client, project.id)
    # the two good tasks are stored (the random base model's text is blank: no region); the broken one is not
    assert len(stored) == 2 and all(p.model_version == "tiny@base" for p in stored)
    assert all(p.result == [] for p in stored)
    assert backend.metric("labelloop_predictions_total", {"outcome": "failed"}) == failed_before + 1
    retrieve(ls_client, project.id)  # asks again for the broken one only; still nothing for it
    assert len(predictions_of(ls_client, project.id)) == 2


def test_bulk_job_fills_50_tasks(
    ls_client: LabelStudio, label_studio: LocalLabelStudio, redis_url: str, tiny_model: Callable[..., Path],
    upload_images: Callable[[int, list[Path]], list[int]], make_pngs: Callable[..., list[Path]],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    from rq import Queue, SimpleWorker
    from rq.job import Job

    from ml_backend.cli import main
    from ml_backend.jobs.predict import job_id
    from ml_backend.jobs.train import use_settings
    from ml_backend.settings import load_settings

    project = ls_client.projects.create(title="backend bulk", label_config=CAPTION_CONFIG)
    task_ids = upload_images(project.id, make_pngs(50, size=(16, 12)))
    environment = {
        "MODEL": str(tiny_model("qwen2_vl")), "MODEL_NAME": "tiny", "DEVICE": "cpu", "LS_URL": label_studio.url,
        "LS_API_KEY": label_studio.legacy_token, "REDIS_URL": redis_url, "QUEUE_NAME": "labelloop-e2e-bulk",
        "MAX_NEW_TOKENS": "4", "DATA_DIR": str(tmp_path / "data"),
    }  # fmt: skip
    for key, value in environment.items():
        monkeypatch.setenv(f"LABELLOOP_{key}", value)

    main(["predict", "--project", str(project.id), "--chunk", "16"])  # enqueues on the worker's queue
    assert f"enqueued {job_id(project.id)}" in capsys.readouterr().err
    use_settings(load_settings())  # what `labelloop worker` does before it works
    connection = redis.Redis.from_url(redis_url)
    SimpleWorker([Queue("labelloop-e2e-bulk", connection=connection)], connection=connection).work(burst=True)
    job = Job.fetch(job_id(project.id), connection=connection)
    assert job.get_status() == "finished", job.latest_result().exc_string if job.latest_result() else job.get_status()
    assert (job.meta["stage"], job.meta["total"], job.meta["done"], job.meta["written"]) == ("finished", 50, 50, 50)
    stored = predictions_of(ls_client, project.id)
    assert sorted(p.task for p in stored) == sorted(task_ids)
    assert {p.model_version for p in stored} == {"tiny@base"}

    main(["predict", "--project", str(project.id), "--inline"])  # a second run resumes: nothing left to do
    assert f"project {project.id} (tiny@base): 0 predicted, 0 written, 50 already had this version, 0 failed" in (
        capsys.readouterr().out
    )
    assert len(predictions_of(ls_client, project.id)) == 50


def test_which_endpoint_takes_predictions_in_bulk(
    ls_client: LabelStudio, ls_http: httpx.Client, upload_images: Callable[[int, list[Path]], list[int]],
    make_pngs: Callable[..., list[Path]],
) -> None:  # fmt: skip
    project = ls_client.projects.create(title="backend bulk endpoints", label_config=CAPTION_CONFIG)
    first, second = upload_images(project.id, make_pngs(2))
    item = {"result": [{"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": ["x"]}}],
            "score": 0.5, "model_version": "probe"}  # fmt: skip
    as_list = ls_http.post("/api/predictions/", json=[{**item, "task": first}, {**item, "task": second}])
    assert as_list.status_code == 400  # one prediction per call only
    one = ls_http.post("/api/predictions/", json={**item, "task": first})
    assert one.status_code == 201
    bulk = ls_http.post(f"/api/projects/{project.id}/import/predictions",
                        json=[{**item, "task": first}, {**item, "task": second}])  # fmt: skip
    assert (bulk.status_code, bulk.json()) == (201, {"created": 2})
    assert len(predictions_of(ls_client, project.id)) == 3
