"""Bulk pre-annotation of a Label Studio project, as an RQ job (or in-process): ``predict_project(project_id)``.

Label Studio's "Retrieve predictions" action sends every selected task in one ``/predict`` call and waits
100 s; a whole project belongs here instead. The job:

1. reads the project's label config and the ``model_version`` the backend serves for it (the registry's active
   adapter for the project, else the base model);
2. pages through the project's tasks (``page_size`` per API call) and skips every task that already has a
   prediction of that version — so a job that died, or was run twice, resumes where it stopped;
3. predicts the rest in chunks of ``chunk`` tasks through the shared :class:`~ml_backend.predictor.Predictor`
   (the engine batches within a chunk; the prediction cache is shared with ``/predict``);
4. writes each chunk's predictions with ``POST /api/projects/{id}/import/predictions`` (at most 500 per call:
   Label Studio's ``POST /api/predictions/`` creates one at a time);
5. reports progress in ``job.meta`` (``stage``, ``total``, ``done``, ``skipped``, ``failed``, ``written``,
   ``model_version``) and to an optional callback (the CLI's progress bar).

Failures: tasks whose image cannot be used are counted in ``failed`` (their reasons, up to 20, in
``job.meta["errors"]``) and get no prediction, so a later run tries them again; Label Studio unreachable or an
engine failure ends the job with the error (RQ keeps it; re-running resumes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from converters.tasks import ProjectSource
from ml_backend.engines.base import AdapterRef
from ml_backend.exceptions import ConfigError, LabelloopError
from ml_backend.holder import ModelHolder
from ml_backend.predictor import ImageLoader, LabelStudioAccess, Predictor
from ml_backend.protocol import TaskPrediction
from ml_backend.settings import Settings

log = logging.getLogger(__name__)

MAX_PREDICTIONS_PER_CALL = 500
JOB_PREFIX = "labelloop-predict-"


class LabelStudioWriteError(LabelloopError):
    """Label Studio refused or failed a predictions import; the message has its status and answer."""


@dataclass
class BulkProgress:
    """Where a bulk run stands (what ``job.meta`` and the CLI show)."""

    project: int
    model_version: str = ""
    stage: str = "starting"
    total: int | None = None
    done: int = 0
    skipped: int = 0
    failed: int = 0
    written: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``job.meta`` keys)."""
        return asdict(self)


ProgressCallback = Callable[[BulkProgress], None]


def job_id(project_id: int) -> str:
    """The RQ job id of a project's bulk run: one at a time per project."""
    return f"{JOB_PREFIX}{project_id}"


def ls_client(settings: Settings) -> Any:
    """A label-studio-sdk client for ``ls_url`` with ``ls_api_key`` (legacy token or personal access token).

    Raises:
        ConfigError: either is not set.
    """
    if not settings.ls_url or settings.ls_api_key is None:
        raise ConfigError("bulk prediction: LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY must be set")
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=settings.ls_url, api_key=settings.ls_api_key.get_secret_value(), timeout=60.0)


def active_adapter(settings: Settings, project_id: int) -> AdapterRef | None:
    """The project's active adapter in the registry (None: the base model, or no registry yet), addressed as the
    backend's swap watcher addresses it (:func:`ml_backend.swaps.adapter_ref`); :func:`run_bulk` activates it on
    the holder, whose engine makes it servable (``load_adapter``: peft, or the server's runtime LoRA loading)."""
    if not (settings.data_dir / "registry.sqlite3").exists():
        return None
    from ml_backend.registry import Registry
    from ml_backend.swaps import adapter_ref

    version = Registry(settings.data_dir).active(project_id)
    return adapter_ref(version) if version else None


def write_predictions(client: Any, project_id: int, predictions: Sequence[TaskPrediction]) -> int:
    """Import the successful predictions into the project, at most 500 per call; returns how many LS created.

    Raises:
        LabelStudioWriteError: Label Studio refused a batch (the message has its status and answer).
    """
    items = [
        {"task": p.task_id, "result": p.result, "score": p.score, "model_version": p.model_version}
        for p in predictions
        if p.ok
    ]
    created = 0
    for start in range(0, len(items), MAX_PREDICTIONS_PER_CALL):
        batch = items[start : start + MAX_PREDICTIONS_PER_CALL]
        try:
            answer = client.projects.import_predictions(id=project_id, request=batch)
        except Exception as exc:  # the SDK raises its own ApiError hierarchy
            status = getattr(exc, "status_code", None)
            body = getattr(exc, "body", exc)
            raise LabelStudioWriteError(
                f"Label Studio project {project_id}: importing {len(batch)} predictions failed: HTTP {status}: "
                f"{str(body)[:300]}"
            ) from None
        created += int(getattr(answer, "created", None) or len(batch))
    return created


