"""Label Studio 1.23's ML-backend wire format, as typed objects; the wire format stops here.

Requests (bodies as captured from LS 1.23.2, see ../shared/docs/LABEL_STUDIO.md §4):

- ``POST /setup``: ``{"project": "<id>.<created_ts>", "schema": "<View>…", "hostname": "http://…",
  "access_token": "<legacy token of the project creator>", "extra_params": …}`` → :class:`SetupRequest`.
- ``POST /predict``: ``{"tasks": [{"id": 1, "data": {...}, ...}], "project": "<id>.<ts>", "label_config": "…",
  "params": {"login": …, "password": …, "context": …}}`` → :class:`PredictRequest`. ``params`` is never kept:
  it can carry the annotator's login and password.

Validation failures raise :class:`RequestError` naming the field, what was expected and what came, e.g.
``tasks: expected a list of task objects, got an object``.

Responses: ``{"results": [<one item per task>], "model_version": "<base>@<adapter or base>"}``. A task with a
prediction gets ``{"result": [...], "score": s, "model_version": v}``; a task that could not be predicted
(image failure, past the deadline) gets ``[]`` — a list of zero predictions, which Label Studio accepts and
stores nothing for, so the next request asks again. Regions are serialised from :mod:`ml_backend.regions`'s
typed regions by :func:`region_to_ls`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from ml_backend.exceptions import LabelloopError
from ml_backend.regions import BoxRegion, ChoiceRegion, Region, TextRegion

# Canonical JSON of task data (cache keys). Built once: json.dumps with options builds an encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


class RequestError(LabelloopError):
    """A request body that does not follow the protocol; answered as a JSON 400 with this message."""


def kind_of(value: Any) -> str:
    """How a JSON value is named in messages: ``an object``, ``a list``, ``a string``, ``null``, ..."""
    names: list[tuple[type | tuple[type, ...], str]] = [
        (type(None), "null"),
        (bool, "a boolean"),
        (Mapping, "an object"),
        ((list, tuple), "a list"),
        (str, "a string"),
        ((int, float), "a number"),
    ]
    return next((name for types, name in names if isinstance(value, types)), type(value).__name__)


# --- requests ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectRef:
    """Label Studio's project identifier ``"<id>.<created_ts>"`` (``raw``), split."""

    id: int
    created: str | None
    raw: str


