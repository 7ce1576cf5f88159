"""Label Studio tasks -> typed Task/Annotation/Region: export files, snapshot exports, JSON_MIN, SDK pages."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from converters.boxes import Box, PercentRect
from converters.errors import ConvertError
from converters.label_config import parse_label_config
from converters.samples import SAMPLE_LABEL_CONFIG, LabelStudioExport
from converters.tasks import ExportFile, ProjectSource, is_min_row, parse_min_task, parse_task, task_to_dict


def labelled_task() -> dict[str, Any]:
    ls = LabelStudioExport()
    annotation = ls.annotation(
        [
            ls.textarea("caption", "A red circle."),
            ls.rectangle("objects", Box(20, 20, 80, 60), 200, 100, ["circle"], rotation=10),
            ls.choice("review", "accept"),
            {"from_id": "a", "to_id": "b", "type": "relation", "direction": "right"},
        ]
    )
    prediction = ls.prediction([ls.textarea("caption", "a model's caption")])
    return ls.task({"image": "/data/upload/1/ab12cd34-circle.png"}, [annotation], [prediction])


def test_a_snapshot_export_task_becomes_typed_objects() -> None:
    task = parse_task(labelled_task())
    assert task.id == 1 and task.data == {"image": "/data/upload/1/ab12cd34-circle.png"}
    assert task.prediction_count == 1 and task.project == 1
    (annotation,) = task.annotations
    assert (annotation.id, annotation.completed_by, annotation.was_cancelled) == (1, "1", False)
    assert annotation.created_at is not None and annotation.created_at.tzinfo is not None
    caption, rect, review = annotation.regions  # the relation carries no label and is left out
    assert (caption.type, caption.text, caption.path) == ("textarea", ("A red circle.",), "annotations[0].result[0]")
    assert rect.type == "rectanglelabels" and rect.labels == ("circle",)
    assert rect.rect == PercentRect(10.0, 20.0, 30.0, 40.0, 10.0)
    assert (rect.original_width, rect.original_height) == (200, 100)
    assert review.choices == ("accept",)


def test_the_legacy_export_with_prediction_ids_and_sdk_objects_parse_the_same() -> None:
    raw = labelled_task()
    raw["predictions"] = [7]
    raw["annotations"][0]["completed_by"] = {"id": 5, "email": "annotator@example.com"}
    task = parse_task(raw)
    assert task.prediction_count == 1
    assert task.annotations[0].completed_by == "5"


def field_error(mutate: Any) -> str:
    raw = labelled_task()
    mutate(raw)
    with pytest.raises(ConvertError) as info:
        parse_task(raw, position=4)
    return str(info.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.pop("id"), "task #5 in the export: id: expected an integer, got None"),
        (lambda t: t.update(data="x.png"), "task 1: data: expected an object, got 'x.png'"),
        (lambda t: t.update(annotations={"id": 1}), "task 1: annotations: expected a list, got {'id': 1}"),
        (lambda t: t["annotations"][0].update(result="nope"), "task 1: annotations[0].result: expected a list, got 'nope'"),
        (lambda t: t["annotations"][0]["result"][1]["value"].update(x="12"), "task 1: annotations[0].result[1].value.x: expected a number, got '12'"),
        (lambda t: t["annotations"][0]["result"][1]["value"].update(width=float("nan")), "task 1: annotations[0].result[1].value.width: expected a finite number, got nan"),
        (lambda t: t["annotations"][0]["result"][1]["value"].pop("rectanglelabels"), "task 1: annotations[0].result[1].value.rectanglelabels: expected a list of strings, got None"),
        (lambda t: t["annotations"][0]["result"][1].update(original_width=0), "task 1: annotations[0].result[1].original_width: expected a positive size, got 0"),
        (lambda t: t["annotations"][0]["result"][0]["value"].update(text=[1]), "task 1: annotations[0].result[0].value.text: expected a list of strings, got [1]"),
        (lambda t: t["annotations"][0]["result"][0].pop("from_name"), "task 1: annotations[0].result[0].from_name: expected a control name, got None"),
        (lambda t: t["annotations"][0]["result"][2].update(value=None), "task 1: annotations[0].result[2].value: expected an object, got None"),
        (lambda t: t["annotations"][0].update(updated_at="yesterday"), "task 1: annotations[0].updated_at: expected an ISO 8601 time, got 'yesterday'"),
        (lambda t: t["annotations"].append("x"), "task 1: annotations[1]: expected an object, got 'x'"),
    ],
)  # fmt: skip
def test_bad_fields_are_named_with_the_task(mutate: Any, message: str) -> None:
    assert field_error(mutate) == message


def test_a_task_that_is_not_an_object_is_named_by_position() -> None:
    with pytest.raises(ConvertError) as info:
        parse_task([1, 2], position=0)
    assert str(info.value) == "task #1 in the export: expected a task object, got [1, 2]"


def test_unicode_text_survives_parsing() -> None:
    raw = labelled_task()
    raw["annotations"][0]["result"][0]["value"]["text"] = ["一只红色的圆。", "émoji 🐱"]
    assert parse_task(raw).annotations[0].regions[0].text == ("一只红色的圆。", "émoji 🐱")


# --- JSON_MIN --------------------------------------------------------------------------------------------


def test_json_min_rows_are_rebuilt_from_the_label_config() -> None:
    config = parse_label_config(SAMPLE_LABEL_CONFIG)
    row = {
        "image": "/data/upload/1/ab12cd34-circle.png",
        "question": "How many?",
        "id": 9,
        "caption": "A red circle.",
        "answer": ["one"],
        "objects": [{"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["circle"],
                     "original_width": 200, "original_height": 100}],
        "scene": "shapes",
        "review": {"choices": ["accept"]},
        "annotator": 3,
        "annotation_id": 12,
        "created_at": "2026-11-01T10:00:00.000000Z",
        "updated_at": "2026-11-01T10:05:00.000000Z",
        "lead_time": 4.2,
    }  # fmt: skip
    assert is_min_row(row)
    task = parse_min_task(row, config)
    assert task.data == {"image": "/data/upload/1/ab12cd34-circle.png", "question": "How many?"}
    (annotation,) = task.annotations
    assert (annotation.id, annotation.completed_by) == (12, "3")
    by_name = {region.from_name: region for region in annotation.regions}
    assert by_name["caption"].text == ("A red circle.",)
    assert by_name["answer"].text == ("one",)
    assert by_name["objects"].rect == PercentRect(10, 20, 30, 40, 0)
    assert by_name["scene"].choices == ("shapes",)
    assert by_name["review"].choices == ("accept",)


def test_a_json_min_row_without_annotation_has_none() -> None:
    config = parse_label_config(SAMPLE_LABEL_CONFIG)
    task = parse_min_task({"image": "x.png", "id": 2, "caption": None, "annotation_id": None}, config)
    assert task.annotations == ()


def test_a_bad_json_min_column_names_the_control() -> None:
    config = parse_label_config(SAMPLE_LABEL_CONFIG)
    with pytest.raises(ConvertError) as info:
        parse_min_task({"image": "x.png", "id": 2, "annotation_id": 1, "objects": [{"x": 1}]}, config)
    assert str(info.value) == "task 2: objects[0].rectanglelabels: expected a list of strings, got None"


# --- export files ----------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "export.json"
    path.write_text(text)
    return path


def test_an_export_file_is_counted_then_streamed(tmp_path: Path) -> None:
    tasks = [labelled_task() for _ in range(3)]
    for number, task in enumerate(tasks, start=1):
        task["id"] = number
    source = ExportFile(write(tmp_path, json.dumps(tasks)))
    assert source.count() == 3
    streamed = list(source)
    assert [task["id"] for task in streamed] == [1, 2, 3]
    assert isinstance(streamed[0]["annotations"][0]["result"][1]["value"]["x"], float)  # not Decimal
    assert parse_task(streamed[0]).annotations[0].regions[1].rect == PercentRect(10.0, 20.0, 30.0, 40.0, 10.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"id": 1, "data": {}}, {"id": 2, "data": {"image": "a.png"', "export.json: malformed JSON after task 2: parse error: premature EOF"),
        ('[{"id": 1, "data": {}}, {"id": 2, "data": {"image": "a.png"}]', "export.json: malformed JSON after task 2: parse error: after key and value, inside map, I expect ',' or '}'"),
        ('[{"id": 1,,}]', "export.json: malformed JSON after task 1: parse error: invalid object key (must be a string)"),
        ('{"id": 1, "data": {}}', "export.json: expected a JSON array of tasks (Label Studio's JSON export), got an object"),
        ("", "export.json: malformed JSON after 0 complete tasks: parse error: premature EOF"),
    ],
)  # fmt: skip
def test_malformed_export_files_fail_before_any_work(tmp_path: Path, text: str, message: str) -> None:
    source = ExportFile(write(tmp_path, text))
    with pytest.raises(ConvertError) as info:
        source.count()
    assert str(info.value).replace(str(tmp_path) + "/", "") == message


def test_a_missing_export_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConvertError) as info:
        ExportFile(tmp_path / "nope.json").count()
    assert str(info.value) == f"{tmp_path / 'nope.json'}: no such export file"


def test_scalars_in_the_task_array_are_counted_and_rejected_by_parse(tmp_path: Path) -> None:
    source = ExportFile(write(tmp_path, '[{"id": 1, "data": {"image": "a.png"}}, 42]'))
    assert source.count() == 2
    _, second = list(source)
    with pytest.raises(ConvertError) as info:
        parse_task(second, 1)
    assert str(info.value) == "task #2 in the export: expected a task object, got 42"


# --- live projects through label-studio-sdk --------------------------------------------------------------


class FakeTasks:
    """Answers ``client.tasks.list`` with real SDK pagers built from JSON pages, as the SDK's raw client does."""

    def __init__(self, tasks: list[dict[str, Any]], page_size_seen: list[int]) -> None:
        self.tasks = tasks
        self.calls: list[dict[str, Any]] = []
        self.page_size_seen = page_size_seen

    def list(self, **kwargs: Any) -> Any:
        from label_studio_sdk.core.pagination import SyncPager
        from label_studio_sdk.core.unchecked_base_model import construct_type
        from label_studio_sdk.types import PaginatedRoleBasedTaskList

        self.calls.append(kwargs)
        size, page = kwargs["page_size"], kwargs["page"]
        chunk = self.tasks[(page - 1) * size : page * size]
        body = {"tasks": copy.deepcopy(chunk), "total": len(self.tasks), "total_annotations": 0, "total_predictions": 0}
        parsed = construct_type(type_=PaginatedRoleBasedTaskList, object_=body)
        return SyncPager(has_next=bool(chunk), items=parsed.tasks, get_next=None, response=parsed)


