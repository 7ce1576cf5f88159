"""``POST /webhook``: Label Studio's events into the retraining loop, answered well under Label Studio's 1 s.

The view only parses the payload and records it in Redis (:meth:`ml_backend.events.Loop.handle`): an
annotation event updates the project's review count idempotently and may enqueue one decision job; the Train
button's ``START_TRAINING`` enqueues a forced one; every other action is answered 200 ``ignored``. Nothing is
exported, trained or fetched from Label Studio here (LS waits synchronously and never retries a webhook).

Authentication: Label Studio's webhooks carry no credentials, so the view is public for the backend's basic
auth and checks its own shared secret instead. When ``webhook_secret`` is set, a request must carry it in
``X-Labelloop-Secret`` (compared in constant time) — or the backend's own credentials, which is how the Train
button's ``START_TRAINING`` (sent by LS's ML-backend client, with the backend's basic auth, not the webhook
headers) gets in. Without a secret the endpoint is open.

Answers: 200 ``{"action", "status", "project", "pending"}``; 400 for a body that is not a webhook payload;
401 for a missing or wrong secret; 503 ``{"error": ...}`` at once when Redis is unreachable (nothing recorded;
the periodic reconciliation recovers the count from the Label Studio API when Redis is back).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue

from ml_backend.api.auth import check_authorization, public
from ml_backend.events import EventError, Loop, parse_event
from ml_backend.projects import WEBHOOK_SECRET_HEADER

log = logging.getLogger(__name__)

bp = Blueprint("webhook", __name__)

LOOP_EXTENSION = "labelloop.loop"
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _answer(body: dict[str, Any], status: int) -> Response:
    """A JSON response as ``jsonify`` writes it, without its per-call lookups (the app's JSON provider, its
    options, a new encoder): the webhook is the backend's most frequent small request."""
    return Response(_COMPACT.encode(body) + "\n", status=status, mimetype="application/json")


def loop() -> Loop:
    """The app's loop service, made on first use on its own short-timeout Redis client (RQ needs bytes replies)."""
    found: Loop | None = current_app.extensions.get(LOOP_EXTENSION)
    if found is None:
        from ml_backend.app import services

        found = Loop.from_settings(services().settings, timeout=0.5, fail_fast=True, per_thread=True)
        current_app.extensions[LOOP_EXTENSION] = found
    return found


def _authorized() -> bool:
    from ml_backend.app import services

    settings = services().settings
    if settings.webhook_secret is None:
        return True
    given = request.headers.get(WEBHOOK_SECRET_HEADER, "")
    if given and hmac.compare_digest(given.encode(), settings.webhook_secret.get_secret_value().encode()):
        return True
    return check_authorization(request.headers.get("Authorization", ""), settings)


@bp.post("/webhook")
@public
def webhook() -> ResponseReturnValue:
    """Record one Label Studio event (see the module docstring)."""
    import redis

    if not _authorized():
        return _answer({"error": f"unauthorized: missing or wrong {WEBHOOK_SECRET_HEADER} header"}, 401)
    payload: Any = request.get_json(silent=True)
    try:
        event = parse_event(payload)
    except EventError as exc:
        return _answer({"error": str(exc)}, 400)
    try:
        outcome = loop().handle(event)
    except redis.RedisError as exc:
        log.error("webhook: %s for project %s not recorded: Redis unavailable (%s)", event.action, event.project, exc)
        return _answer({"error": "Redis is unavailable; the event was not recorded (it is recovered later from "
                                 "the Label Studio API)"}, 503)  # fmt: skip
    if outcome.status != "ignored":
        log.info(
            "webhook: %s project %s: %s (pending %s)", event.action, event.project, outcome.status, outcome.pending
        )
    return _answer(outcome.to_json(), 200)
