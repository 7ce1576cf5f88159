"""Optional authentication on every endpoint but the public ones (``/health``; the loop's ``/webhook``, which
Label Studio calls without credentials and which checks its own shared secret).

Configured by ``basic_auth_user``/``basic_auth_password`` (Label Studio sends these when the backend is added
with ``auth_method="BASIC_AUTH"``) and/or ``bearer_token``; with neither set, every endpoint is open.
Credentials are compared in constant time and never logged. A missing or wrong credential gets a JSON 401
with ``WWW-Authenticate: Basic``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from ml_backend.settings import Settings

F = TypeVar("F", bound=Callable[..., object])
PUBLIC_ATTRIBUTE = "_labelloop_public"


def public(view: F) -> F:
    """Mark a view as reachable without credentials."""
    setattr(view, PUBLIC_ATTRIBUTE, True)
    return view


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_authorization(header: str, settings: Settings) -> bool:
    """Whether an ``Authorization`` header carries the configured basic credentials or bearer token."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and settings.bearer_token is not None:
        return _same(value.strip(), settings.bearer_token.get_secret_value())
    if scheme == "basic" and settings.basic_auth_user and settings.basic_auth_password is not None:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        user_ok = _same(user, settings.basic_auth_user)
        password_ok = _same(password, settings.basic_auth_password.get_secret_value())
        return user_ok and password_ok
    return False


def init_auth(app: Flask, settings: Settings) -> None:
    """Require credentials on non-public endpoints when any are configured."""
    basic = bool(settings.basic_auth_user and settings.basic_auth_password is not None)
    if not basic and settings.bearer_token is None:
        return

    @app.before_request
    def _require_credentials() -> ResponseReturnValue | None:
        view = app.view_functions.get(request.endpoint or "")
        if view is None or getattr(view, PUBLIC_ATTRIBUTE, False):
            return None
        if check_authorization(request.headers.get("Authorization", ""), settings):
            return None
        response = jsonify({"error": "unauthorized: this endpoint needs the backend's basic auth or bearer token"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="labelloop"'
        return response