class FakeClient:
    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = FakeTasks(tasks, [])


def test_a_live_project_is_read_page_by_page_into_the_same_tasks() -> None:
    exported = []
    for number in range(1, 6):
        task = labelled_task()
        task["id"] = number
        exported.append(task)
    client = FakeClient(exported)
    source = ProjectSource(client, project=3, page_size=2)
    assert source.count() is None
    pages = list(source.pages())
    assert [len(page) for page in pages] == [2, 2, 1]
    assert source.count() == 5
    assert [call["page"] for call in client.tasks.calls] == [1, 2, 3]
    assert all(call["fields"] == "all" and call["project"] == 3 for call in client.tasks.calls)
    from_api = parse_task(pages[0][0])
    from_file = parse_task(exported[0])
    assert from_api.annotations == from_file.annotations
    assert from_api.data == from_file.data


def test_sdk_errors_are_convert_errors_without_tokens() -> None:
    class Broken:
        def list(self, **kwargs: Any) -> Any:
            from label_studio_sdk.core.api_error import ApiError

            raise ApiError(status_code=401, body={"detail": "Invalid token."})

    client = FakeClient([])
    client.tasks = Broken()  # type: ignore[assignment]
    with pytest.raises(ConvertError) as info:
        list(ProjectSource(client, project=3))
    assert str(info.value) == "Label Studio project 3: page 1: HTTP 401: {'detail': 'Invalid token.'}"


def test_task_to_dict_accepts_dicts_and_refuses_other_things() -> None:
    assert task_to_dict({"id": 1}) == {"id": 1}
    with pytest.raises(ConvertError) as info:
        task_to_dict(3)
    assert str(info.value) == "expected a task from label-studio-sdk, got int"
