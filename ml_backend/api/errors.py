"""One JSON error handler for the whole app: ``{"error": "<what went wrong>"}``, never a traceback.

- :class:`~ml_backend.protocol.RequestError` (a body that breaks the protocol) → 400.
- :class:`~converters.errors.LabelConfigError` and other user-caused problems
  (:class:`~ml_backend.exceptions.LabelloopError`, :class:`~converters.errors.ConvertError`) → 422.
- :class:`~ml_backend.engines.base.EngineError` (model not loadable, server down, timeout) → 503.
- HTTP errors raised by Flask/werkzeug (404, 405, 413, bad JSON) → their status, as JSON.
- Anything else is a bug: logged with its traceback, answered 500 without it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from converters.errors import ConvertError
from ml_backend.engines.base import EngineError
from ml_backend.exceptions import LabelloopError
from ml_backend.protocol import RequestError

log = logging.getLogger(__name__)


class PredictionsFailedError(LabelloopError):
    """No task of a request could be predicted; ``errors`` lists why, per task."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


def error_response(status: int, message: str, **extra: Any) -> ResponseReturnValue:
    """A JSON error body with ``status``."""
    body: dict[str, Any] = {"error": message}
    body.update(extra)
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    """Install the handlers described in the module docstring."""

    @app.errorhandler(RequestError)
    def _request_error(exc: RequestError) -> ResponseReturnValue:
        return error_response(400, str(exc))

    @app.errorhandler(PredictionsFailedError)
    def _failed(exc: PredictionsFailedError) -> ResponseReturnValue:
        return error_response(422, str(exc), errors=exc.errors)

    @app.errorhandler(EngineError)
    def _engine_error(exc: EngineError) -> ResponseReturnValue:
        log.error("api: engine failure: %s", exc)
        return error_response(503, str(exc))

    @app.errorhandler(LabelloopError)
    def _labelloop_error(exc: LabelloopError) -> ResponseReturnValue:
        return error_response(422, str(exc))

    @app.errorhandler(ConvertError)
    def _convert_error(exc: ConvertError) -> ResponseReturnValue:
        return error_response(422, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        response = exc.get_response()
        body: dict[str, Any] = {"error": f"{exc.name}: {exc.description}" if exc.description else str(exc.name)}
        headers = {
            key: value for key, value in response.headers.items() if key.lower() in ("allow", "www-authenticate")
        }
        return jsonify(body), status, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("api: unexpected error (a bug; the client got a 500 without details)")
        return error_response(500, "internal error; the backend's log has the details")
