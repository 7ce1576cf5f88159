"""Label Studio's ML-backend endpoints: ``GET /health``, ``POST /setup``, ``POST /predict``, ``GET /versions``.

Thin views: parse with :mod:`ml_backend.protocol`, call the predictor, answer JSON. What each answers:

- ``/health`` (public, never loads the model): ``{"status": "UP", "model": ..., "engine": ..., "loaded": bool}``.
- ``/setup``: validates the project's label config (a config with nothing to predict is a 422, which Label
  Studio shows when connecting), remembers its Label Studio URL and token for images, answers
  ``{"model_version": "<base>@<adapter or base>"}`` for that project.
- ``/predict``: one item per task (see :mod:`ml_backend.protocol`): a prediction, or ``[]`` for a task that
  failed (its image, its question) or was not reached within ``predict_deadline``; ``errors`` explains the
  failures. When *no* task could be predicted, a JSON 422 lists why.
- ``/versions``: ``{"versions": [...], "model_version": ..., "projects": {id: version}}``; ``?project=ID``
  selects ``model_version``. (Label Studio's "versions" list reads ``versions``.)
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, request

from ml_backend.api.auth import public
from ml_backend.api.errors import PredictionsFailedError
from ml_backend.app import services
from ml_backend.prompts import read_label_config
from ml_backend.protocol import RequestError, parse_predict, parse_project, parse_setup, predict_response

bp = Blueprint("predict", __name__)


def _json_body() -> Any:
    body = request.get_json(silent=True)
    if body is None:
        kind = request.mimetype or "no Content-Type"
        raise RequestError(f"request body: expected a JSON object (Content-Type: application/json), got {kind}"
                           if request.data else "request body: expected a JSON object, got nothing")  # fmt: skip
    return body


@bp.get("/")
@bp.get("/health")
@public
def health() -> dict[str, Any]:
    """Liveness for Label Studio (1 s timeout): never loads or calls the model."""
    svc = services()
    return {
        "status": "UP",
        "model_class": "labelloop",
        "model": svc.holder.base_name,
        "engine": svc.settings.engine,
        "loaded": svc.holder.is_loaded(),
    }


@bp.post("/setup")
def setup() -> dict[str, Any]:
    """Remember the project's config and Label Studio access; answer its model_version."""
    svc = services()
    req = parse_setup(_json_body())
    if req.schema:
        read_label_config(req.schema, svc.settings)
    project = req.project.id if req.project else None
    if project is not None:
        svc.projects.remember(project, req)
    return {"model_version": svc.holder.model_version(project)}


@bp.post("/predict")
def predict() -> dict[str, Any]:
    """Predict the tasks Label Studio sent, within ``predict_deadline``."""
    svc = services()
    req = parse_predict(_json_body())
    project = req.project.id if req.project else None
    known = svc.projects.get(project)
    label_config = req.label_config or (known.schema if known else None)
    if not label_config:
        raise RequestError("label_config: missing (expected the project's label config XML, or a /setup before)")
    deadline = time.monotonic() + svc.settings.predict_deadline
    predictions = svc.predictor.predict(
        req.tasks, label_config, project=project, access=known.access if known else None, deadline=deadline
    )
    version = predictions[0].model_version if predictions else svc.holder.model_version(project)
    body = predict_response(predictions, version)
    if all(p.error for p in predictions):
        shown = "; ".join(f"task {p.task_id}: {p.error}" for p in predictions[:3])
        more = f" (and {len(predictions) - 3} more)" if len(predictions) > 3 else ""
        raise PredictionsFailedError(f"no task could be predicted: {shown}{more}", body.get("errors", []))
    return body


@bp.get("/versions")
def versions() -> dict[str, Any]:
    """The model versions this process serves."""
    svc = services()
    project_ref = parse_project(request.args.get("project"), "project (query parameter)")
    project = project_ref.id if project_ref else None
    projects = svc.holder.snapshot()
    default = svc.holder.model_version(None)
    return {
        "versions": sorted({default, *projects.values()}),
        "model_version": svc.holder.model_version(project),
        "base": svc.holder.base_name,
        "engine": svc.settings.engine,
        "projects": {str(key): value for key, value in projects.items()},
    }
