"""``GET /metrics``: the process's Prometheus metrics (see :mod:`ml_backend.metrics`)."""

from __future__ import annotations

from flask import Blueprint, Response

from ml_backend.app import services
from ml_backend.metrics import CONTENT_TYPE

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(services().metrics.render(), mimetype=None, content_type=CONTENT_TYPE)
