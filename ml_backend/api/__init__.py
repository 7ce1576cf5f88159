"""HTTP surfaces, one blueprint per module. ``create_app`` registers every blueprint listed in BLUEPRINTS."""

from __future__ import annotations

# "module:attribute" of each blueprint, relative to ml_backend.api
BLUEPRINTS: list[str] = ["predict:bp", "metrics:bp", "webhook:bp"]
