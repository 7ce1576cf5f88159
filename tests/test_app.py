"""The HTTP surface: Label Studio's protocol, JSON errors, auth, metrics; the server keeps serving after bad input."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from backend_helpers import CAPTION_CONFIG, GOOD_TOKEN, GROUNDING_CONFIG, ImageServer, ScriptedEngine
from flask import Flask
from flask.testing import FlaskClient

from ml_backend.app import create_app
from ml_backend.engines.base import AdapterRef, EngineError
from ml_backend.settings import Settings

pytest_plugins = ["backend_fixtures"]

BOX = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(500,250),(1000,750)<|box_end|>"


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine(answer=lambda r: BOX if r.prompt.startswith("Detect") else "a red square")


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], image_server: ImageServer, redis_client: redis.Redis, engine: ScriptedEngine
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        values: dict[str, Any] = {"allowed_hosts": [image_server.host], "fetch_timeout": 0.5, "model_name": "tiny"}
        values.update(overrides)
        app = create_app(make_settings(**values), engine_factory=lambda s: engine, redis_client=redis_client)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["labelloop"].predictor.close()


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> FlaskClient:
    return make_app().test_client()


def predict_body(image_server: ImageServer, *paths: str, config: str = CAPTION_CONFIG) -> dict[str, Any]:
    tasks = [{"id": i + 1, "data": {"image": f"{image_server.url}{path}"}} for i, path in enumerate(paths)]
    return {"tasks": tasks, "project": "5.1795311193", "label_config": config,
            "params": {"login": None, "password": None, "context": None}}  # fmt: skip


def test_importing_the_app_does_not_import_torch() -> None:
    code = (
        "import sys, ml_backend.app, ml_backend.wsgi; print(sorted({'torch','transformers','peft'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_serving_entry_point_freezes_the_heap(tmp_path: Path) -> None:
    """``application()`` (what gunicorn runs) takes the imported modules and the app out of the garbage collector's
    walks (``gc.freeze``); a subprocess, so that this test process's heap stays collectable."""
    code = (
        "import gc, sys; from ml_backend.wsgi import application; from ml_backend.settings import Settings; "
        f"application(Settings(_env_file=None, data_dir={str(tmp_path)!r}, log_level='WARNING')); "
        "print(gc.get_freeze_count())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(result.stdout.strip()) > 10_000


def test_health_is_cheap_and_public(make_app: Callable[..., Flask], engine: ScriptedEngine) -> None:
    app = make_app(bearer_token="t0ken-123456")
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "UP", "model_class": "labelloop", "model": "tiny", "engine": "transformers",
                             "loaded": False}  # fmt: skip


