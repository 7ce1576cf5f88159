"""The loop end to end, on CPU: real Label Studio annotations -> webhook -> `labelloop worker` -> export ->
ms-swift LoRA -> evaluation -> gate -> promotion -> hot swap in the running backend -> new predictions in LS.

The task is one the 9.9 M-parameter random Qwen2-VL can learn from scratch: "What colour is the square?" as a
Choices control over generated images. Most annotations are imported in bulk (Label Studio sends no annotation
webhook for those); the last ones are created one by one, and the first of their webhooks has the worker
reconcile the project from the Label Studio API, which finds the imported reviews and starts the training.
The candidate goes from chance to >= 0.9 on the held-out reviewed tasks and the backend serves it. Then the
training tasks are re-labelled with shuffled colours and the Train button is pressed: that candidate is refused
by the gate and the good version keeps serving.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from label_studio_sdk import LabelStudio
from loop_fixtures import (
    COLOUR_CONFIG,
    ColourImage,
    LoopSystem,
    colour_images,
    colour_result,
    settings_env,
    wait_for,
)

from ml_backend.registry import RunStatus
from ml_backend.settings import Settings
from ml_backend.studio import LocalLabelStudio

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.swift]

N_IMPORTED = 440  # annotated in bulk (10 of them rejected by the reviewer, with a wrong colour)
N_ANNOTATED_LIVE = 20  # annotated through the SDK: their webhooks cross min_new_reviews
LEARNING = {
    "max_steps": 150, "epochs": 100.0, "learning_rate": 5e-3, "train_batch_size": 8, "grad_accum": 1,
    "lora_rank": 16, "lora_alpha": 32, "modules_to_save": ["lm_head", "embed_tokens"],
}  # fmt: skip


@pytest.fixture
def system(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    label_studio: LocalLabelStudio,
    tiny_model: Callable[..., Path],
) -> Iterator[LoopSystem]:
    overrides: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"), "redis_url": make_settings().redis_url, "queue_name": "loop-e2e",
        "ls_url": label_studio.url, "ls_api_key": label_studio.legacy_token, "model": str(tiny_model("qwen2_vl")),
        "model_family": "qwen2_vl", "device": "cpu", "torch_dtype": "float32", "min_new_reviews": N_ANNOTATED_LIVE,
        "cooldown_seconds": 0, "val_fraction": 0.1, "eval_max_tasks": 40, "max_pixels": 50176,
        "near_dup_distance": -1,  # plain squares on white are near-duplicates to a perceptual hash
        "gradient_checkpointing": False, "train_logging_steps": 10, "swap_poll_interval": 1.0, "batch_size": 16,
        "log_level": "INFO", **LEARNING,
    }  # fmt: skip
    loop = LoopSystem(make_settings(**overrides), settings_env(overrides), tmp_path)
    loop.start_backend()
    loop.start_worker()
    try:
        yield loop
    finally:
        loop.stop()


def _url(label_studio: LocalLabelStudio, image: ColourImage) -> str:
    return "/data/local-files/?d=" + str(image.path.relative_to(label_studio.files_root))


def _served(ls_client: LabelStudio, project: int, task_ids: list[int]) -> dict[int, Any]:
    """Ask LS to fetch predictions for ``task_ids`` from the backend; the newest prediction of each task."""
    ls_client.actions.create(
        id="retrieve_tasks_predictions", project=project, selected_items={"all": False, "included": task_ids}
    )
    newest: dict[int, Any] = {}
    for prediction in ls_client.predictions.list(project=project):
        if prediction.task in task_ids and (
            prediction.task not in newest or prediction.id > newest[prediction.task].id
        ):
            newest[prediction.task] = prediction
    return newest


def _choice(prediction: Any) -> str | None:
    for region in prediction.result or []:
        if region.get("from_name") == "colour":
            return str(region["value"]["choices"][0])
    return None


def test_reviews_train_a_better_model_that_is_served_and_a_bad_one_is_refused(
    system: LoopSystem, label_studio: LocalLabelStudio, ls_client: LabelStudio, tmp_path: Path
) -> None:
    project = ls_client.projects.create(title="colour loop", label_config=COLOUR_CONFIG)
    pid = int(project.id)
    images = colour_images(label_studio.files_root / f"colour-{pid}", N_IMPORTED + N_ANNOTATED_LIVE, seed=2)
    truth = {_url(label_studio, im): im.colour for im in images}
    ls_client.import_storage.local.create(
        project=pid, path=str(images[0].path.parent), regex_filter=r".*\.png", use_blob_urls=True
    )
    ml = ls_client.ml.create(project=pid, url=system.backend_url, title="labelloop")
    base_version = system.app.extensions["labelloop"].holder.model_version(pid)
    assert base_version.endswith("@base")

    rng = random.Random(7)
    colours = sorted({im.colour for im in images})
    bulk = []
    for i, im in enumerate(images[:N_IMPORTED]):
        rejected = i % 44 == 0  # 10 reviews said "reject", with a wrong colour: never counted nor trained on
        colour = rng.choice([c for c in colours if c != im.colour]) if rejected else im.colour
        verdict = "reject" if rejected else "accept"
        bulk.append(
            {"data": {"image": _url(label_studio, im)}, "annotations": [{"result": colour_result(colour, verdict)}]}
        )
    bulk += [{"data": {"image": _url(label_studio, im)}} for im in images[N_IMPORTED:]]
    ls_client.projects.import_tasks(id=pid, request=bulk)
    tasks = {t.data["image"]: int(t.id) for t in ls_client.tasks.list(project=pid, page_size=1000)}
    live = [tasks[_url(label_studio, im)] for im in images[N_IMPORTED:]]

    before = _served(ls_client, pid, live)
    assert {p.model_version for p in before.values()} == {base_version}

    for im, task_id in zip(images[N_IMPORTED:], live, strict=True):
        ls_client.annotations.create(id=task_id, result=colour_result(im.colour))

    registry = system.registry
    first = wait_for(
        lambda: next((r for r in registry.list_runs(pid) if r.status.is_terminal), None),
        "the first training to finish", timeout=900, diagnose=system.worker_log,
    )  # fmt: skip
    assert first.status is RunStatus.PROMOTED, (first.error, first.log_tail, system.worker_log())
    assert first.trigger == "threshold"
    # The bulk import sent no annotation webhook: the first live event had the project reconciled from the API.
    assert first.reviews is not None and first.reviews >= N_IMPORTED - 10
    candidate, current = first.metrics["candidate"], first.metrics["current"]
    print(f"held-out accuracy: base {current['score']:.3f} -> candidate {candidate['score']:.3f} on "
          f"{candidate['tasks']} tasks")  # fmt: skip
    assert current["model"] == "base" and current["score"] <= 0.5
    assert candidate["score"] >= 0.9
    assert candidate["tasks"] >= 30  # the first 40 held-out tasks (eval_max_tasks)
    version = registry.active(pid)
    assert version is not None and version.id == first.version_id
    wait_for(first.report_path.exists, "the run's report", timeout=60)
    assert "loss curve" in first.report_path.read_text()

    new_version = f"{base_version.split('@')[0]}@{version.id}"
    holder = system.app.extensions["labelloop"].holder
    wait_for(lambda: holder.model_version(pid) == new_version, "the backend to swap to the new version", timeout=60)
    setup = httpx.post(f"{system.backend_url}/setup", json={"project": f"{pid}.1", "schema": COLOUR_CONFIG})
    assert setup.json() == {"model_version": new_version}

    export_dir = Path(first.run_dir) / "export"
    val_ids = [json.loads(line)["labelloop"]["task_id"] for line in (export_dir / "val.jsonl").open()][:40]
    served = _served(ls_client, pid, val_ids)
    assert {p.model_version for p in served.values()} == {new_version}
    by_id = {task_id: url for url, task_id in tasks.items()}
    right = sum(_choice(served[t]) == truth[by_id[t]] for t in val_ids)
    print(f"served held-out accuracy {right}/{len(val_ids)}")
    assert right / len(val_ids) >= 0.9

    # Re-label the training tasks with shuffled colours; the held-out tasks keep their true labels.
    train_ids = sorted({json.loads(line)["labelloop"]["task_id"] for line in (export_dir / "train.jsonl").open()})
    train_urls = [by_id[t] for t in train_ids]
    shuffled = [truth[u] for u in train_urls]
    random.Random(3).shuffle(shuffled)
    ls_client.actions.create(id="delete_tasks", project=pid, selected_items={"all": False, "included": train_ids})
    relabelled = [
        {"data": {"image": url}, "annotations": [{"result": colour_result(colour)}]}
        for url, colour in zip(train_urls, shuffled, strict=True)
    ]
    ls_client.projects.import_tasks(id=pid, request=relabelled)
    ls_client.ml.train(id=ml.id)  # the Train button: START_TRAINING
    second = wait_for(
        lambda: next((r for r in registry.list_runs(pid) if r.id != first.id and r.status.is_terminal), None),
        "the shuffled-label training to finish", timeout=900, diagnose=system.worker_log,
    )  # fmt: skip
    assert second.trigger == "manual"
    assert second.status is RunStatus.REJECTED, (second.error, system.worker_log())
    assert second.error is not None and second.error.startswith("candidate ")
    print(f"shuffled-label candidate refused: {second.error}")
    assert second.metrics["current"]["model"] == version.id
    assert registry.active(pid).id == version.id  # type: ignore[union-attr]
    assert holder.model_version(pid) == new_version
    assert {p.model_version for p in _served(ls_client, pid, val_ids[:5]).values()} == {new_version}
