"""Hot swaps in a running backend: the watcher follows the registry onto the holder, through Redis messages or
the registry poll, with the real tiny model and real peft adapters; a swap under a steady /predict load fails
no request; an adapter that cannot load leaves the old version serving; for the `openai` engine the adapter is
loaded into the server at runtime first (a stand-in for vLLM, which needs a GPU)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from loop_fixtures import colour_images, wait_for
from vllm_standin import VllmStandIn
from werkzeug.serving import make_server

from ml_backend.app import create_app
from ml_backend.engines.base import AdapterRef
from ml_backend.events import Loop
from ml_backend.holder import ModelHolder
from ml_backend.registry import Registry
from ml_backend.settings import Settings
from ml_backend.swaps import SwapWatcher, attach

CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="colour" toName="image" question="What colour is the square?">
    <Choice value="red"/><Choice value="green"/><Choice value="blue"/><Choice value="yellow"/></Choices></View>"""
PROJECT = 7


@pytest.fixture(scope="session")
def adapters(tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real peft LoRA adapters for the tiny Qwen2-VL (random, non-zero), and one whose config lies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    root = tmp_path_factory.mktemp("adapters")
    out: dict[str, Path] = {}
    for name in ("a", "b", "bad"):
        base = AutoModelForImageTextToText.from_pretrained(tiny_model("qwen2_vl"), dtype=torch.float32)
        torch.manual_seed(len(out))
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(root / name)
        if name == "bad":  # complete files, but the config's rank does not match the saved matrices
            cfg = json.loads((root / name / "adapter_config.json").read_text())
            cfg["r"] = 8
            (root / name / "adapter_config.json").write_text(json.dumps(cfg))
        out[name] = root / name
    return out


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tiny_model: Callable[..., Path], tmp_path: Path) -> Settings:
    images = tmp_path / "files"
    colour_images(images / "sq", 4)
    return make_settings(
        model=str(tiny_model("qwen2_vl")), device="cpu", torch_dtype="float32", ls_local_files_root=images,
        swap_poll_interval=3600.0, cache_ttl=0,
    )  # fmt: skip


def promote(registry: Registry, adapter: Path, project: int = PROJECT) -> str:
    run = registry.create_run(project, trigger="manual", base_model="tiny")
    vid = registry.new_version_id(project)
    registry.add_version(run.id, registry.store_adapter(adapter, vid), version_id=vid)
    return registry.promote(vid).id


def test_sync_follows_promotions_and_rollbacks(settings: Settings, adapters: dict[str, Path]) -> None:
    registry = Registry(settings.data_dir)
    holder = ModelHolder(settings)
    watcher = SwapWatcher(settings, holder, registry=registry)
    label = settings.model_label
    assert watcher.sync() == {}
    v1 = promote(registry, adapters["a"])
    assert watcher.sync() == {PROJECT: f"{label}@{v1}"}
    assert holder.model_version(PROJECT) == f"{label}@{v1}"
    assert watcher.sync() == {}  # nothing changed
    registry.rollback(PROJECT, "base")
    assert watcher.sync() == {PROJECT: f"{label}@base"}
    holder.close()


def test_an_adapter_that_cannot_load_leaves_the_old_version_serving(
    settings: Settings, adapters: dict[str, Path]
) -> None:
    registry = Registry(settings.data_dir)
    holder = ModelHolder(settings)
    watcher = SwapWatcher(settings, holder, registry=registry)
    v1 = promote(registry, adapters["a"])
    watcher.sync()
    promote(registry, adapters["bad"])
    assert watcher.sync() == {}
    assert holder.model_version(PROJECT) == f"{settings.model_label}@{v1}"
    holder.close()


