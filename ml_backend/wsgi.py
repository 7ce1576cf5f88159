"""WSGI entry point: Settings built here, at the edge, from ``LABELLOOP_*`` variables.

``gunicorn --worker-class gthread --threads 8 'ml_backend.wsgi:application()'`` (what ``labelloop serve``
runs, without ``--preload``, so the model never loads in gunicorn's master). Other WSGI servers can use
``ml_backend.wsgi:app``, built on first access. The app gets the loop's swap watcher
(:func:`ml_backend.swaps.attach`): a thread that keeps each project's adapter on the registry's active version.
"""

from __future__ import annotations

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
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = application()
        globals()["app"] = built
        return built
    raise AttributeError(name)
