"""holder.py: one engine built lazily once, per-project adapters, hot swap without dropping requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from backend_helpers import ScriptedEngine

from ml_backend.engines.base import AdapterRef, EngineError
from ml_backend.holder import ACTIVE, ModelHolder
from ml_backend.settings import Settings

V1 = AdapterRef("v1", "/adapters/v1")
V2 = AdapterRef("v2", "/adapters/v2")


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(model="/models/Qwen2-VL-2B-Instruct")


def test_engine_is_built_once_under_concurrent_first_use(settings: Settings) -> None:
    built: list[int] = []

    def factory(_: Settings) -> ScriptedEngine:
        built.append(1)
        time.sleep(0.2)
        return ScriptedEngine()

    holder = ModelHolder(settings, factory)
    assert not holder.is_loaded()
    engines: list[object] = []
    threads = [threading.Thread(target=lambda: engines.append(holder.engine())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(engine is engines[0] for engine in engines)
    assert holder.is_loaded()


def test_a_failed_build_is_retried(settings: Settings) -> None:
    attempts: list[int] = []

    def factory(_: Settings) -> ScriptedEngine:
        attempts.append(1)
        if len(attempts) == 1:
            raise EngineError("transformers: cannot load '/models/x': out of memory")
        return ScriptedEngine()

    holder = ModelHolder(settings, factory)
    with pytest.raises(EngineError, match="out of memory"):
        holder.engine()
    assert isinstance(holder.engine(), ScriptedEngine)


def test_model_version_per_project(settings: Settings) -> None:
    holder = ModelHolder(settings, lambda s: ScriptedEngine())
    assert holder.model_version(None) == "Qwen2-VL-2B-Instruct@base"
    assert holder.model_version(3) == "Qwen2-VL-2B-Instruct@base"
    assert holder.activate(3, V1) == "Qwen2-VL-2B-Instruct@v1"
    assert holder.model_version(3) == "Qwen2-VL-2B-Instruct@v1"
    assert holder.model_version(4) == "Qwen2-VL-2B-Instruct@base"
    assert holder.adapter_for(3) == V1
    assert holder.snapshot() == {3: "Qwen2-VL-2B-Instruct@v1"}


def test_swap_loads_first_then_flips(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.activate(1, V1)
    seen_during_load: list[str] = []
    original = engine.load_adapter

    def load(adapter: AdapterRef) -> None:
        seen_during_load.append(holder.model_version(1))
        original(adapter)

    engine.load_adapter = load  # type: ignore[method-assign]
    holder.activate(1, V2)
    assert seen_during_load == ["Qwen2-VL-2B-Instruct@v1"]  # the old adapter served while v2 loaded
    assert holder.model_version(1) == "Qwen2-VL-2B-Instruct@v2"
    assert engine.unloaded == ["v1"]


def test_failed_swap_keeps_the_old_adapter(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.activate(1, V1)
    with pytest.raises(EngineError, match="cannot load adapter 'v2' from missing"):
        holder.activate(1, AdapterRef("v2", "missing"))
    assert holder.model_version(1) == "Qwen2-VL-2B-Instruct@v1"
    assert engine.loaded == ["v1"]


def test_replaced_adapter_waits_for_its_requests(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.activate(1, V1)
    with holder.lease(1) as lease:
        assert lease.adapter == V1 and lease.model_version.endswith("@v1")
        holder.activate(1, V2)
        assert "v1" in engine.loaded  # still in use by this request
        with holder.lease(1) as newer:
            assert newer.adapter == V2
    assert engine.loaded == ["v2"]
    assert engine.unloaded == ["v1"]


def test_adapter_shared_by_projects_stays_loaded(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.activate(1, V1)
    holder.activate(2, V1)
    holder.activate(1, None)
    assert engine.loaded == ["v1"] and holder.model_version(1).endswith("@base")
    holder.activate(2, None)
    assert engine.loaded == [] and engine.unloaded == ["v1"]


def test_explicit_adapter_for_the_evaluator(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.activate(1, V1)
    with holder.lease(1, V2) as lease:  # a candidate, not active
        assert lease.adapter == V2 and lease.model_version.endswith("@v2")
        assert engine.loaded == ["v1", "v2"]
    assert engine.loaded == ["v1"]  # the candidate is unloaded after its run
    with holder.lease(1, None) as base:
        assert base.adapter is None and base.model_version.endswith("@base")
    with holder.lease(1, ACTIVE) as active:
        assert active.adapter == V1


def test_candidate_promoted_during_its_run_stays(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    with holder.lease(5, V2):
        holder.activate(5, V2)
    assert engine.loaded == ["v2"] and holder.model_version(5).endswith("@v2")


def test_close_closes_the_engine(settings: Settings) -> None:
    engine = ScriptedEngine()
    holder = ModelHolder(settings, lambda s: engine)
    holder.engine()
    holder.close()
    assert engine.closed and not holder.is_loaded()
