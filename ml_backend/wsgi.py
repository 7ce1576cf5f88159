"""WSGI entry point: Settings built here, at the edge, from ``LABELLOOP_*`` variables.

``gunicorn --worker-class gthread --threads 8 'ml_backend.wsgi:application()'`` (what ``labelloop serve``
runs, without ``--preload``, so the model never loads in gunicorn's master). Other WSGI servers can use
``ml_backend.wsgi:app``, built on first access. The app gets the loop's swap watcher
(:func:`ml_backend.swaps.attach`): a thread that keeps each project's adapter on the registry's active version.

The serving process's heap is frozen once the app is built, and again once the model has loaded
(:func:`freeze_heap`): Python's cyclic garbage collector then no longer walks the imported modules and the model
on every full collection (measured: 77,000 objects and a 20 ms pause per full collection with the app alone,
about 40 % of the webhook's CPU under load; see bench/loop.py).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

from flask import Flask

from ml_backend.app import create_app
from ml_backend.settings import Settings, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Root logging at ``settings.log_level`` (handlers only at entry points, before the app exists)."""
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)


def application(settings: Settings | None = None) -> Flask:
    """Build the app from the environment (or the given settings).

    Raises:
        ml_backend.exceptions.ConfigError: a ``LABELLOOP_*`` value is invalid; the message names it.
    """
    settings = settings or load_settings()
    configure_logging(settings)
    app = create_app(settings)
    from ml_backend.swaps import attach

    attach(app)  # follow the registry: hot-swap each project's adapter in this serving process
    freeze_heap(app)
    return app


def freeze_heap(app: Flask | None = None) -> None:
    """Collect the garbage, then move every object alive now out of the cyclic garbage collector's reach
    (``gc.freeze``), in the serving process once its app is built. With ``app``, freeze once more after the first
    request that finds the model loaded (the model and its libraries are most of the heap then; no collection
    first, so that no request waits for one walk of that heap: the little garbage frozen with it stays).

    A full collection walks every tracked object, and a threaded server under load triggers one every few
    hundred requests (objects in flight survive the young collections): with the imported modules alone that is
    a pause of about 20 ms on this machine each time, with the GIL held. Frozen objects are never walked again;
    they were going to live as long as the process anyway. Call it only in a serving process: not in tests,
    which build many apps.
    """
    gc.collect()
    gc.freeze()
    if app is None:
        return
    from ml_backend.app import EXTENSION

    holder = app.extensions[EXTENSION].holder
    done = [holder.is_loaded()]

    @app.after_request
    def _freeze_after_load(response: Any) -> Any:
        if not done[0] and holder.is_loaded():
            done[0] = True
            gc.freeze()
        return response


def __getattr__(name: str) -> Any:
    if name == "app":
        built = application()
        globals()["app"] = built
        return built
    raise AttributeError(name)
