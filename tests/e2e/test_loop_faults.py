"""Faults of the loop with a real Label Studio, Redis, `labelloop worker` and `swift sft` on the tiny model:

- `labelloop runs cancel` during training: the run is cancelled, `swift sft` stopped, its reviews count again;
- the worker killed with SIGKILL mid-training: the run is marked failed, `swift sft` dies with it, nothing is
  promoted, and the next trigger trains;
- `swift sft` failing: the run is failed with the tail of its log in the registry, its reviews count again;
- Redis down: `/webhook` answers 503 at once, and when Redis is back (empty) the periodic reconciliation run by
  RQ's scheduler recovers the count from the Label Studio API.

(Label Studio down during the export, retried by RQ's Retry policy, is in tests/test_jobs_train.py: "down" is a
port nothing listens on, no Label Studio needed.)
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from label_studio_sdk import LabelStudio
from loop_fixtures import (
    PYTHON,
    LoopSystem,
    colour_project,
    colour_result,
    restart_redis,
    settings_env,
    throwaway_redis,
    wait_for,
)
from rq.job import Job

from ml_backend.events import Loop
from ml_backend.registry import RunStatus
from ml_backend.settings import Settings
from ml_backend.studio import LocalLabelStudio

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def make_system(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    label_studio: LocalLabelStudio,
    tiny_model: Callable[..., Path],
) -> Iterator[Callable[..., LoopSystem]]:
    systems: list[LoopSystem] = []

    def make(**extra: Any) -> LoopSystem:
        overrides: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"), "redis_url": make_settings().redis_url, "queue_name": "loop-faults",
            "ls_url": label_studio.url, "ls_api_key": label_studio.legacy_token,
            "model": str(tiny_model("qwen2_vl")), "model_family": "qwen2_vl", "device": "cpu",
            "torch_dtype": "float32", "min_new_reviews": 1000, "cooldown_seconds": 0, "max_pixels": 50176,
            "gradient_checkpointing": False, "max_steps": 3, "train_batch_size": 1, "heartbeat_ttl": 3,
            "train_retries": 0, "swap_poll_interval": 1.0, "val_fraction": 0.3, "near_dup_distance": -1, **extra,
        }  # fmt: skip
        system = LoopSystem(make_settings(**overrides), settings_env(overrides), tmp_path)
        systems.append(system.start_backend())
        return system

    yield make
    for system in systems:
        system.stop()


@pytest.mark.slow
@pytest.mark.swift
def test_cancel_and_a_worker_killed_mid_training_leave_nothing_and_the_next_trigger_trains(
    make_system: Callable[..., LoopSystem], redis_client: redis.Redis, label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
) -> None:  # fmt: skip
    system = make_system(max_steps=100000)
    system.start_worker()
    project = colour_project(ls_client, label_studio.files_root, annotated=12, backend_url=system.backend_url)
    registry = system.registry
    loop = Loop(system.settings, redis_client)

    # First, `labelloop runs cancel` on a training under way: its process group is killed, nothing is kept.
    ls_client.ml.train(id=project.ml_id)  # the Train button
    cancelled = wait_for(lambda: next(iter(registry.list_runs(project.id)), None), "a run", diagnose=system.worker_log)
    wait_for((Path(cancelled.run_dir) / "swift" / "logging.jsonl").exists, "training to be under way",
             diagnose=system.worker_log)  # fmt: skip
    pid = int(Job.fetch(registry.get_run(cancelled.id).job_id or "", connection=redis_client).get_meta()["pid"])
    cli = subprocess.run([str(PYTHON), "-m", "ml_backend.cli", "runs", "cancel", cancelled.id],
                         env={**os.environ, **system.env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert cli.returncode == 0 and "cancel requested" in cli.stdout, cli.stderr
    wait_for(lambda: registry.get_run(cancelled.id).status is RunStatus.CANCELLED, "the cancel",
             diagnose=system.worker_log)  # fmt: skip
    wait_for(lambda: not _alive(pid), "swift sft to be stopped", timeout=60)
    assert registry.get_run(cancelled.id).version_id is None
    assert loop.counter.pending(project.id) == 12  # its reviews count again
    wait_for(lambda: not redis_client.exists(loop.lock_key(project.id)), "the job to free the project", timeout=60)

    # Then the worker is killed with SIGKILL in the middle of the next training.
    ls_client.ml.train(id=project.ml_id)
    run = wait_for(lambda: next((r for r in registry.list_runs(project.id) if r.id != cancelled.id), None), "a run",
                   diagnose=system.worker_log)  # fmt: skip
    wait_for((Path(run.run_dir) / "swift" / "logging.jsonl").exists, "training to be under way",
             diagnose=system.worker_log)  # fmt: skip
    swift_pid = int(Job.fetch(registry.get_run(run.id).job_id or "", connection=redis_client).get_meta()["pid"])
    assert _alive(swift_pid)

    assert swift_pid in system.worker_tree()
    # SIGKILL to the worker, its work horse (its own process group) and its scheduler, not to `swift sft`:
    # that one must die on its own when the process that started it is gone.
    system.kill_worker_tree(spare={swift_pid})
    wait_for(lambda: not _alive(swift_pid), "swift sft to die with its worker", timeout=60)
    wait_for(lambda: not loop.is_alive(run.id), "the run's heartbeat to expire", timeout=60)
    assert registry.get_run(run.id).status is RunStatus.TRAINING  # nobody has looked yet

    system.start_worker(max_steps=3)  # restarted by its supervisor
    ls_client.ml.train(id=project.ml_id)  # the next trigger
    second = wait_for(
        lambda: next((r for r in registry.list_runs(project.id) if r.id not in {run.id, cancelled.id}
                      and r.status.is_terminal), None),
        "the next training", diagnose=system.worker_log,
    )  # fmt: skip
    dead = registry.get_run(run.id)
    assert dead.status is RunStatus.FAILED
    assert (dead.error or "").startswith("worker lost during training: no heartbeat for 3 s")
    assert dead.version_id is None  # no partial adapter was recorded, let alone promoted
    assert second.status in {RunStatus.PROMOTED, RunStatus.REJECTED}, (second.error, system.worker_log())
    assert second.version_id is not None  # it trained, was evaluated and gated
    adapters = sorted(p.name for p in (system.settings.data_dir / "adapters").iterdir())
    assert adapters == [second.version_id]
    active = registry.active(project.id)
    assert active is None or active.id == second.version_id


@pytest.mark.slow
@pytest.mark.swift
def test_a_failing_swift_sft_fails_the_run_with_the_tail_of_its_log(
    make_system: Callable[..., LoopSystem], redis_client: redis.Redis, label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
) -> None:  # fmt: skip
    system = make_system(swift_extra_args="--no_such_flag 1")
    system.start_worker()
    project = colour_project(ls_client, label_studio.files_root, annotated=8, backend_url=system.backend_url)
    ls_client.ml.train(id=project.ml_id)
    registry = system.registry
    run = wait_for(
        lambda: next((r for r in registry.list_runs(project.id) if r.status.is_terminal), None),
        "the run to end", diagnose=system.worker_log,
    )  # fmt: skip
    assert run.status is RunStatus.FAILED
    assert (run.error or "").startswith("swift sft exited with code")
    assert "no_such_flag" in (run.log_tail or "")
    assert registry.list_versions(project.id) == []
    assert registry.active(project.id) is None
    assert Loop(system.settings, redis_client).counter.pending(project.id) == 8  # its reviews count again
    wait_for(run.report_path.exists, "the run's report")
    assert "no_such_flag" in run.report_path.read_text()


def test_redis_down_answers_503_and_the_scheduled_reconciliation_recovers_the_count(
    make_system: Callable[..., LoopSystem], label_studio: LocalLabelStudio, ls_client: LabelStudio
) -> None:
    with throwaway_redis() as (url, redis_proc):
        system = make_system(redis_url=url, reconcile_interval=10)
        system.start_worker()
        project = colour_project(ls_client, label_studio.files_root, annotated=5, unannotated=3,
                                 backend_url=system.backend_url)  # fmt: skip
        live = [task for image, task in project.tasks.items() if image not in list(project.truth)[:5]]
        colour = dict(zip(project.tasks.values(), project.truth.values(), strict=True))
        ls_client.annotations.create(id=live[0], result=colour_result(colour[live[0]]))  # webhook: recorded
        loop = Loop(system.settings, redis.Redis.from_url(url))
        assert loop.counter.pending(project.id) == 1

        system.kill_worker(signal.SIGTERM)
        redis_proc.kill()
        redis_proc.wait()
        for task in live[1:]:  # Label Studio stores them; their webhooks get 503 and are lost
            ls_client.annotations.create(id=task, result=colour_result(colour[task]))
        payload = {"action": "ANNOTATION_CREATED", "project": {"id": project.id}, "annotation": {"id": 1}}
        down = httpx.post(f"{system.backend_url}/webhook", json=payload)
        assert down.status_code == 503 and "Redis is unavailable" in down.json()["error"]

        back = restart_redis(url)  # empty: this Redis keeps nothing on disk
        try:
            assert loop.counter.pending(project.id) == 0
            system.start_worker()  # restarted by its supervisor; schedules the reconciliation tick
            wait_for(lambda: loop.counter.pending(project.id) == 8, "the reconciliation to recover the count",
                     timeout=120, diagnose=system.worker_log)  # fmt: skip
        finally:
            system.kill_worker(signal.SIGTERM)
            back.kill()
            back.wait()
    assert system.registry.projects() == [project.id]  # remembered durably, so Redis' loss did not forget it
