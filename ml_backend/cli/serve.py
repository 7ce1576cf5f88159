"""`labelloop serve`: the ML backend over HTTP (gunicorn with threads; ``--dev`` for werkzeug)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ml_backend.settings import Settings


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's configuration: one worker (one model in memory), ``threads`` threads, no preload (the model
    is never loaded in the master), a worker timeout above the predict deadline."""
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.threads,
        "preload_app": False,
        "timeout": int(max(120.0, settings.predict_deadline + 60)),
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-" if settings.access_log else None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
    }


def run_gunicorn(settings: Settings, app_factory: Callable[[], Any] | None = None) -> None:
    """Serve with gunicorn in this process (the master); the app is built in the worker, by ``app_factory``
    (default: :func:`ml_backend.wsgi.application` with ``settings``; the benchmark passes a no-op engine's)."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(settings).items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            if app_factory is not None:
                from ml_backend.wsgi import freeze_heap

                app = app_factory()
                freeze_heap(app)
                return app
            from ml_backend.wsgi import application

            return application(settings)

    _Server().run()


@click.command("serve")
@click.option("--host", help="Address to bind (default: LABELLOOP_HOST).")
@click.option("--port", type=int, help="Port to bind (default: LABELLOOP_PORT).")
@click.option("--threads", type=int, help="Request threads (default: LABELLOOP_THREADS).")
@click.option("--dev", is_flag=True, help="werkzeug's threaded development server instead of gunicorn.")
@click.pass_obj
def serve(settings: Settings, *, host: str | None, port: int | None, threads: int | None, dev: bool) -> None:
    """Serve the ML backend (GET /health, POST /setup, POST /predict, GET /versions, GET /metrics).

    Connect it in Label Studio with the URL http://HOST:PORT. The model loads on the first prediction.
    """
    updates = {key: value for key, value in {"host": host, "port": port, "threads": threads}.items() if value}
    settings = settings.model_copy(update=updates)
    if dev:
        from ml_backend.wsgi import application

        click.echo(f"labelloop: serving on http://{settings.host}:{settings.port} (development server)", err=True)
        application(settings).run(host=settings.host, port=settings.port, threaded=True, use_reloader=False)
        return
    run_gunicorn(settings)
