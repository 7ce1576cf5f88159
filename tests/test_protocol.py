"""protocol.py: Label Studio's wire format in and out, with exact messages for every malformed body."""

from __future__ import annotations

from typing import Any

import pytest
from backend_helpers import GROUNDING_CONFIG
from label_studio_sdk.label_interface import LabelInterface

from ml_backend.protocol import (
    ProjectRef,
    RequestError,
    TaskPrediction,
    parse_predict,
    parse_project,
    parse_setup,
    predict_response,
)
from ml_backend.regions import BoxRegion, ChoiceRegion, TextRegion

TASK = {"id": 1, "data": {"image": "/data/upload/1/a.png"}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([TASK], "request body: expected a JSON object, got a list"),
        ("tasks", "request body: expected a JSON object, got a string"),
        ({}, "tasks: missing (expected a list of task objects)"),
        ({"tasks": {"id": 1}}, "tasks: expected a list of task objects, got an object"),
        ({"tasks": None}, "tasks: expected a list of task objects, got null"),
        ({"tasks": []}, "tasks: expected at least one task, got an empty list"),
        ({"tasks": [TASK, 3]}, "tasks[1]: expected a task object, got a number"),
        ({"tasks": [{"data": {}}]}, "tasks[0].id: expected an integer task id, got missing"),
        ({"tasks": [{"id": "7", "data": {}}]}, "tasks[0].id: expected an integer task id, got a string"),
        ({"tasks": [{"id": True, "data": {}}]}, "tasks[0].id: expected an integer task id, got a boolean"),
        ({"tasks": [{"id": 1}]}, "tasks[0].data: expected an object with the task's data, got missing"),
        ({"tasks": [{"id": 1, "data": "x"}]}, "tasks[0].data: expected an object with the task's data, got a string"),
        ({"tasks": [TASK, TASK]}, "tasks: task id 1 appears more than once"),
        ({"tasks": [TASK], "label_config": 5}, "label_config: expected the label config XML as a string, got a number"),
        ({"tasks": [TASK], "project": "abc"}, 'project: expected "<project id>.<created timestamp>" such as "12.1795311193", got "abc"'),
        ({"tasks": [TASK], "project": [1]}, 'project: expected "<project id>.<created timestamp>" such as "12.1795311193", got [1]'),
    ],
)  # fmt: skip
def test_bad_predict_bodies_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_predict(body)
    assert str(info.value) == message


def test_too_many_tasks_is_refused() -> None:
    with pytest.raises(RequestError, match="tasks: expected at most 2 tasks per request, got 3"):
        parse_predict({"tasks": [{"id": i, "data": {}} for i in range(3)]}, max_tasks=2)


def test_predict_body_as_label_studio_sends_it() -> None:
    body = {
        "tasks": [{**TASK, "meta": {}, "project": 1, "annotations": [], "predictions": []}],
        "project": "1.1795311193",
        "label_config": "<View/>",
        "params": {"login": "annotator", "password": "hunter2", "context": None},
    }
    request = parse_predict(body)
    assert request.project == ProjectRef(1, "1795311193", "1.1795311193")
    assert request.tasks[0].id == 1 and request.tasks[0].project == 1
    assert request.label_config == "<View/>"
    assert "hunter2" not in repr(request)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12.1795311193", ProjectRef(12, "1795311193", "12.1795311193")), ("12", ProjectRef(12, None, "12")),
     (12, ProjectRef(12, None, "12")), (None, None), ("", None)],
)  # fmt: skip
def test_parse_project(value: Any, expected: ProjectRef | None) -> None:
    assert parse_project(value) == expected


def test_setup_keeps_the_token_secret() -> None:
    request = parse_setup(
        {"project": "3.17", "schema": "<View/>", "hostname": "http://localhost:8080/", "access_token": "s3cr3t-token",
         "extra_params": None}
    )  # fmt: skip
    assert request.project == ProjectRef(3, "17", "3.17")
    assert request.hostname == "http://localhost:8080"
    assert request.access_token is not None and request.access_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(request)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (["x"], "request body: expected a JSON object, got a list"),
        ({"hostname": 5}, "hostname: expected a string, got a number"),
        ({"hostname": "localhost:8080"}, "hostname: expected an http(s) URL, got 'localhost:8080'"),
        ({"schema": ["<View/>"]}, "schema: expected a string, got a list"),
        ({"access_token": {"k": 1}}, "access_token: expected a string, got an object"),
    ],
)
def test_bad_setup_bodies_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_setup(body)
    assert str(info.value) == message


def _prediction() -> TaskPrediction:
    return TaskPrediction(
        task_id=7,
        regions=(
            TextRegion("caption", "image", ("a cat",), 0.8),
            ChoiceRegion("scene", "image", ("indoor",), 0.7),
            BoxRegion("label", "image", "cat", 10.0, 20.0, 30.0, 40.0, 64, 48, 0.6, "abc123"),
        ),
        score=0.6,
        model_version="tiny@base",
        control_scores={"caption": 0.8, "scene": 0.7, "label": 0.6},
    )


def test_prediction_in_label_studio_shape() -> None:
    item = _prediction().to_ls()
    assert item == {
        "result": [
            {"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": ["a cat"]}, "score": 0.8},
            {"from_name": "scene", "to_name": "image", "type": "choices", "value": {"choices": ["indoor"]}, "score": 0.7},
            {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "id": "abc123",
             "value": {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["cat"]},
             "original_width": 64, "original_height": 48, "image_rotation": 0, "score": 0.6},
        ],
        "score": 0.6,
        "model_version": "tiny@base",
    }  # fmt: skip


def test_label_studio_accepts_the_shape() -> None:
    config = GROUNDING_CONFIG.replace("</View>", '<TextArea name="caption" toName="image"/>'
                                      '<Choices name="scene" toName="image"><Choice value="indoor"/></Choices></View>')  # fmt: skip
    assert LabelInterface(config).validate_prediction(_prediction().to_ls(), return_errors=True) == []


def test_cache_round_trip() -> None:
    prediction = _prediction()
    again = TaskPrediction.from_json(prediction.to_json())
    assert again.cached and again.to_ls() == prediction.to_ls()
    with pytest.raises(ValueError, match="not a cached"):
        TaskPrediction.from_json({"task_id": 1})


def test_failed_and_deferred_tasks_get_no_prediction() -> None:
    failed = TaskPrediction(8, model_version="tiny@base", error="image x: HTTP 404")
    deferred = TaskPrediction(9, model_version="tiny@base", deferred=True)
    body = predict_response([_prediction(), failed, deferred], "tiny@base")
    assert body["results"][1:] == [[], []]
    assert body["errors"] == [{"task": 8, "error": "image x: HTTP 404"}]
    assert body["deferred"] == [9]
    assert body["model_version"] == "tiny@base"
