"""The prediction cache in Redis: a repeated request for an unchanged task costs a lookup, not a model call.

Key: ``<prefix>:cache:<sha256 of (model_version, task id, label-config hash, canonical task data)>``; value: the
:class:`~ml_backend.protocol.TaskPrediction` as JSON; TTL ``Settings.cache_ttl`` (0 disables the cache).
A new adapter (a new ``model_version``), an edited task or an edited label config therefore miss.

One round trip each way, whatever the number of tasks: lookups are one ``MGET``; writes are one call of a small
Lua script that sets every key with its TTL (a pipeline of ``SET`` commands cost redis-py about 8 us of packing
and parsing per task). With ``write_behind`` (what the backend uses), :meth:`PredictionCache.put_many` only queues
the predictions: a thread of the cache writes them, the writes of all the requests that finished meanwhile in
one round trip, so a request no longer waits for its write. A queued prediction is served from the queue to
this process's lookups (a repeat of a request finds its predictions at once); other processes see it when it is
written, a millisecond or so later. :meth:`PredictionCache.flush` waits for the queue to drain.

Redis being down never fails a prediction, nor slows it for long: lookups count as misses, writes are dropped,
the first failure is logged with its cause and later ones only counted
(``labelloop_cache_requests_total{result="error"}``); after a failure the cache is not asked for
``retry_after`` seconds (5), so requests do not each wait for a connection timeout. Commands time out after a
second; use :func:`redis_client` for a client that does not retry with backoff.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ml_backend.protocol import TaskInput, TaskPrediction

if TYPE_CHECKING:
    import redis

    from ml_backend.metrics import Metrics

log = logging.getLogger(__name__)

# KEYS: the cache keys; ARGV: the TTL in seconds, then one value per key.
_PUT = """
local ttl = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""
_PUT_CHUNK = 1000  # keys per script call: bounds one command's size for very large requests
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps(..., separators=...) builds one per call
_QUEUE_LIMIT = 100_000  # predictions waiting for the writer beyond which new ones are dropped (Redis stalled)


def redis_client(url: str, *, single_connection: bool = False) -> redis.Redis:
    """A client for the cache: one-second timeouts and a single retry without backoff (redis-py's default of ten
    retries with backoff would hold every request for seconds while Redis is down). ``single_connection``: one
    connection of its own instead of a pool (see :class:`ThreadClients`)."""
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_lib.Redis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 1),
        single_connection_client=single_connection,
    )