def test_setup_answers_the_projects_model_version(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    app.extensions["labelloop"].holder.activate(5, AdapterRef("v2", "/adapters/v2"))
    client = app.test_client()
    body = {"project": "5.1795311193", "schema": CAPTION_CONFIG, "hostname": "http://localhost:8080",
            "access_token": GOOD_TOKEN, "extra_params": None}  # fmt: skip
    assert client.post("/setup", json=body).json == {"model_version": "tiny@v2"}
    assert client.post("/setup", json={**body, "project": "6.1795311193"}).json == {"model_version": "tiny@base"}


def test_setup_refuses_a_config_with_nothing_to_predict(client: FlaskClient) -> None:
    schema = '<View><Image name="i" value="$i"/><Polygon name="p" toName="i"/></View>'
    response = client.post("/setup", json={"project": "5.1", "schema": schema})
    assert response.status_code == 422
    assert response.json == {"error": "label config: nothing labelloop can export: no TextArea, Choices or "
                             "RectangleLabels bound to an Image (p (Polygon): Polygon is not exported by labelloop)"}  # fmt: skip


def test_predict_in_label_studios_shape(client: FlaskClient, image_server: ImageServer) -> None:
    response = client.post("/predict", json=predict_body(image_server, "/img/64x48.png", config=GROUNDING_CONFIG))
    assert response.status_code == 200
    [item] = response.json["results"]
    assert item["model_version"] == response.json["model_version"] == "tiny@base"
    [region] = item["result"]
    assert region["value"] == {"x": 50.0, "y": 25.0, "width": 50.0, "height": 50.0, "rotation": 0,
                               "rectanglelabels": ["cat"]}  # fmt: skip
    assert (region["original_width"], region["original_height"]) == (64, 48)


def test_token_from_setup_fetches_label_studio_images(client: FlaskClient, image_server: ImageServer) -> None:
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/30x20.png"}},
                      {"id": 2, "data": {"image": "/tasks/2/presign/?fileuri=czM6Ly9iL2sucG5n"}}],
            "project": "5.1", "label_config": CAPTION_CONFIG}  # fmt: skip
    before = client.post("/predict", json=body)
    assert before.status_code == 422  # no /setup yet: nobody said where Label Studio is
    assert "neither the Label Studio URL nor its media dir" in before.json["error"]
    client.post("/setup", json={"project": "5.1", "schema": CAPTION_CONFIG, "hostname": image_server.url,
                                "access_token": GOOD_TOKEN})  # fmt: skip
    after = client.post("/predict", json=body)
    assert after.status_code == 200 and all(item["result"] for item in after.json["results"])
    assert f"Token {GOOD_TOKEN}" in image_server.auth_headers


def test_the_configured_key_wins_over_the_setup_token(
    make_app: Callable[..., Flask], image_server: ImageServer
) -> None:
    client = make_app(ls_url=image_server.url, ls_api_key=GOOD_TOKEN).test_client()
    client.post("/setup", json={"project": "5.1", "hostname": image_server.url, "access_token": "stale-legacy-token"})
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/30x20.png"}}], "project": "5.1",
            "label_config": CAPTION_CONFIG}  # fmt: skip
    assert client.post("/predict", json=body).status_code == 200


def test_predict_without_a_config_uses_the_one_from_setup(client: FlaskClient, image_server: ImageServer) -> None:
    body = predict_body(image_server, "/img/30x20.png")
    del body["label_config"]
    assert client.post("/predict", json=body).json == {
        "error": "label_config: missing (expected the project's label config XML, or a /setup before)"
    }
    client.post("/setup", json={"project": "5.1795311193", "schema": CAPTION_CONFIG})
    assert client.post("/predict", json=body).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"tasks": []}, 400, "tasks: expected at least one task, got an empty list"),
        ({"tasks": {"id": 1, "data": {}}}, 400, "tasks: expected a list of task objects, got an object"),
        ({"project": "1.1"}, 400, "tasks: missing (expected a list of task objects)"),
        ({"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Image name='i' value='$i'/>"}, 422,
         "label config: not valid XML: Premature end of data in tag View line 1"),
        ({"tasks": [{"id": 1, "data": {}}], "label_config": "<View><Image name='i' value='$i'/><Brush name='b' "
          "toName='i'/><KeyPoint name='k' toName='i'/></View>"}, 422,
         "label config: nothing labelloop can export: no TextArea, Choices or RectangleLabels bound to an Image "
         "(b (Brush): Brush is not exported by labelloop; k (KeyPoint): KeyPoint is not exported by labelloop)"),
    ],
)  # fmt: skip
def test_bad_input_is_a_json_4xx_naming_the_problem(
    client: FlaskClient, image_server: ImageServer, body: dict[str, Any], status: int, error: str
) -> None:
    response = client.post("/predict", json={"label_config": CAPTION_CONFIG, **body})
    assert response.status_code == status and list(response.json) == ["error"]
    assert response.json["error"].startswith(error)  # the parser's position details may follow
    assert client.post("/predict", json=predict_body(image_server, "/img/30x20.png")).status_code == 200