def parse_project(value: Any, where: str = "project") -> ProjectRef | None:
    """``"12.1795311193"``, ``"12"`` or ``12`` → ProjectRef; None or ``""`` → None.

    Raises:
        RequestError: anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return ProjectRef(value, None, str(value))
    if isinstance(value, str):
        head, _, tail = value.partition(".")
        if head.isdigit():
            return ProjectRef(int(head), tail or None, value)
    raise RequestError(f'{where}: expected "<project id>.<created timestamp>" such as "12.1795311193", '
                       f"got {json.dumps(value)[:60]}")  # fmt: skip


def _optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{key}: expected a string, got {kind_of(value)}")
    return value


def _body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError(f"request body: expected a JSON object, got {kind_of(body)}")
    return body


@dataclass(frozen=True)
class SetupRequest:
    """What ``/setup`` tells the backend about a project (the token is a SecretStr: never printed)."""

    project: ProjectRef | None
    schema: str | None
    hostname: str | None
    access_token: SecretStr | None
    extra_params: Any = None


def parse_setup(body: Any) -> SetupRequest:
    """Validate a ``/setup`` body.

    Raises:
        RequestError: not an object, or a field of the wrong type; the message names it.
    """
    data = _body(body)
    hostname = _optional_str(data, "hostname")
    if hostname is not None and hostname and not hostname.startswith(("http://", "https://")):
        raise RequestError(f"hostname: expected an http(s) URL, got {hostname[:60]!r}")
    token = _optional_str(data, "access_token")
    return SetupRequest(
        project=parse_project(data.get("project")),
        schema=_optional_str(data, "schema") or None,
        hostname=hostname.rstrip("/") if hostname else None,
        access_token=SecretStr(token) if token else None,
        extra_params=data.get("extra_params"),
    )


@dataclass(frozen=True)
class TaskInput:
    """One task to predict: its id and data (the rest of LS's task object is not needed)."""

    id: int
    data: Mapping[str, Any]
    project: int | None = None

    def canonical_data(self) -> str:
        """The task data as canonical JSON (sorted keys, no spaces): equal data, equal text."""
        return _CANONICAL.encode(self.data)

    def data_hash(self) -> str:
        """sha256 of the task data (canonical JSON)."""
        return hashlib.sha256(self.canonical_data().encode()).hexdigest()


def parse_task(value: Any, where: str) -> TaskInput:
    """One task object (from /predict or an SDK page).

    Raises:
        RequestError: not an object, or ``id``/``data`` missing or of the wrong type.
    """
    if not isinstance(value, Mapping):
        raise RequestError(f"{where}: expected a task object, got {kind_of(value)}")
    task_id = value.get("id")
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        shown = "missing" if "id" not in value else kind_of(task_id)
        raise RequestError(f"{where}.id: expected an integer task id, got {shown}")
    data = value.get("data")
    if not isinstance(data, Mapping):
        shown = "missing" if "data" not in value else kind_of(data)
        raise RequestError(f"{where}.data: expected an object with the task's data, got {shown}")
    project = value.get("project")
    return TaskInput(task_id, data, project if isinstance(project, int) and not isinstance(project, bool) else None)


@dataclass(frozen=True)
class PredictRequest:
    """A validated ``/predict`` body (``params`` dropped: it may hold credentials)."""

    tasks: tuple[TaskInput, ...]
    project: ProjectRef | None
    label_config: str | None


def parse_predict(body: Any, *, max_tasks: int = 10_000) -> PredictRequest:
    """Validate a ``/predict`` body.

    Raises:
        RequestError: the message names the field: ``tasks: expected a list of task objects, got an object``,
            ``tasks: expected at least one task, got an empty list``, ``tasks[2].id: ...``, ``label_config: ...``.
    """
    data = _body(body)
    if "tasks" not in data:
        raise RequestError("tasks: missing (expected a list of task objects)")
    tasks = data["tasks"]
    if not isinstance(tasks, list):
        raise RequestError(f"tasks: expected a list of task objects, got {kind_of(tasks)}")
    if not tasks:
        raise RequestError("tasks: expected at least one task, got an empty list")
    if len(tasks) > max_tasks:
        raise RequestError(f"tasks: expected at most {max_tasks} tasks per request, got {len(tasks)}")
    parsed = tuple(parse_task(task, f"tasks[{index}]") for index, task in enumerate(tasks))
    ids = [task.id for task in parsed]
    if len(set(ids)) != len(ids):
        duplicate = next(task_id for task_id in ids if ids.count(task_id) > 1)
        raise RequestError(f"tasks: task id {duplicate} appears more than once")
    label_config = data.get("label_config")
    if label_config is not None and not isinstance(label_config, str):
        raise RequestError(f"label_config: expected the label config XML as a string, got {kind_of(label_config)}")
    return PredictRequest(tasks=parsed, project=parse_project(data.get("project")), label_config=label_config or None)


# --- responses -----------------------------------------------------------------------------------------------


def region_to_ls(region: Region) -> dict[str, Any]:
    """One typed region as a Label Studio result item."""
    item: dict[str, Any] = {"from_name": region.from_name, "to_name": region.to_name, "type": region.kind}
    if isinstance(region, TextRegion):
        item["value"] = {"text": list(region.texts)}
    elif isinstance(region, ChoiceRegion):
        item["value"] = {"choices": list(region.choices)}
    else:
        item["id"] = region.region_id
        item["value"] = {
            "x": region.x,
            "y": region.y,
            "width": region.width,
            "height": region.height,
            "rotation": 0,
            "rectanglelabels": [region.label],
        }
        item["original_width"] = region.original_width
        item["original_height"] = region.original_height
        item["image_rotation"] = 0
    if region.score is not None:
        item["score"] = region.score
    return item


def region_to_json(region: Region) -> dict[str, Any]:
    """A typed region as plain JSON (the prediction cache's format)."""
    return {key: getattr(region, key) for key in region.__dataclass_fields__}


def region_from_json(value: Mapping[str, Any]) -> Region:
    """Inverse of :func:`region_to_json`.

    Raises:
        ValueError: not a region written by :func:`region_to_json`.
    """
    kinds: dict[str, type[TextRegion] | type[ChoiceRegion] | type[BoxRegion]] = {
        "textarea": TextRegion,
        "choices": ChoiceRegion,
        "rectanglelabels": BoxRegion,
    }
    cls = kinds.get(str(value.get("kind")))
    if cls is None:
        raise ValueError(f"not a cached region: kind {value.get('kind')!r}")
    fields = dict(value)
    for name in ("choices", "texts"):
        if name in fields:
            fields[name] = tuple(fields[name])
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"not a cached region: {exc}") from exc


