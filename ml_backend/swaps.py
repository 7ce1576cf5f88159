"""Hot swaps in a running backend: follow the registry's active versions onto the model holder.

One :class:`SwapWatcher` per backend process (``attach(app)`` after ``create_app``). A daemon thread listens on
the Redis channel ``<prefix>:events`` — the training job and ``labelloop models rollback`` publish there after
the registry's pointer moved — and also reads the registry every ``swap_poll_interval`` seconds, so a message
lost while Redis was away only delays a swap. Either way it calls :meth:`SwapWatcher.sync`, which compares
:meth:`Registry.active_map` with what the holder serves and calls ``holder.activate(project, AdapterRef)`` for
each difference: the holder loads the new adapter while the old one keeps serving (peft for the in-process
engine, the runtime LoRA endpoint for ``openai``), then flips the project's reference, so no request fails and
``/setup`` and new predictions carry the new ``model_version``.

Every engine gets the same :class:`AdapterRef` for a version (:func:`adapter_ref`: its id and its directory) and
makes it servable its own way in ``load_adapter``: peft for the in-process ``transformers`` engine; for ``openai``
the server's model list, else vLLM's runtime ``/load_lora_adapter`` (``engines/openai.py``).

Failures: an adapter that cannot be loaded (``EngineError``) is logged and leaves the old version serving; it
is tried again at the next poll (not in a tight loop). Redis being down only stops the messages; the registry
poll continues.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ml_backend.engines.base import AdapterRef, EngineError
from ml_backend.registry import ModelVersion, Registry

if TYPE_CHECKING:
    import redis
    from flask import Flask

    from ml_backend.holder import ModelHolder
    from ml_backend.settings import Settings

log = logging.getLogger(__name__)

WATCHER_EXTENSION = "labelloop.swaps"


def adapter_ref(version: ModelVersion) -> AdapterRef:
    """The adapter of a registry version, for any engine: its id (the served name for ``openai``) and its
    directory. The backend, the bulk job and the evaluator all address versions through this."""
    return AdapterRef(version.id, version.adapter_path)


class SwapWatcher:
    """Keeps a :class:`~ml_backend.holder.ModelHolder` on the registry's active versions (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        *,
        registry: Registry | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.registry = registry or Registry(settings.data_dir)
        self._client = client
        self.channel = f"{settings.redis_prefix}:events"
        self._stop = threading.Event()
        self._sync_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed: dict[tuple[int, str | None], float] = {}
        self.swaps = 0

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            import redis as redis_lib

            self._client = redis_lib.Redis.from_url(
                self.settings.redis_url, socket_connect_timeout=2.0, health_check_interval=30
            )
        return self._client

    def sync(self) -> dict[int, str]:
        """Activate on the holder whatever the registry says each project serves; returns project -> new version.

        A version that failed to load is retried only after ``swap_poll_interval`` seconds.
        """
        changed: dict[int, str] = {}
        with self._sync_lock:
            wanted = self.registry.active_map()
            served = self.holder.snapshot()
            for project in sorted(set(wanted) | set(served)):
                version = wanted.get(project)
                current = self.holder.adapter_for(project)
                if (current.version if current else None) == (version.id if version else None):
                    continue
                key = (project, version.id if version else None)
                failed_at = self._failed.get(key)
                if failed_at is not None and time.monotonic() - failed_at < self.settings.swap_poll_interval:
                    continue
                try:
                    ref = adapter_ref(version) if version else None
                    changed[project] = self.holder.activate(project, ref)
                except EngineError as exc:
                    self._failed[key] = time.monotonic()
                    log.error("swaps: project %s: cannot load %s; the old version keeps serving: %s",
                              project, version.id if version else "base", exc)  # fmt: skip
                    continue
                self._failed.pop(key, None)
                self.swaps += 1
                log.info("swaps: project %s now serves %s", project, changed[project])
        return changed

    def start(self) -> SwapWatcher:
        """Start the watching thread (idempotent); its first act is a sync."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="labelloop-swaps", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it exits within about a second)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _safe_sync(self) -> None:
        try:
            self.sync()
        except Exception:  # the registry file busy or unreadable: the next poll tries again
            log.exception("swaps: sync failed")

    def _run(self) -> None:
        pubsub: Any = None
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                self._safe_sync()
                next_poll = time.monotonic() + self.settings.swap_poll_interval
            try:
                if pubsub is None:
                    pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.channel)
                wait = max(0.05, min(1.0, next_poll - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
            except Exception as exc:  # Redis away: keep polling the registry, reconnect later
                log.warning("swaps: Redis unavailable (%s); polling the registry only", exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        log.debug("swaps: closing the subscription failed", exc_info=True)
                pubsub = None
                self._stop.wait(min(self.settings.swap_poll_interval, 5.0))
                continue
            if message and message.get("type") == "message":
                try:
                    event = json.loads(message["data"])
                    log.info("swaps: %s for project %s", event.get("type"), event.get("project"))
                except (TypeError, ValueError):
                    log.warning("swaps: ignoring a malformed message on %s", self.channel)
                self._safe_sync()
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:
                log.debug("swaps: closing the subscription failed", exc_info=True)


def attach(app: Flask) -> SwapWatcher:
    """Start a watcher for the app's holder (``app.extensions["labelloop"]``) and keep it with the app."""
    services = app.extensions["labelloop"]
    watcher = app.extensions.get(WATCHER_EXTENSION)
    if watcher is None:
        watcher = SwapWatcher(services.settings, services.holder)
        app.extensions[WATCHER_EXTENSION] = watcher
    started: SwapWatcher = watcher.start()
    return started