@pytest.mark.parametrize(
    ("image", "error"),
    [
        ("/status/401", "image {server}/status/401: HTTP 401 Unauthorized"),
        ("/status/404", "image {server}/status/404: HTTP 404 Not Found"),
        ("/slow.png", "image {server}/slow.png: timed out after 0.5 s"),
        ("/text", "image {server}/text: not an image (Content-Type text/html)"),
        ("/bomb.png", "image {server}/bomb.png: 9000x9000 = 81,000,000 pixels is more than max_image_pixels "
                      "(80,000,000); decompression-bomb guard"),
        ("file:///etc/passwd", "image file:///etc/passwd: refused: file:// URLs are not allowed (use a local-files root)"),
        ("http://169.254.169.254/latest/meta-data/", "image http://169.254.169.254/latest/meta-data/: refused: host "
                                                     "169.254.169.254:80 is not Label Studio's and not in allowed_hosts"),
        ("http://127.0.0.1:6379/", "image http://127.0.0.1:6379/: refused: host 127.0.0.1:6379 is not Label Studio's "
                                   "and not in allowed_hosts"),
    ],
)  # fmt: skip
def test_image_failures_are_a_json_422_and_the_server_keeps_serving(
    client: FlaskClient, image_server: ImageServer, image: str, error: str
) -> None:
    url = image if "://" in image else f"{image_server.url}{image}"
    body = predict_body(image_server, "/x")
    body["tasks"][0]["data"]["image"] = url
    response = client.post("/predict", json=body)
    message = error.format(server=image_server.url)
    assert response.status_code == 422
    assert response.json == {"error": f"no task could be predicted: task 1: {message}",
                             "errors": [{"task": 1, "error": message}]}  # fmt: skip
    assert client.post("/predict", json=predict_body(image_server, "/img/30x20.png")).status_code == 200


def test_one_bad_image_among_good_ones(client: FlaskClient, image_server: ImageServer) -> None:
    response = client.post("/predict", json=predict_body(image_server, "/img/30x20.png", "/status/404"))
    assert response.status_code == 200
    good, failed = response.json["results"]
    assert good["result"] and failed == []
    assert response.json["errors"] == [{"task": 2, "error": f"image {image_server.url}/status/404: HTTP 404 Not Found"}]


def test_engine_failure_is_a_503(client: FlaskClient, image_server: ImageServer, engine: ScriptedEngine) -> None:
    engine.fail = EngineError("openai: http://vllm:8000/v1 timed out after 300 s")
    response = client.post("/predict", json=predict_body(image_server, "/img/30x20.png"))
    assert (response.status_code, response.json) == (
        503,
        {"error": "openai: http://vllm:8000/v1 timed out after 300 s"},
    )


def test_a_bug_is_a_500_without_a_traceback(
    client: FlaskClient, image_server: ImageServer, engine: ScriptedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.fail = ZeroDivisionError("division by zero")
    with caplog.at_level(logging.ERROR):
        response = client.post("/predict", json=predict_body(image_server, "/img/30x20.png"))
    assert (response.status_code, response.json) == (
        500,
        {"error": "internal error; the backend's log has the details"},
    )
    assert "Traceback" not in response.get_data(as_text=True)
    assert "ZeroDivisionError" in caplog.text  # the log has it


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        ({"data": "not json", "content_type": "text/plain"}, 400,
         "request body: expected a JSON object (Content-Type: application/json), got text/plain"),
        ({"data": "{broken", "content_type": "application/json"}, 400,
         "request body: expected a JSON object (Content-Type: application/json), got application/json"),
        ({"data": "x" * 5000, "content_type": "application/json"}, 413,
         "Request Entity Too Large: The data value transmitted exceeds the capacity limit."),
    ],
)  # fmt: skip
def test_malformed_requests(
    make_app: Callable[..., Flask], request_kwargs: dict[str, Any], status: int, error: str
) -> None:
    client = make_app(max_request_bytes=4096).test_client()
    response = client.post("/predict", **request_kwargs)
    assert (response.status_code, response.json) == (status, {"error": error})


