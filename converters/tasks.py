"""Label Studio tasks as typed objects, read from an export file or a live project, one task at a time.

Sources (each yields raw task dicts; :func:`parse_task` turns one into a :class:`Task`):

- :class:`ExportFile`: Label Studio's JSON export (``GET /api/projects/{id}/export?exportType=JSON``, where
  ``predictions`` is a list of ids) or the snapshot export with full predictions; streamed with ``ijson``, never
  loaded whole. JSON_MIN exports (one flat row per task) are read too: :func:`parse_min_task` rebuilds the task
  from the label config, since JSON_MIN keeps only control values.
- :class:`ProjectSource`: a live project through label-studio-sdk, ``client.tasks.list(project=..., fields="all")``
  page by page.

Predictions are counted, never used as labels. Every failure is a :class:`~converters.errors.ConvertError` whose
message starts with the task (``task 7: ...``) and names the field (``annotations[0].result[2].value.x``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.boxes import PercentRect
from converters.errors import ConvertError

if TYPE_CHECKING:
    from converters.label_config import LabelConfig

log = logging.getLogger(__name__)

# Keys of a JSON_MIN row that are not task data or control values.
MIN_META_KEYS = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time"})


@dataclass(frozen=True, slots=True)
class Region:
    """One item of an annotation's ``result``: a text, a choice, a labelled rectangle, ...

    Attributes:
        from_name: the control that produced it.
        to_name: the object it labels.
        type: Label Studio's result type, lower-case (``textarea``, ``choices``, ``rectanglelabels``, ...).
        id: the region id, when present.
        path: where it sits in the task (``annotations[0].result[2]``), for messages.
        text: TextArea entries.
        choices: chosen Choices values.
        labels: RectangleLabels (or other ``*labels``) values.
        rect: the rectangle in percent, for rectangle types.
        original_width: image width Label Studio saw when the region was drawn.
        original_height: image height Label Studio saw when the region was drawn.
        value: the raw ``value`` dict.
    """

    from_name: str
    to_name: str
    type: str
    id: str | None
    path: str
    text: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    rect: PercentRect | None = None
    original_width: int | None = None
    original_height: int | None = None
    value: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Annotation:
    """One annotation of a task (a person's submission, possibly cancelled)."""

    id: int | None
    index: int
    completed_by: str | None
    regions: tuple[Region, ...]
    was_cancelled: bool = False
    ground_truth: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def regions_of(self, control: str) -> list[Region]:
        """The regions produced by control ``control``."""
        return [region for region in self.regions if region.from_name == control]


@dataclass(frozen=True, slots=True)
class Task:
    """A Label Studio task: its data (image URL, questions, ...) and its annotations."""

    id: int
    data: Mapping[str, Any]
    annotations: tuple[Annotation, ...]
    prediction_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    project: int | None = None


def task_label(raw: Any, position: int) -> str:
    """How messages name a raw task: ``task 7``, or ``task #3 in the export`` when it has no usable id."""
    if isinstance(raw, Mapping):
        task_id = raw.get("id")
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            return f"task {task_id}"
    return f"task #{position + 1} in the export"


def parse_task(raw: Any, position: int = 0) -> Task:
    """Validate one task of a JSON export, a snapshot export or an SDK page.

    Args:
        raw: the task as a dict (SDK models are dumped by :class:`ProjectSource` first).
        position: its 0-based position in the source, for tasks without an id.

    Returns:
        The typed task. ``predictions`` may be ids or full predictions; either way only their number is kept.

    Raises:
        ConvertError: a field is missing or of the wrong type; the message is ``task <id>: <field>: ...``.
    """
    label = task_label(raw, position)
    try:
        return _parse_task(raw)
    except _FieldError as exc:
        raise ConvertError(f"{label}: {exc}", reason="invalid_task") from None


def parse_min_task(raw: Any, config: LabelConfig, position: int = 0) -> Task:
    """Rebuild a task from a JSON_MIN row: data fields plus one column per control with its value.

    A row without ``annotation_id`` has no annotation. Rectangle columns are lists of
    ``{x, y, width, height, rotation, rectanglelabels, original_width, original_height}``; text columns are a
    string or a list of strings; choices columns a string or ``{"choices": [...]}``.

    Raises:
        ConvertError: the row is not an object, has no id, or a control column has the wrong shape.
    """
    label = task_label(raw, position)
    try:
        return _parse_min_task(raw, config)
    except _FieldError as exc:
        raise ConvertError(f"{label}: {exc}", reason="invalid_task") from None


def is_min_row(raw: Any) -> bool:
    """True for a JSON_MIN row (no ``data`` object, but an ``id``)."""
    return isinstance(raw, Mapping) and "data" not in raw and "id" in raw and "annotations" not in raw


class _FieldError(Exception):
    """Internal: a field problem; parse_task prefixes the task."""


def _parse_task(raw: Any) -> Task:
    if not isinstance(raw, Mapping):
        raise _FieldError(f"expected a task object, got {_show(raw)}")
    task_id = _int(raw.get("id"), "id")
    data = raw.get("data")
    if not isinstance(data, Mapping):
        raise _FieldError(f"data: expected an object, got {_show(data)}")
    annotations_raw = raw.get("annotations", [])
    if annotations_raw is None:
        annotations_raw = []
    if not isinstance(annotations_raw, list):
        raise _FieldError(f"annotations: expected a list, got {_show(annotations_raw)}")
    annotations = tuple(_parse_annotation(item, index) for index, item in enumerate(annotations_raw))
    predictions = raw.get("predictions") or []
    if not isinstance(predictions, list):
        raise _FieldError(f"predictions: expected a list, got {_show(predictions)}")
    project = raw.get("project")
    return Task(
        id=task_id,
        data=dict(data),
        annotations=annotations,
        prediction_count=len(predictions),
        created_at=_time(raw.get("created_at"), "created_at"),
        updated_at=_time(raw.get("updated_at"), "updated_at"),
        project=project if isinstance(project, int) and not isinstance(project, bool) else None,
    )


def _parse_annotation(raw: Any, index: int) -> Annotation:
    where = f"annotations[{index}]"
    if not isinstance(raw, Mapping):
        raise _FieldError(f"{where}: expected an object, got {_show(raw)}")
    annotation_id = raw.get("id")
    if annotation_id is not None:
        annotation_id = _int(annotation_id, f"{where}.id")
    result = raw.get("result", [])
    if result is None:
        result = []
    if not isinstance(result, list):
        raise _FieldError(f"{where}.result: expected a list, got {_show(result)}")
    regions = []
    for position, item in enumerate(result):
        region = _parse_region(item, f"{where}.result[{position}]")
        if region is not None:
            regions.append(region)
    return Annotation(
        id=annotation_id,
        index=index,
        completed_by=_person(raw.get("completed_by")),
        regions=tuple(regions),
        was_cancelled=bool(raw.get("was_cancelled", False)),
        ground_truth=bool(raw.get("ground_truth", False)),
        created_at=_time(raw.get("created_at"), f"{where}.created_at"),
        updated_at=_time(raw.get("updated_at"), f"{where}.updated_at"),
    )


def _parse_region(raw: Any, where: str) -> Region | None:
    if not isinstance(raw, Mapping):
        raise _FieldError(f"{where}: expected an object, got {_show(raw)}")
    kind = raw.get("type")
    if kind == "relation" or ("from_id" in raw and "to_id" in raw and "from_name" not in raw):
        return None  # relations link regions; they carry no label of their own
    from_name = raw.get("from_name")
    if not isinstance(from_name, str) or not from_name:
        raise _FieldError(f"{where}.from_name: expected a control name, got {_show(from_name)}")
    to_name = raw.get("to_name")
    if not isinstance(to_name, str):
        raise _FieldError(f"{where}.to_name: expected an object name, got {_show(to_name)}")
    if not isinstance(kind, str) or not kind:
        raise _FieldError(f"{where}.type: expected a result type, got {_show(kind)}")
    value = raw.get("value")
    if not isinstance(value, Mapping):
        raise _FieldError(f"{where}.value: expected an object, got {_show(value)}")
    kind = kind.lower()
    region_id = raw.get("id")
    fields: dict[str, Any] = {}
    if kind == "textarea":
        fields["text"] = _strings(value.get("text"), f"{where}.value.text", allow_single=True)
    elif kind == "choices":
        fields["choices"] = _strings(value.get("choices"), f"{where}.value.choices")
    elif kind in ("rectanglelabels", "rectangle"):
        fields["rect"] = _rect(value, f"{where}.value")
        if kind == "rectanglelabels":
            fields["labels"] = _strings(value.get("rectanglelabels"), f"{where}.value.rectanglelabels")
        fields["original_width"] = _optional_size(raw.get("original_width"), f"{where}.original_width")
        fields["original_height"] = _optional_size(raw.get("original_height"), f"{where}.original_height")
    elif kind.endswith("labels") and isinstance(value.get(kind), list):
        fields["labels"] = _strings(value.get(kind), f"{where}.value.{kind}")
    return Region(
        from_name=from_name,
        to_name=to_name,
        type=kind,
        id=str(region_id) if region_id is not None else None,
        path=where,
        value=dict(value),
        **fields,
    )


def _parse_min_task(raw: Any, config: LabelConfig) -> Task:
    if not isinstance(raw, Mapping):
        raise _FieldError(f"expected a task row, got {_show(raw)}")
    task_id = _int(raw.get("id"), "id")
    names = {spec.name: spec for spec in config.controls}
    data = {key: value for key, value in raw.items() if key not in names and key not in MIN_META_KEYS}
    annotation_id = raw.get("annotation_id")
    if annotation_id is None:
        return Task(id=task_id, data=data, annotations=())
    annotation_id = _int(annotation_id, "annotation_id")
    regions: list[Region] = []
    for name, spec in names.items():
        if raw.get(name) is None:
            continue
        value = raw[name]
        to_name = spec.image or ""
        where = name
        if spec.kind in ("caption", "vqa", "marked"):
            text = _strings(value, where, allow_single=True)
            regions.append(Region(name, to_name, "textarea", None, where, text=text, value={"text": list(text)}))
        elif spec.kind in ("choices", "review"):
            chosen = value.get("choices") if isinstance(value, Mapping) else value
            choices = _strings(chosen, where, allow_single=True)
            regions.append(
                Region(name, to_name, "choices", None, where, choices=choices, value={"choices": list(choices)})
            )
        elif spec.kind == "grounding":
            if not isinstance(value, list):
                raise _FieldError(f"{where}: expected a list of rectangles, got {_show(value)}")
            for index, item in enumerate(value):
                item_where = f"{where}[{index}]"
                if not isinstance(item, Mapping):
                    raise _FieldError(f"{item_where}: expected a rectangle object, got {_show(item)}")
                regions.append(
                    Region(
                        name,
                        to_name,
                        "rectanglelabels",
                        None,
                        item_where,
                        labels=_strings(item.get("rectanglelabels"), f"{item_where}.rectanglelabels"),
                        rect=_rect(item, item_where),
                        original_width=_optional_size(item.get("original_width"), f"{item_where}.original_width"),
                        original_height=_optional_size(item.get("original_height"), f"{item_where}.original_height"),
                        value=dict(item),
                    )
                )
    annotation = Annotation(
        id=annotation_id,
        index=0,
        completed_by=_person(raw.get("annotator")),
        regions=tuple(regions),
        created_at=_time(raw.get("created_at"), "created_at"),
        updated_at=_time(raw.get("updated_at"), "updated_at"),
    )
    return Task(id=task_id, data=data, annotations=(annotation,))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise _FieldError(f"{where}: expected an integer, got {_show(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"{where}: expected a number, got {_show(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise _FieldError(f"{where}: expected a finite number, got {_show(value)}")
    return number


def _optional_size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    number = _number(value, where)
    if number <= 0:
        raise _FieldError(f"{where}: expected a positive size, got {_show(value)}")
    return round(number)


def _rect(value: Mapping[str, Any], where: str) -> PercentRect:
    x = _number(value.get("x"), f"{where}.x")
    y = _number(value.get("y"), f"{where}.y")
    width = _number(value.get("width"), f"{where}.width")
    height = _number(value.get("height"), f"{where}.height")
    rotation = _number(value.get("rotation", 0) or 0, f"{where}.rotation")
    return PercentRect(x=x, y=y, width=width, height=height, rotation=rotation)


def _strings(value: Any, where: str, *, allow_single: bool = False) -> tuple[str, ...]:
    if allow_single and isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _FieldError(f"{where}: expected a list of strings, got {_show(value)}")
    return tuple(value)


def _time(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise _FieldError(f"{where}: expected an ISO 8601 time, got {_show(value)}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _FieldError(f"{where}: expected an ISO 8601 time, got {_show(value)}") from None


def _person(value: Any) -> str | None:
    """``completed_by`` is a user id in exports and an object ({"id", "email", ...}) in some API answers."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        value = value.get("id", value.get("email"))
        if value is None:
            return None
    return str(value)


# --- sources -------------------------------------------------------------------------------------------------


class ExportFile:
    """A Label Studio JSON (or JSON_MIN) export on disk, streamed task by task.

    ``count()`` reads the whole file once without keeping it (to size a progress bar and to find malformed
    JSON before anything is written); iteration reads it again, one task at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def description(self) -> str:
        """How messages and the report name this source."""
        return str(self.path)

    def count(self) -> int:
        """The number of tasks, after checking the whole file is a well-formed JSON array.

        Raises:
            ConvertError: the file is missing, not JSON, cut short, or not an array; the message names the
                byte offset and the last complete task.
        """
        import ijson  # type: ignore[import-untyped]  # ijson ships no type hints

        count = 0
        depth = 0
        last_id: Any = None
        try:
            with self.path.open("rb") as handle:
                parser = ijson.parse(handle)
                for prefix, event, value in parser:
                    if depth == 0 and event != "start_array":
                        raise ConvertError(
                            f"{self.path}: expected a JSON array of tasks (Label Studio's JSON export), "
                            f"got {'an object' if event == 'start_map' else event}",
                            reason="malformed_export",
                        )
                    if event in ("start_map", "start_array"):
                        depth += 1
                    elif event in ("end_map", "end_array"):
                        depth -= 1
                        if depth == 1:
                            count += 1
                    elif depth == 1:
                        count += 1  # a scalar where a task should be: parse_task reports it
                    if prefix == "item.id" and event == "number":
                        last_id = value
        except FileNotFoundError:
            raise ConvertError(f"{self.path}: no such export file", reason="malformed_export") from None
        except ijson.JSONError as exc:
            after = f"after task {last_id}" if last_id is not None else f"after {count} complete tasks"
            raise ConvertError(
                f"{self.path}: malformed JSON {after}: {_first_line(exc)}", reason="malformed_export"
            ) from None
        return count

    def __iter__(self) -> Iterator[Any]:
        """Raw task dicts in file order (numbers as int or float).

        Raises:
            ConvertError: the JSON breaks mid-file (call :meth:`count` first to fail before any work).
        """
        import ijson

        with self.path.open("rb") as handle:
            try:
                yield from ijson.items(handle, "item", use_float=True)
            except ijson.JSONError as exc:
                raise ConvertError(
                    f"{self.path}: malformed JSON: {_first_line(exc)}", reason="malformed_export"
                ) from None


class ProjectSource:
    """A live Label Studio project read page by page through label-studio-sdk (never the whole export at once).

    Args:
        client: a ``label_studio_sdk.LabelStudio`` client.
        project: the project id.
        page_size: tasks per API page.
    """

    def __init__(self, client: Any, project: int, page_size: int = 100) -> None:
        self.client = client
        self.project = project
        self.page_size = page_size
        self._total: int | None = None

    @property
    def description(self) -> str:
        """How messages and the report name this source."""
        return f"Label Studio project {self.project}"

    def label_config(self) -> str:
        """The project's label config XML.

        Raises:
            ConvertError: the project cannot be read (the SDK's message, never the token).
        """
        try:
            project = self.client.projects.get(id=self.project)
        except Exception as exc:  # the SDK raises its own ApiError hierarchy
            raise ConvertError(f"{self.description}: cannot read the project: {_api_error(exc)}") from None
        config = getattr(project, "label_config", None)
        if not isinstance(config, str):
            raise ConvertError(f"{self.description}: the project has no label config")
        return config

    def count(self) -> int | None:
        """The number of tasks the API reports (known after the first page is fetched; None before)."""
        return self._total

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """Pages of raw task dicts (``fields="all"``: annotations and predictions included).

        Raises:
            ConvertError: a page cannot be fetched.
        """
        page = 1
        seen = 0
        while True:
            try:
                pager = self.client.tasks.list(project=self.project, fields="all", page=page, page_size=self.page_size)
            except Exception as exc:
                if page > 1 and getattr(exc, "status_code", None) == 404:
                    return  # Django REST framework answers 404 for a page past the end
                raise ConvertError(f"{self.description}: page {page}: {_api_error(exc)}") from None
            response = getattr(pager, "response", None)
            total = getattr(response, "total", None)
            if isinstance(total, int):
                self._total = total
            items = [task_to_dict(item) for item in (pager.items or [])]
            if not items:
                return
            yield items
            seen += len(items)
            if len(items) < self.page_size or (self._total is not None and seen >= self._total):
                return
            page += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Raw task dicts, page after page."""
        for page in self.pages():
            yield from page


def task_to_dict(item: Any) -> dict[str, Any]:
    """An SDK task model (or a dict) as the plain dict an export file would hold."""
    if isinstance(item, Mapping):
        return dict(item)
    dump = getattr(item, "model_dump", None)
    if dump is None:
        raise ConvertError(f"expected a task from label-studio-sdk, got {type(item).__name__}")
    result: dict[str, Any] = dump(mode="json")
    return result


def _first_line(exc: Exception) -> str:
    """yajl's messages carry the offending text and a caret on further lines: keep the first."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _api_error(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    if status is not None:
        return f"HTTP {status}: {body!r:.200}"
    return f"{type(exc).__name__}: {exc}"
