"""Prometheus metrics of one backend process, in a registry of its own (one per app, so tests stay isolated).

Exposed by ``GET /metrics`` in the Prometheus text format. What they answer:

- ``labelloop_http_requests_total{endpoint,method,status}`` and ``labelloop_http_request_seconds{endpoint}``:
  traffic and latency per endpoint.
- ``labelloop_predictions_total{outcome}``: tasks answered, by outcome (``predicted``, ``cached``, ``failed``,
  ``deferred`` past the deadline).
- ``labelloop_cache_requests_total{result}``: prediction-cache ``hit``, ``miss`` and ``error`` (Redis down).
- ``labelloop_engine_seconds{op}``: time inside the engine (``generate``, ``score_options``); its ``_sum``
  against ``labelloop_http_request_seconds_sum{endpoint="predict.predict"}`` is the backend's own share.
- ``labelloop_engine_waiting`` / ``labelloop_engine_in_flight``: engine calls queued behind the concurrency
  bound, and running (the queue depth of the in-process engine).
- ``labelloop_queue_depth{queue}``: jobs waiting in the RQ queue (read from Redis at scrape time).
- ``labelloop_image_errors_total{reason}``, ``labelloop_skipped_controls_total{tag}``: what was not predicted.
- ``labelloop_mark_detection_errors_total``: images on which the marks detector failed (predicted without marks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 100, 300)


class _QueueDepth(Collector):  # type: ignore[misc]
    """Reads RQ queue lengths when scraped; a Redis failure yields no sample rather than an error."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("labelloop_queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"])
        try:
            depths = self._read()
        except Exception:  # a scrape must not fail because Redis is down
            log.debug("metrics: queue depth unavailable", exc_info=True)
            depths = {}
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


class Metrics:
    """The process's metrics (thread-safe: prometheus_client's types are)."""

    def __init__(self, queue_depth: Callable[[], dict[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http_requests = Counter(
            "labelloop_http_requests", "HTTP requests served.", ["endpoint", "method", "status"], registry=reg
        )
        self.http_seconds = Histogram(
            "labelloop_http_request_seconds", "HTTP request latency.", ["endpoint"], buckets=_LATENCY_BUCKETS,
            registry=reg,
        )  # fmt: skip
        self.predictions = Counter("labelloop_predictions", "Tasks answered, by outcome.", ["outcome"], registry=reg)
        self.cache_requests = Counter(
            "labelloop_cache_requests", "Prediction cache lookups and failures.", ["result"], registry=reg
        )
        self.engine_seconds = Histogram(
            "labelloop_engine_seconds", "Time inside the engine.", ["op"], buckets=_LATENCY_BUCKETS, registry=reg
        )
        self.engine_waiting = Gauge(
            "labelloop_engine_waiting", "Engine calls waiting for the concurrency bound.", registry=reg
        )
        self.engine_in_flight = Gauge("labelloop_engine_in_flight", "Engine calls running.", registry=reg)
        self.image_errors = Counter(
            "labelloop_image_errors", "Images that could not be used, by reason.", ["reason"], registry=reg
        )
        self.skipped_controls = Counter(
            "labelloop_skipped_controls", "Label-config controls not predicted, by tag.", ["tag"], registry=reg
        )
        self.mark_detection_errors = Counter(
            "labelloop_mark_detection_errors", "Images the marks detector failed on.", registry=reg
        )
        if queue_depth is not None:
            reg.register(_QueueDepth(queue_depth))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        data: bytes = generate_latest(self.registry)
        return data

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0 when absent); for tests and the bench."""
        found: Any = self.registry.get_sample_value(name, labels or {})
        return float(found) if found is not None else 0.0
