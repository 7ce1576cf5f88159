"""The Flask app factory: services in ``app.extensions["labelloop"]``, one blueprint per HTTP surface.

``create_app(settings)`` builds everything a request needs and nothing heavy: the model holder is lazy (the
model loads on the first prediction, in the serving process, never in gunicorn's master), Redis connects on
first use. Blueprints come from :data:`ml_backend.api.BLUEPRINTS` (``"module:attribute"``). Importing this
module does not import torch.

Every request is counted and timed (``labelloop_http_*``); errors are JSON (:mod:`ml_backend.api.errors`);
credentials are checked when configured (:mod:`ml_backend.api.auth`). Request bodies are never logged: a
``/predict`` body may carry the annotator's ``params.login``/``params.password``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, request

from ml_backend.api import BLUEPRINTS
from ml_backend.api.auth import init_auth
from ml_backend.api.errors import register_error_handlers
from ml_backend.cache import PredictionCache, ThreadClients
from ml_backend.cache import redis_client as cache_redis_client
from ml_backend.holder import ModelHolder
from ml_backend.metrics import Metrics
from ml_backend.predictor import ImageLoader, LabelStudioAccess, Predictor
from ml_backend.settings import Settings

if TYPE_CHECKING:
    import redis

    from ml_backend.engines.base import Engine
    from ml_backend.protocol import SetupRequest

log = logging.getLogger(__name__)

EXTENSION = "labelloop"
_STARTED = "labelloop.started"  # WSGI environ key: when the request reached the app (perf_counter)
_MAX_CHILDREN = 1024


@dataclass(frozen=True)
class ProjectSetup:
    """What ``/setup`` said about a project: its label config and how to reach its Label Studio."""

    schema: str | None
    access: LabelStudioAccess


@dataclass
class Projects:
    """Per-project ``/setup`` information, kept in memory only (it holds a token). Thread-safe."""

    _setups: dict[int, ProjectSetup] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, project: int, setup: SetupRequest) -> None:
        """Keep the label config and the Label Studio URL/token ``/setup`` sent for ``project``."""
        with self._lock:
            self._setups[project] = ProjectSetup(setup.schema, LabelStudioAccess(setup.hostname, setup.access_token))

    def get(self, project: int | None) -> ProjectSetup | None:
        """What ``/setup`` said about ``project``, if it was called since this process started."""
        if project is None:
            return None
        with self._lock:
            return self._setups.get(project)


@dataclass
class Services:
    """What the views use; one per app (``app.extensions["labelloop"]``)."""

    settings: Settings
    holder: ModelHolder
    predictor: Predictor
    redis: redis.Redis | None
    metrics: Metrics
    projects: Projects


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found


def create_app(
    settings: Settings,
    *,
    holder: ModelHolder | None = None,
    engine_factory: Callable[[Settings], Engine] | None = None,
    redis_client: redis.Redis | None = None,
    images: ImageLoader | None = None,
) -> Flask:
    """Build the backend's WSGI app.

    Args:
        settings: the process's settings (built at the edge: CLI, WSGI entry, tests).
        holder: the model holder to serve (the loop's swap watcher activates adapters on it); one is made
            from ``engine_factory`` (default: the engine ``settings.engine`` names) when omitted.
        engine_factory: how the holder builds its engine (tests and benchmarks pass a fake).
        redis_client: the Redis for the prediction cache and queue depth; one is made from ``redis_url``.
        images: the image loader (tests pass one with a fake transport).
    """
    app = Flask("labelloop")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    holder = holder or ModelHolder(settings, engine_factory)
    client = redis_client if redis_client is not None else cache_redis_client(settings.redis_url)
    queue_key = f"rq:queue:{settings.queue_name}"

    def queue_depth() -> dict[str, int]:
        return {settings.queue_name: int(client.llen(queue_key))}

    metrics = Metrics(queue_depth=queue_depth)
    # Every /predict looks its tasks up: on a connection per thread (ThreadClients), and its writes are queued
    # for the cache's own thread (write_behind); see ml_backend.cache.
    cache = (
        PredictionCache(
            redis_client if redis_client is not None else ThreadClients(settings.redis_url),
            prefix=settings.redis_prefix,
            ttl=settings.cache_ttl,
            metrics=metrics,
            write_behind=True,
        )
        if settings.cache_ttl > 0
        else None
    )
    predictor = Predictor(settings, holder, images or ImageLoader(settings), cache, metrics=metrics)
    app.extensions[EXTENSION] = Services(settings, holder, predictor, client, metrics, Projects())

    _instrument(app, metrics)
    init_auth(app, settings)
    register_error_handlers(app)
    for target in BLUEPRINTS:
        module_name, attr = target.split(":")
        app.register_blueprint(getattr(importlib.import_module(f"ml_backend.api.{module_name}"), attr))
    return app


def _instrument(app: Flask, metrics: Metrics) -> None:
    """Count and time every request. The start time is taken by a WSGI wrapper (no ``before_request`` hook, no
    ``g``), and the labelled children are looked up once per (endpoint, method, status): prometheus_client's
    ``labels()`` takes a lock and builds its key on every call."""
    inner = app.wsgi_app

    def timed(environ: dict[str, Any], start_response: Any) -> Any:
        environ[_STARTED] = time.perf_counter()
        return inner(environ, start_response)

    app.wsgi_app = timed  # type: ignore[method-assign]
    counters: dict[tuple[str, str, int], Any] = {}
    timers: dict[str, Any] = {}

    @app.after_request
    def _count(response: Any) -> Any:
        environ = request.environ
        started = environ.get(_STARTED)
        endpoint = request.endpoint or "unknown"
        method = environ.get("REQUEST_METHOD", "")
        status = response.status_code
        counter = counters.get((endpoint, method, status))
        if counter is None:
            counter = metrics.http_requests.labels(endpoint=endpoint, method=method, status=str(status))
            if len(counters) < _MAX_CHILDREN:  # endpoints, methods and statuses are few; bound it anyway
                counters[(endpoint, method, status)] = counter
        counter.inc()
        if started is not None:
            timer = timers.get(endpoint)
            if timer is None:
                timer = timers.setdefault(endpoint, metrics.http_seconds.labels(endpoint=endpoint))
            timer.observe(time.perf_counter() - started)
        return response