def _has_version(task: dict[str, Any], version: str) -> bool:
    for prediction in task.get("predictions") or []:
        if isinstance(prediction, dict) and prediction.get("model_version") == version:
            return True
    return False


def run_bulk(
    settings: Settings,
    project_id: int,
    *,
    chunk: int = 64,
    page_size: int = 100,
    limit: int | None = None,
    client: Any = None,
    holder: ModelHolder | None = None,
    progress: ProgressCallback | None = None,
) -> BulkProgress:
    """Pre-annotate the project's tasks that lack a prediction of the current version (see the module docstring).

    Args:
        settings: the process's settings (``ls_url``/``ls_api_key`` are required).
        project_id: the Label Studio project.
        chunk: tasks predicted and written together.
        page_size: tasks per Label Studio API page.
        limit: stop after this many tasks predicted (tests, trials).
        client: a label-studio-sdk client (default: from settings).
        holder: the model holder (default: a new one; the project's active adapter is activated on it).
        progress: called after every chunk.

    Raises:
        ConfigError: Label Studio is not configured.
        ConvertError: the project or a page of tasks cannot be read.
        LabelStudioWriteError: Label Studio refused the predictions.
        EngineError: the engine failed.
    """
    started = time.perf_counter()
    client = client if client is not None else ls_client(settings)
    state = BulkProgress(project=project_id)
    holder = holder or ModelHolder(settings)
    adapter = active_adapter(settings, project_id)
    if adapter is not None and holder.adapter_for(project_id) != adapter:
        holder.activate(project_id, adapter)
    state.model_version = holder.model_version(project_id)
    source = ProjectSource(client, project_id, page_size=page_size)
    label_config = source.label_config()
    access = LabelStudioAccess(settings.ls_url, settings.ls_api_key)
    cache = _cache(settings)
    predictor = Predictor(settings, holder, ImageLoader(settings), cache)

    def report(stage: str) -> None:
        state.stage = stage
        state.total = source.count()
        state.seconds = round(time.perf_counter() - started, 3)
        if progress is not None:
            progress(state)

    def flush(tasks: list[dict[str, Any]]) -> None:
        if not tasks:
            return
        predictions = predictor.predict(tasks, label_config, project=project_id, access=access)
        state.written += write_predictions(client, project_id, predictions)
        for prediction in predictions:
            if prediction.error:
                state.failed += 1
                if len(state.errors) < 20:
                    state.errors.append(f"task {prediction.task_id}: {prediction.error}")
        state.done += len(tasks)
        report("predicting")

    report("reading")
    try:
        pending: list[dict[str, Any]] = []
        for task in source:
            if _has_version(task, state.model_version):
                state.skipped += 1
                continue
            pending.append(task)
            if len(pending) >= chunk:
                flush(pending)
                pending = []
            if limit is not None and state.done + len(pending) >= limit:
                break
        flush(pending)
    finally:
        predictor.close()
    report("finished")
    log.info(
        "bulk: project %s (%s): %s predicted, %s written, %s skipped, %s failed in %.1f s",
        project_id, state.model_version, state.done, state.written, state.skipped, state.failed, state.seconds,
    )  # fmt: skip
    return state


def _cache(settings: Settings) -> Any:
    if settings.cache_ttl <= 0:
        return None
    from ml_backend.cache import PredictionCache, redis_client

    return PredictionCache(redis_client(settings.redis_url), prefix=settings.redis_prefix, ttl=settings.cache_ttl)


def predict_project(project_id: int, chunk: int = 64, limit: int | None = None) -> dict[str, Any]:
    """RQ entry point: :func:`run_bulk` with the worker's settings, progress in ``job.meta``; returns the summary.

    Raises:
        The errors of :func:`run_bulk` (RQ records them on the job).
    """
    from rq import get_current_job

    from ml_backend.jobs.train import job_settings

    job = get_current_job()

    def save(state: BulkProgress) -> None:
        if job is not None:
            job.meta.update(state.as_dict())
            job.save_meta()

    state = run_bulk(job_settings(), project_id, chunk=chunk, limit=limit, progress=save)
    return state.as_dict()
