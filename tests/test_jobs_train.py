"""The loop's RQ jobs with a real Redis and real RQ workers (no Label Studio here: the e2e tests have one).

Label Studio "down" is a port nothing listens on; the training job must fail its export with that reason and
be retried by RQ's Retry policy, then fail for good, giving its reviews back and freeing the project.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner
from loop_fixtures import free_port
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from ml_backend.cli import cli
from ml_backend.events import Loop
from ml_backend.jobs.reconcile import reconcile_all, schedule_reconcile
from ml_backend.jobs.train import train_run, use_settings
from ml_backend.registry import RunStatus
from ml_backend.settings import Settings


@pytest.fixture
def ls_down(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(
        ls_url=f"http://127.0.0.1:{free_port()}",
        ls_api_key="0123456789abcdef0123456789abcdef01234567",
        queue_name="loop-jobs",
        min_new_reviews=2,
        cooldown_seconds=0,
        train_retries=2,
        retry_delay=0,
    )
    use_settings(settings)
    return settings


def test_label_studio_down_during_export_is_retried_then_failed_with_the_reason(
    ls_down: Settings, redis_client: redis.Redis
) -> None:
    loop = Loop(ls_down, redis_client)
    for aid in (1, 2, 3):
        loop.counter.record(4, aid, reviewed=True)
    run_id = loop.maybe_train(4).run_id or ""
    queue = Queue("loop-jobs", connection=redis_client)
    SimpleWorker([queue], connection=redis_client).work(burst=True)
    run = loop.registry.get_run(run_id)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 3  # the first try and RQ's two retries
    assert run.error is not None
    assert run.error.startswith("export: Label Studio project 4: cannot read the project: ConnectError")
    job = Job.fetch(run.job_id or "", connection=redis_client)
    assert job.get_status() == JobStatus.FAILED
    assert job.retries_left == 0
    assert loop.counter.pending(4) == 3  # its reviews count again
    assert not redis_client.exists(loop.lock_key(4))  # and the project can train again
    assert loop.registry.active(4) is None
    assert run.report_path.exists()  # a report, saying why
    assert "cannot read the project" in run.report_path.read_text()


def test_a_retrying_run_keeps_its_project_locked(ls_down: Settings, redis_client: redis.Redis) -> None:
    settings = ls_down.model_copy(update={"retry_delay": 3600})
    use_settings(settings)
    loop = Loop(settings, redis_client)
    run_id = loop.maybe_train(4, force=True).run_id or ""
    SimpleWorker([Queue("loop-jobs", connection=redis_client)], connection=redis_client).work(burst=True)
    run = loop.registry.get_run(run_id)
    assert run.status is RunStatus.RETRYING
    assert "(attempt 1; RQ retries in 3600 s)" in (run.error or "")
    assert Job.fetch(run.job_id or "", connection=redis_client).get_status() == JobStatus.SCHEDULED
    assert loop.maybe_train(4, force=True).reason == f"run {run_id} is in flight"
    assert loop.cancel(run_id) == "cancelled"
    assert loop.maybe_train(4, force=True).started


def test_a_job_for_a_finished_run_does_nothing(ls_down: Settings, redis_client: redis.Redis) -> None:
    loop = Loop(ls_down, redis_client)
    run_id = loop.maybe_train(4, force=True).run_id or ""
    loop.registry.update_run(run_id, status=RunStatus.CANCELLED)
    assert train_run(run_id) == {"run": run_id, "status": "cancelled", "skipped": True}


def test_the_periodic_tick_reconciles_known_projects_and_schedules_the_next(
    ls_down: Settings, redis_client: redis.Redis
) -> None:
    loop = Loop(ls_down, redis_client)
    loop.counter.add_project(4)
    out = reconcile_all()
    assert out["projects"][4]["error"].startswith("Label Studio at http://127.0.0.1:")
    scheduled = ScheduledJobRegistry(queue=Queue("loop-jobs", connection=redis_client)).get_job_ids()
    assert len(scheduled) == 1 and scheduled[0].startswith("labelloop-reconcile-")
    assert schedule_reconcile(loop) is None  # one tick per slot, however many workers ask


def test_labelloop_worker_runs_the_queue_and_schedules_the_reconciliation(
    ls_down: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"LABELLOOP_REDIS_URL": ls_down.redis_url, "LABELLOOP_DATA_DIR": str(ls_down.data_dir),
           "LABELLOOP_QUEUE_NAME": "loop-jobs", "LABELLOOP_LS_URL": ls_down.ls_url or ""}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    Loop(ls_down, redis_client).request_decision(4, force=True)
    result = CliRunner().invoke(cli, ["worker", "--burst"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "worker on queue 'loop-jobs'" in result.output
    scheduled = ScheduledJobRegistry(queue=Queue("loop-jobs", connection=redis_client)).get_job_ids()
    assert any(job_id.startswith("labelloop-reconcile-") for job_id in scheduled)
    from ml_backend.registry import Registry

    [run] = Registry(ls_down.data_dir).list_runs(4)  # the forced decision started one training
    assert run.trigger == "manual"