@dataclass(frozen=True)
class TaskPrediction:
    """The prediction for one task, or why there is none.

    Attributes:
        task_id: the task.
        regions: typed regions (see :mod:`ml_backend.regions`); :attr:`result` gives them as LS dicts.
        score: the task's score in 0–1 (the lowest control score: one doubtful control makes the task
            doubtful), None when nothing was scored.
        model_version: ``<base>@<adapter or base>``.
        control_scores: control name → its score.
        error: why the task has no prediction (an image that failed, a missing question); None when predicted.
        deferred: the task was not reached before the request's deadline (no error; ask again).
        cached: served from the prediction cache.
    """

    task_id: int
    regions: tuple[Region, ...] = ()
    score: float | None = None
    model_version: str = ""
    control_scores: Mapping[str, float | None] = field(default_factory=dict)
    error: str | None = None
    deferred: bool = False
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when the task has a prediction (possibly with no regions)."""
        return self.error is None and not self.deferred

    @property
    def result(self) -> list[dict[str, Any]]:
        """The regions as Label Studio result items."""
        return [region_to_ls(region) for region in self.regions]

    @property
    def region_scores(self) -> list[float | None]:
        """Each region's score, in :attr:`regions` order."""
        return [region.score for region in self.regions]

    def to_ls(self) -> dict[str, Any] | list[Any]:
        """This task's item of the ``results`` list: one prediction, or ``[]`` for none."""
        if not self.ok:
            return []
        return {"result": self.result, "score": self.score, "model_version": self.model_version}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the cache (errors and deferrals are never cached)."""
        return {
            "task_id": self.task_id,
            "regions": [region_to_json(region) for region in self.regions],
            "score": self.score,
            "model_version": self.model_version,
            "control_scores": dict(self.control_scores),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TaskPrediction:
        """Inverse of :meth:`to_json`, marked ``cached``.

        Raises:
            ValueError: not a prediction written by :meth:`to_json`.
        """
        try:
            return cls(
                task_id=int(value["task_id"]),
                regions=tuple(region_from_json(region) for region in value["regions"]),
                score=value["score"],
                model_version=str(value["model_version"]),
                control_scores=dict(value["control_scores"]),
                cached=True,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a cached prediction: {exc}") from exc


def predict_response(predictions: Sequence[TaskPrediction], model_version: str) -> dict[str, Any]:
    """The ``/predict`` answer: one item per task in request order, plus ``errors`` for tasks without one.

    ``errors`` (``[{"task": id, "error": "..."}]``) is ignored by Label Studio and there for people and logs.
    """
    body: dict[str, Any] = {"results": [p.to_ls() for p in predictions], "model_version": model_version}
    errors = [{"task": p.task_id, "error": p.error} for p in predictions if p.error]
    deferred = [p.task_id for p in predictions if p.deferred]
    if errors:
        body["errors"] = errors
    if deferred:
        body["deferred"] = deferred
    return body