class ThreadClients:
    """A cache client per thread, each on one connection of its own: ``clients()`` is the calling thread's.

    A pooled client checks every connection it hands out for stray data (a non-blocking ``recv`` between two
    ``ioctl`` calls) and takes the pool's lock, on every command. In a threaded server each call that blocks hands the
    GIL to another thread, so this costs thread switches as well as system calls: measured with 8 threads, a
    connection per thread took 40 us of CPU and 3 thread switches less per lookup than the pool. A client per
    thread also keeps lookups independent: a Redis that stops answering holds each thread for its own timeout,
    never one after the other behind a shared connection.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._local = threading.local()

    def __call__(self) -> redis.Redis:
        client: redis.Redis | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = redis_client(self._url, single_connection=True)
        return client


def config_hash(label_config: str) -> str:
    """sha256 of the label config text."""
    return hashlib.sha256(label_config.encode()).hexdigest()


class PredictionCache:
    """Get and put predictions by (task, task data, label config, model_version). Thread-safe."""

    def __init__(
        self,
        client: redis.Redis | Callable[[], redis.Redis],
        *,
        prefix: str,
        ttl: int,
        metrics: Metrics | None = None,
        retry_after: float = 5.0,
        write_behind: bool = False,
        linger: float = 0.005,
    ) -> None:
        """``client``: a Redis client, or a callable giving the calling thread's (:class:`ThreadClients`).
        ``write_behind``: queue writes for the cache's thread, which waits ``linger`` seconds after the first
        queued prediction for more to come (written together)."""
        self._client: Callable[[], redis.Redis] = client if callable(client) else lambda: client
        self._prefix = f"{prefix}:cache:"
        self._ttl = ttl
        self._metrics = metrics
        self._retry_after = retry_after
        self._down = False
        self._retry_at = 0.0
        self._state_lock = threading.Lock()
        self._script: Any = None  # registered on the first write
        self._writer = _WriteBehind(self._write, linger) if write_behind and ttl > 0 else None
        self._counters: dict[str, Any] = {}

    @property
    def enabled(self) -> bool:
        """False when ``cache_ttl`` is 0."""
        return self._ttl > 0

    def key(self, task: TaskInput, label_config_hash: str, model_version: str) -> str:
        """The Redis key of ``task``'s prediction under this config and model version: one sha256 over the
        three fixed-form parts (JSON-quoted, so none can run into the next) and the canonical task data."""
        head = _COMPACT.encode([model_version, task.id, label_config_hash])
        return self._prefix + hashlib.sha256((head + task.canonical_data()).encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> list[TaskPrediction | None]:
        """The cached prediction for each key, or None (miss, unreadable entry, Redis down)."""
        if not keys or not self.enabled:
            return [None] * len(keys)
        found: list[TaskPrediction | None] = [None] * len(keys)
        ask = list(range(len(keys)))
        if self._writer is not None:  # queued for writing: as good as written
            for index, queued in self._writer.lookup(keys):
                found[index] = dataclasses.replace(queued, cached=True)
            ask = [index for index in ask if found[index] is None]
        if ask and self._resting():
            self._count("error", len(ask))
            ask = []
        if ask:
            try:
                raw = self._client().mget([keys[index] for index in ask])
            except Exception as exc:  # any Redis failure degrades to a miss
                self._failed("read", exc)
                self._count("error", len(ask))
                raw = []
            else:
                self._recovered()
            for index, value in zip(ask, raw, strict=False):
                if value is not None:
                    try:
                        found[index] = TaskPrediction.from_json(json.loads(value))
                    except ValueError:
                        log.warning("cache: dropping an unreadable entry")
            if raw:
                misses = sum(1 for index in ask if found[index] is None)
                self._count("miss", misses)
        self._count("hit", sum(1 for prediction in found if prediction is not None))
        return found

    def put_many(self, items: Sequence[tuple[str, TaskPrediction]]) -> None:
        """Store predictions that succeeded (errors and deferrals are skipped); failures are logged once.

        With ``write_behind`` the predictions are queued and written by the cache's thread.
        """
        items = [(key, p) for key, p in items if p.ok]
        if not items or not self.enabled:
            return
        if self._writer is not None:
            if not self._writer.submit(items):
                self._count("error", len(items))
            return
        self._write(items)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued prediction is written (or dropped); False on timeout."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def _write(self, items: Sequence[tuple[str, TaskPrediction]]) -> None:
        if self._resting():
            self._count("error", len(items))
            return
        try:
            client = self._client()
            if self._script is None:
                self._script = client.register_script(_PUT)
            for start in range(0, len(items), _PUT_CHUNK):
                chunk = items[start : start + _PUT_CHUNK]
                values = [_COMPACT.encode(prediction.to_json()) for _, prediction in chunk]
                self._script(keys=[key for key, _ in chunk], args=[self._ttl, *values], client=client)
        except Exception as exc:  # any Redis failure drops the write
            self._failed("write", exc)
            self._count("error", len(items))
            return
        self._recovered()

    def _count(self, result: str, amount: int) -> None:
        if self._metrics is not None and amount:
            counter = self._counters.get(result)
            if counter is None:
                counter = self._counters[result] = self._metrics.cache_requests.labels(result=result)
            counter.inc(amount)

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


class _WriteBehind:
    """A queue of predictions to write and the daemon thread that writes it.

    The thread is woken by the first prediction queued, waits ``linger`` seconds for more, then writes all that
    is queued in one round trip: under load, many requests' predictions per round trip and per thread switch.
    """

    def __init__(self, write: Callable[[Sequence[tuple[str, TaskPrediction]]], None], linger: float) -> None:
        self._write = write
        self._linger = linger
        self._queued: dict[str, TaskPrediction] = {}
        self._writing: dict[str, TaskPrediction] = {}
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def submit(self, items: Sequence[tuple[str, TaskPrediction]]) -> bool:
        """Queue ``items``; False (nothing queued) when the queue is full."""
        with self._cond:
            if len(self._queued) + len(items) > _QUEUE_LIMIT:
                return False
            first = not self._queued
            self._queued.update(items)
            if self._thread is None or not self._thread.is_alive():  # first use (or after a fork)
                self._thread = threading.Thread(target=self._run, name="labelloop-cache-writer", daemon=True)
                self._thread.start()
            if first:
                self._cond.notify_all()
        return True

    def lookup(self, keys: Sequence[str]) -> list[tuple[int, TaskPrediction]]:
        """(index, prediction) for each key still waiting to be written."""
        with self._cond:
            if not self._queued and not self._writing:
                return []
            found = []
            for index, key in enumerate(keys):
                prediction = self._queued.get(key) or self._writing.get(key)
                if prediction is not None:
                    found.append((index, prediction))
            return found

    def flush(self, timeout: float | None) -> bool:
        with self._cond:
            self._cond.notify_all()  # no lingering: write now
            return self._cond.wait_for(lambda: not self._queued and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queued))
                if self._linger > 0:
                    self._cond.wait(self._linger)  # let more requests queue theirs (flush() cuts it short)
                self._writing, self._queued = self._queued, {}
                batch = list(self._writing.items())
            try:
                self._write(batch)
            except Exception:  # _write handles Redis failures; anything else must not kill the writer
                log.exception("cache: writing %d predictions failed", len(batch))
            finally:
                with self._cond:
                    self._writing = {}
                    self._cond.notify_all()