def test_unknown_routes_and_methods_are_json(client: FlaskClient) -> None:
    assert client.get("/nope").json["error"].startswith("Not Found")
    response = client.get("/predict")
    assert response.status_code == 405 and response.json["error"].startswith("Method Not Allowed")
    assert "POST" in response.headers["Allow"]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        (_basic("ls", "wrong"), 401),
        (_basic("other", "pa55word"), 401),
        (_basic("ls", "pa55word"), 200),
        ("Bearer t0ken-123456", 200),
        ("Bearer t0ken-1234567", 401),
        ("Token t0ken-123456", 401),
        ("Basic !!!not-base64", 401),
    ],
)
def test_auth_on_every_endpoint_but_health(make_app: Callable[..., Flask], header: str | None, status: int) -> None:
    client = make_app(basic_auth_user="ls", basic_auth_password="pa55word", bearer_token="t0ken-123456").test_client()
    headers = {"Authorization": header} if header else {}
    for path in ("/versions", "/metrics"):
        response = client.get(path, headers=headers)
        assert response.status_code == status
    assert client.post("/setup", json={}, headers=headers).status_code == status
    if status == 401:
        response = client.get("/versions", headers=headers)
        assert response.json == {"error": "unauthorized: this endpoint needs the backend's basic auth or bearer token"}
        assert response.headers["WWW-Authenticate"] == 'Basic realm="labelloop"'
    assert client.get("/health").status_code == 200


def test_no_secret_reaches_the_logs(
    client: FlaskClient, image_server: ImageServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/setup", json={"project": "5.1", "schema": CAPTION_CONFIG, "hostname": image_server.url,
                                    "access_token": GOOD_TOKEN})  # fmt: skip
        body = predict_body(image_server, "/data/upload/1/30x20.png", "/status/401")
        body["params"] = {"login": "annotator@example.com", "password": "hunter2-secret", "context": None}
        client.post("/predict", json=body)
    assert GOOD_TOKEN not in caplog.text
    assert "hunter2-secret" not in caplog.text and "annotator@example.com" not in caplog.text


def test_metrics(client: FlaskClient, image_server: ImageServer) -> None:
    body = predict_body(image_server, "/img/30x20.png", "/status/404")
    client.post("/predict", json=body)
    client.post("/predict", json=body)
    text = client.get("/metrics").get_data(as_text=True)
    for line in (
        'labelloop_http_requests_total{endpoint="predict.predict",method="POST",status="200"} 2.0',
        'labelloop_predictions_total{outcome="predicted"} 1.0',
        'labelloop_predictions_total{outcome="cached"} 1.0',
        'labelloop_predictions_total{outcome="failed"} 2.0',
        'labelloop_cache_requests_total{result="hit"} 1.0',
        'labelloop_image_errors_total{reason="image_missing"} 2.0',
        'labelloop_engine_seconds_count{op="generate"} 1.0',
        "labelloop_engine_waiting 0.0",
        'labelloop_queue_depth{queue="labelloop"} 0.0',
    ):
        assert line in text, line
    assert 'labelloop_http_request_seconds_count{endpoint="predict.predict"} 2.0' in text


def test_versions(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    app.extensions["labelloop"].holder.activate(3, AdapterRef("v7", "/adapters/v7"))
    client = app.test_client()
    assert client.get("/versions").json == {
        "versions": ["tiny@base", "tiny@v7"], "model_version": "tiny@base", "base": "tiny", "engine": "transformers",
        "projects": {"3": "tiny@v7"},
    }  # fmt: skip
    assert client.get("/versions?project=3.1795311193").json["model_version"] == "tiny@v7"
    response = client.get("/versions?project=x")
    assert response.status_code == 400
    assert response.json["error"].startswith('project (query parameter): expected "<project id>.<created timestamp>"')
