"""`make demo`'s path without the human: the demo's own functions on the session's Label Studio.

scripts/demo.py's :func:`run_loop` starts ``labelloop serve`` and ``labelloop worker`` as detached processes
with the demo's settings, writes the sample images into Label Studio's local-files root, runs `labelloop setup`
and asks for a suggestion for every task. Then the reviews an annotator would submit go through Label Studio's
API (the reference captions, "accept"): Label Studio's webhook reaches the backend, the worker exports them,
trains a LoRA adapter with ms-swift (a few steps on the tiny model), the gate promotes it, the backend swaps it
in, and Label Studio's next suggestions carry the new version. ``stop`` ends both processes by their PID files.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from label_studio_sdk import LabelStudio

from ml_backend.registry import Registry
from ml_backend.studio import LocalLabelStudio, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
IMAGES = 8
RETRAIN_TIMEOUT = 900.0  # seconds; a bound, not an expectation (ms-swift import + a few steps + evaluation)
SWAP_TIMEOUT = 120.0  # seconds from the promotion; the backend hears it on Redis, or polls the registry


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labelloop_demo", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[ModuleType, Any]]:
    """The demo module and its paths under tmp_path; whatever it started is stopped at the end."""
    module = load_demo()
    paths = module.DemoPaths(tmp_path / "demo")
    try:
        yield module, paths
    finally:
        module.stop(paths)


def review(caption: str) -> list[dict[str, Any]]:
    """An annotator's result for the caption template: the caption and the "accept" verdict."""
    return [
        {"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": [caption]}},
        {"from_name": "review", "to_name": "image", "type": "choices", "value": {"choices": ["accept"]}},
    ]


def test_demo_path_suggestions_reviews_retrain_and_the_new_version_in_label_studio(
    demo: tuple[ModuleType, Any],
    label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
    redis_url: str,
    tiny_model: Callable[..., Path],
) -> None:
    module, paths = demo
    ls = {
        "url": label_studio.url,
        "legacy_token": label_studio.legacy_token,
        "files_root": str(label_studio.files_root),
        "data_dir": str(label_studio.data_dir),
    }
    module.BACKEND_PORT = free_port()  # not the demo's 9090, which a running demo may hold
    result = module.run_loop(
        paths,
        ls=ls,
        redis_url=redis_url,
        model=str(tiny_model("qwen2_vl")),
        model_name=module.MODEL_NAME,
        template="caption",
        count=IMAGES,
    )
    project = result["report"].project_id
    env = result["env"]

    # every imported task has labelloop's suggestion, from the base model
    tasks = list(ls_client.tasks.list(project=project))
    assert len(tasks) == IMAGES
    predictions = list(ls_client.predictions.list(project=project))
    assert sorted(p.task for p in predictions) == sorted(t.id for t in tasks)
    assert {p.model_version for p in predictions} == {"tiny@base"}
    assert all(0.0 <= p.score <= 1.0 for p in predictions)

    # the reviews an annotator submits (reference captions, accepted) trigger a retrain
    captions = module.sample_images(Path(ls["files_root"]) / "demo-images", IMAGES)
    reviews = int(env["LABELLOOP_MIN_NEW_REVIEWS"])
    for task in tasks[:reviews]:
        name = task.data["image"].rsplit("/", 1)[-1]
        ls_client.annotations.create(id=task.id, result=review(captions[name]))

    registry = Registry(Path(env["LABELLOOP_DATA_DIR"]))
    deadline = time.monotonic() + RETRAIN_TIMEOUT
    active = registry.active(project)
    while active is None and time.monotonic() < deadline:  # bounded wait for the worker
        time.sleep(1.0)
        active = registry.active(project)
    worker_log = paths.log("worker").read_text(encoding="utf-8", errors="replace")[-3000:]
    assert active is not None, f"no version was promoted; worker log tail:\n{worker_log}"
    (run,) = [r for r in registry.list_runs(project) if r.version_id == active.id]
    assert run.status.value == "promoted"
    new_version = f"tiny@{active.id}"

    # the backend swapped it in (its watcher follows the registry), and Label Studio shows it
    swap_deadline = time.monotonic() + SWAP_TIMEOUT
    with httpx.Client(base_url=env["LABELLOOP_BACKEND_URL"], timeout=10) as client:
        served = ""
        while served != new_version and time.monotonic() < swap_deadline:
            served = client.get("/versions", params={"project": project}).json()["model_version"]
            time.sleep(0.5)
    assert served == new_version, f"`labelloop serve` still serves {served!r}, not the promoted {new_version!r}"
    assert module.request_predictions(ls["url"], ls["legacy_token"], project) == IMAGES
    by_version: dict[str, set[int]] = {}
    for prediction in ls_client.predictions.list(project=project):
        by_version.setdefault(prediction.model_version, set()).add(prediction.task)
    assert by_version == {"tiny@base": {t.id for t in tasks}, new_version: {t.id for t in tasks}}

    # make stop: both processes end, their PID files go
    backend_pid, worker_pid = module.running_pid(paths, "backend"), module.running_pid(paths, "worker")
    assert backend_pid and worker_pid
    assert module.stop(paths) == ["worker", "backend"]
    assert not module._alive(backend_pid) and not module._alive(worker_pid)
    assert not paths.pid_file("backend").exists() and not paths.pid_file("worker").exists()
