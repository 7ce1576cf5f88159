"""The served model: one base engine per process, one active adapter per Label Studio project.

The engine is built lazily on first use, once, under a lock (gunicorn's master never builds it: it is created
in the worker on the first request). Each project maps to an :class:`AdapterRef` or to the base model;
``model_version`` is ``<base name>@<adapter version or "base">``.

Hot swap (:meth:`ModelHolder.activate`): the new adapter is loaded first while the old one keeps serving, then
the project's reference flips under the lock. Requests hold a *lease* on the adapter they started with
(:meth:`ModelHolder.lease`), so a replaced adapter is unloaded only when its last in-flight request is done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from ml_backend.engines.base import AdapterRef, Engine, EngineError, build_engine
from ml_backend.settings import Settings

log = logging.getLogger(__name__)

BASE_VERSION = "base"


class ActiveAdapter(Enum):
    """Type of the :data:`ACTIVE` sentinel."""

    ACTIVE = "active"


ACTIVE = ActiveAdapter.ACTIVE
"""Use the project's active adapter (as opposed to an explicit AdapterRef, or None for the base)."""


@dataclass(frozen=True)
class Lease:
    """What one request runs on: the engine, the adapter (None = base) and the matching ``model_version``."""

    engine: Engine
    adapter: AdapterRef | None
    model_version: str


class ModelHolder:
    """Lock-guarded owner of the engine and of the project → adapter map (thread-safe)."""

    def __init__(self, settings: Settings, engine_factory: Callable[[Settings], Engine] | None = None) -> None:
        self._settings = settings
        self._factory = engine_factory or build_engine
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._lock = threading.RLock()
        self._active: dict[int, AdapterRef] = {}
        self._in_flight: dict[str, int] = {}  # adapter version -> leases
        self._retired: dict[str, AdapterRef] = {}  # replaced adapters waiting for their last lease

    @property
    def base_name(self) -> str:
        """The base model's short name in ``model_version`` strings (no engine needed)."""
        return self._settings.model_label

    def engine(self) -> Engine:
        """The engine, built on first call (once, even under concurrent first calls).

        Raises:
            EngineError: the engine cannot be built; the next call tries again.
        """
        engine = self._engine
        if engine is not None:
            return engine
        with self._engine_lock:
            if self._engine is None:
                log.info("holder: building the %s engine for %s", self._settings.engine, self.base_name)
                self._engine = self._factory(self._settings)
            return self._engine

    def is_loaded(self) -> bool:
        """Whether the engine has been built (``/health`` reports it; nothing is loaded by asking)."""
        return self._engine is not None

    def adapter_for(self, project: int | None) -> AdapterRef | None:
        """The project's active adapter; None for the base model (and for requests without a project)."""
        if project is None:
            return None
        with self._lock:
            return self._active.get(project)

    def version_of(self, adapter: AdapterRef | None) -> str:
        """``<base>@<adapter version or "base">``."""
        return f"{self.base_name}@{adapter.version if adapter else BASE_VERSION}"

    def model_version(self, project: int | None) -> str:
        """The ``model_version`` Label Studio sees for ``project`` (identical on /setup and every prediction)."""
        return self.version_of(self.adapter_for(project))

    def activate(self, project: int, adapter: AdapterRef | None) -> str:
        """Make ``adapter`` (None: the base) serve ``project``; returns the new ``model_version``.

        The adapter is loaded before the flip, so requests keep running on the old one meanwhile. The replaced
        adapter is unloaded once no lease holds it and no other project uses it.

        Raises:
            EngineError: the adapter cannot be loaded; the old one stays active.
        """
        if adapter is not None:
            self.engine().load_adapter(adapter)
        with self._lock:
            old = self._active.get(project)
            if adapter is None:
                self._active.pop(project, None)
            else:
                self._active[project] = adapter
                self._retired.pop(adapter.version, None)
            if old is not None and (adapter is None or old.version != adapter.version):
                self._retire(old)
            version = self.version_of(adapter)
        log.info("holder: project %s now serves %s", project, version)
        return version

    def snapshot(self) -> dict[int, str]:
        """project → model_version for every project with an adapter (others serve ``<base>@base``)."""
        with self._lock:
            return {project: self.version_of(adapter) for project, adapter in sorted(self._active.items())}

    @contextmanager
    def lease(self, project: int | None, adapter: AdapterRef | ActiveAdapter | None = ACTIVE) -> Iterator[Lease]:
        """Hold the engine and an adapter for the length of one request.

        ``adapter``: :data:`ACTIVE` (default) uses the project's active adapter (the base without a project);
        an explicit :class:`AdapterRef` or None (the base) overrides it — that is how the evaluator runs a
        candidate before it is active. An explicit adapter is loaded if needed and unloaded after its last
        lease unless it became active meanwhile.

        Raises:
            EngineError: the engine or the explicit adapter cannot be loaded.
        """
        engine = self.engine()
        if adapter is ACTIVE:
            ref = self.adapter_for(project)
        else:
            ref = adapter if isinstance(adapter, AdapterRef) else None
            if ref is not None:
                engine.load_adapter(ref)
        with self._lock:
            if ref is not None:
                self._in_flight[ref.version] = self._in_flight.get(ref.version, 0) + 1
                if adapter is not ACTIVE and not self._is_active(ref):
                    self._retired.setdefault(ref.version, ref)
        try:
            yield Lease(engine=engine, adapter=ref, model_version=self.version_of(ref))
        finally:
            if ref is not None:
                with self._lock:
                    self._in_flight[ref.version] -= 1
                    if self._in_flight[ref.version] == 0:
                        del self._in_flight[ref.version]
                        if ref.version in self._retired:
                            self._unload_if_idle(self._retired[ref.version])

    def close(self) -> None:
        """Close the engine (if built); the holder can build a new one afterwards."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    # --- internals (callers hold self._lock) ---------------------------------------------------------------

    def _is_active(self, adapter: AdapterRef) -> bool:
        return any(active.version == adapter.version for active in self._active.values())

    def _retire(self, adapter: AdapterRef) -> None:
        self._retired[adapter.version] = adapter
        self._unload_if_idle(adapter)

    def _unload_if_idle(self, adapter: AdapterRef) -> None:
        if self._in_flight.get(adapter.version) or self._is_active(adapter):
            return
        self._retired.pop(adapter.version, None)
        engine = self._engine
        if engine is None:
            return
        try:
            engine.unload_adapter(adapter)
        except EngineError:
            log.warning("holder: could not unload adapter %s", adapter.version, exc_info=True)
