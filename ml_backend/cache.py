"""The prediction cache in Redis: a repeated request for an unchanged task costs a lookup, not a model call.

Key: ``<prefix>:cache:<sha256 of (model_version, task id, task-data hash, label-config hash)>``; value: the
:class:`~ml_backend.protocol.TaskPrediction` as JSON; TTL ``Settings.cache_ttl`` (0 disables the cache).
A new adapter (a new ``model_version``), an edited task or an edited label config therefore miss.

Redis being down never fails a prediction, nor slows it for long: lookups count as misses, writes are dropped,
the first failure is logged with its cause and later ones only counted
(``labelloop_cache_requests_total{result="error"}``); after a failure the cache is not asked for
``retry_after`` seconds (5), so requests do not each wait for a connection timeout. Commands time out after a
second; use :func:`redis_client` for a client that does not retry with backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ml_backend.protocol import TaskInput, TaskPrediction

if TYPE_CHECKING:
    import redis

    from ml_backend.metrics import Metrics

log = logging.getLogger(__name__)


def redis_client(url: str) -> redis.Redis:
    """A client for the cache: one-second timeouts and a single retry without backoff (redis-py's default of ten
    retries with backoff would hold every request for seconds while Redis is down)."""
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_lib.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))


def config_hash(label_config: str) -> str:
    """sha256 of the label config text."""
    return hashlib.sha256(label_config.encode()).hexdigest()


class PredictionCache:
    """Get and put predictions by (task, task data, label config, model_version). Thread-safe."""

    def __init__(
        self, client: redis.Redis, *, prefix: str, ttl: int, metrics: Metrics | None = None, retry_after: float = 5.0
    ) -> None:  # fmt: skip
        self._client = client
        self._prefix = f"{prefix}:cache:"
        self._ttl = ttl
        self._metrics = metrics
        self._retry_after = retry_after
        self._down = False
        self._retry_at = 0.0
        self._state_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when ``cache_ttl`` is 0."""
        return self._ttl > 0

    def key(self, task: TaskInput, label_config_hash: str, model_version: str) -> str:
        """The Redis key of ``task``'s prediction under this config and model version."""
        parts = json.dumps([model_version, task.id, task.data_hash(), label_config_hash])
        return self._prefix + hashlib.sha256(parts.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> list[TaskPrediction | None]:
        """The cached prediction for each key, or None (miss, unreadable entry, Redis down)."""
        if not keys or not self.enabled:
            return [None] * len(keys)
        if self._resting():
            self._count("error", len(keys))
            return [None] * len(keys)
        try:
            raw = self._client.mget(list(keys))
        except Exception as exc:  # any Redis failure degrades to a miss
            self._failed("read", exc)
            self._count("error", len(keys))
            return [None] * len(keys)
        self._recovered()
        found: list[TaskPrediction | None] = []
        for value in raw:
            prediction = None
            if value is not None:
                try:
                    prediction = TaskPrediction.from_json(json.loads(value))
                except ValueError:
                    log.warning("cache: dropping an unreadable entry")
            found.append(prediction)
        hits = sum(1 for p in found if p is not None)
        self._count("hit", hits)
        self._count("miss", len(found) - hits)
        return found

    def put_many(self, items: Sequence[tuple[str, TaskPrediction]]) -> None:
        """Store predictions that succeeded (errors and deferrals are skipped); failures are logged once."""
        items = [(key, p) for key, p in items if p.ok]
        if not items or not self.enabled:
            return
        if self._resting():
            self._count("error", len(items))
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key, prediction in items:
                    pipe.set(key, json.dumps(prediction.to_json(), separators=(",", ":")), ex=self._ttl)
                pipe.execute()
        except Exception as exc:  # any Redis failure drops the write
            self._failed("write", exc)
            self._count("error", len(items))
            return
        self._recovered()

    def _count(self, result: str, amount: int) -> None:
        if self._metrics is not None and amount:
            self._metrics.cache_requests.labels(result=result).inc(amount)

    def _resting(self) -> bool:
        """True while a recent failure says not to ask Redis yet."""
        return self._down and time.monotonic() < self._retry_at

    def _failed(self, what: str, exc: Exception) -> None:
        with self._state_lock:
            first, self._down = not self._down, True
            self._retry_at = time.monotonic() + self._retry_after
        if first:
            log.warning("cache: Redis %s failed, predicting without the cache until it answers: %s", what, exc)

    def _recovered(self) -> None:
        if self._down:
            with self._state_lock:
                self._down = False
            log.info("cache: Redis answers again")