@pytest.fixture
def backend(settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[str, Any]]:
    app = create_app(settings)
    watcher = attach(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    watcher.stop()
    server.shutdown()
    thread.join()
    app.extensions["labelloop"].predictor.close()
    app.extensions["labelloop"].holder.close()


def test_a_swap_under_steady_predict_load_fails_no_request(
    backend: tuple[str, Any], settings: Settings, adapters: dict[str, Path], redis_client: redis.Redis
) -> None:
    url, app = backend
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d=sq/{p.name}"}}
             for i, p in enumerate(sorted((settings.ls_local_files_root or Path()).glob("sq/*.png")))]  # fmt: skip
    body = {"tasks": tasks, "project": f"{PROJECT}.1", "label_config": CONFIG}
    label = settings.model_label
    registry = Registry(settings.data_dir)
    v1 = promote(registry, adapters["a"])
    Loop(settings, redis_client).publish_activation(PROJECT, v1)
    wait_for(lambda: app.extensions["labelloop"].holder.model_version(PROJECT) == f"{label}@{v1}",
             "the swap to the first version", timeout=120)  # fmt: skip

    answers: list[tuple[int, set[str]]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                response = http.post(f"{url}/predict", json=body)
                versions = {item["model_version"] for item in response.json().get("results", []) if item}
                answers.append((response.status_code, versions))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(answers) >= 4, "requests on the old version", timeout=300)
    v2 = promote(registry, adapters["b"])
    # The poll interval is an hour: only the Redis message can make this swap happen.
    Loop(settings, redis_client).publish_activation(PROJECT, v2)
    wait_for(lambda: any(f"{label}@{v2}" in versions for _, versions in answers), "answers from the new version",
             timeout=300)  # fmt: skip
    seen = len(answers)
    wait_for(lambda: len(answers) >= seen + 4, "more answers after the swap", timeout=300)
    stop.set()
    for thread in threads:
        thread.join()

    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200]
    assert all(len(versions) == 1 for _, versions in answers)  # one version per response, never a mix
    served = [versions.pop() for _, versions in answers]
    assert served[0] == f"{label}@{v1}" and served[-1] == f"{label}@{v2}"
    first_new = served.index(f"{label}@{v2}")
    assert set(served[first_new + 4 :]) <= {f"{label}@{v2}"}  # after the flip (and in-flight ones), only the new
    setup = httpx.post(f"{url}/setup", json={"project": f"{PROJECT}.1", "schema": CONFIG})
    assert setup.json() == {"model_version": f"{label}@{v2}"}


def test_the_registry_poll_catches_a_missed_message(
    make_settings: Callable[..., Settings], settings: Settings, adapters: dict[str, Path]
) -> None:
    polling = settings.model_copy(update={"swap_poll_interval": 0.5})
    registry = Registry(settings.data_dir)
    holder = ModelHolder(polling)
    watcher = SwapWatcher(polling, holder, registry=registry).start()
    try:
        v1 = promote(registry, adapters["a"])  # no message published
        wait_for(lambda: holder.adapter_for(PROJECT) is not None, "the poll to pick up the promotion", timeout=120)
        assert holder.adapter_for(PROJECT).version == v1  # type: ignore[union-attr]
    finally:
        watcher.stop()
        holder.close()
    shutil.rmtree(settings.data_dir / "adapters", ignore_errors=True)


def test_the_openai_engine_gets_the_adapter_loaded_into_the_server_at_runtime(
    make_settings: Callable[..., Settings], adapters: dict[str, Path]
) -> None:
    vllm = VllmStandIn(base="tiny")
    try:
        settings = make_settings(engine="openai", openai_base_url=vllm.url, openai_model="tiny",
                                 model_family="qwen2_vl", model="tiny")  # fmt: skip
        registry = Registry(settings.data_dir)
        holder = ModelHolder(settings)
        watcher = SwapWatcher(settings, holder, registry=registry)
        v1 = promote(registry, adapters["a"])
        assert watcher.sync() == {PROJECT: f"tiny@{v1}"}
        path = registry.get_version(v1).adapter_path
        assert vllm.posts("load_lora_adapter") == [{"lora_name": v1, "lora_path": path}]
        assert holder.adapter_for(PROJECT) == AdapterRef(v1, path)  # the same reference for every engine
        # Another backend process asks again: the server already has it, which is fine.
        other = ModelHolder(settings)
        assert SwapWatcher(settings, other, registry=registry).sync() == {PROJECT: f"tiny@{v1}"}
        assert len(vllm.posts("load_lora_adapter")) == 1
        # An adapter directory the server cannot see leaves the old version serving.
        run = registry.create_run(PROJECT, trigger="manual", base_model="tiny")
        vid = registry.new_version_id(PROJECT)
        stored = registry.store_adapter(adapters["b"], vid)
        registry.add_version(run.id, stored, version_id=vid)
        registry.promote(vid)
        shutil.rmtree(stored)
        assert watcher.sync() == {}
        assert holder.model_version(PROJECT) == f"tiny@{v1}"
        # A rollback to the base unloads the adapter from the server: by the process that loaded it, only.
        registry.rollback(PROJECT, to="base")
        assert watcher.sync() == {PROJECT: "tiny@base"}
        assert vllm.posts("unload_lora_adapter") == [{"lora_name": v1}]
        assert SwapWatcher(settings, other, registry=registry).sync() == {PROJECT: "tiny@base"}
        assert len(vllm.posts("unload_lora_adapter")) == 1
        holder.close()
        other.close()
    finally:
        vllm.close()
