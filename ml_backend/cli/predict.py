"""`labelloop predict --project ID`: pre-annotate a whole Label Studio project (an RQ job, or ``--inline``)."""

from __future__ import annotations

import time
from typing import Any

import click

from ml_backend.settings import Settings

JOB_TIMEOUT = 12 * 3600


def _bar(total: int | None) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock

    return tqdm(total=total, unit="task", desc="predicting", dynamic_ncols=True)


def _show(bar: Any, meta: dict[str, Any]) -> None:
    total = meta.get("total")
    if total is not None and bar.total != total:
        bar.total = total
    handled = int(meta.get("done", 0)) + int(meta.get("skipped", 0))
    bar.update(max(0, handled - bar.n))
    bar.set_postfix(written=meta.get("written", 0), skipped=meta.get("skipped", 0), failed=meta.get("failed", 0))


def _summary(meta: dict[str, Any]) -> str:
    return (f"project {meta.get('project')} ({meta.get('model_version')}): {meta.get('done', 0)} predicted, "
            f"{meta.get('written', 0)} written, {meta.get('skipped', 0)} already had this version, "
            f"{meta.get('failed', 0)} failed")  # fmt: skip


@click.command("predict")
@click.option("--project", "project_id", type=int, required=True, help="Label Studio project id.")
@click.option("--wait", is_flag=True, help="Enqueue, then follow the job's progress until it ends.")
@click.option("--inline", is_flag=True, help="Run in this process instead of on the RQ worker.")
@click.option("--chunk", type=click.IntRange(1, 500), default=64, show_default=True,
              help="Tasks predicted and written together.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1), help="Stop after this many tasks.")
@click.pass_obj
def predict(settings: Settings, *, project_id: int, wait: bool, inline: bool, chunk: int, limit: int | None) -> None:
    """Pre-annotate every task of a project that lacks a prediction of the current model version.

    Resumable: tasks that already have the current version are skipped, so running it again continues.
    Without --inline the job runs on `labelloop worker` (start one); progress is in the job's meta.
    """
    if inline:
        from ml_backend.jobs.predict import BulkProgress, run_bulk

        bar = _bar(None)

        def progress(state: BulkProgress) -> None:
            _show(bar, state.as_dict())

        try:
            state = run_bulk(settings, project_id, chunk=chunk, limit=limit, progress=progress)
        finally:
            bar.close()
        click.echo(_summary(state.as_dict()))
        for error in state.errors:
            click.echo(f"  {error}", err=True)
        return
    _enqueue(settings, project_id, chunk=chunk, limit=limit, wait=wait)


def _enqueue(settings: Settings, project_id: int, *, chunk: int, limit: int | None, wait: bool) -> None:
    import redis
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    from ml_backend.jobs.predict import job_id

    connection = redis.Redis.from_url(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at LABELLOOP_REDIS_URL is unreachable: {exc}") from exc
    identifier = job_id(project_id)
    try:
        job = Job.fetch(identifier, connection=connection)
        running = job.get_status() in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
    except NoSuchJobError:
        running = False
    if running:
        click.echo(f"labelloop: project {project_id} already has a bulk job ({identifier}); following it", err=True)
    else:
        queue = Queue(settings.queue_name, connection=connection)
        job = queue.enqueue(
            "ml_backend.jobs.predict.predict_project", project_id, chunk, limit,
            job_id=identifier, job_timeout=JOB_TIMEOUT, result_ttl=7 * 24 * 3600, failure_ttl=7 * 24 * 3600,
            description=f"pre-annotate Label Studio project {project_id}",
        )  # fmt: skip
        click.echo(f"labelloop: enqueued {identifier} on queue {settings.queue_name!r}", err=True)
    if not wait:
        return
    bar = _bar(None)
    try:
        while True:
            job.refresh()
            _show(bar, job.meta)
            status = job.get_status()
            if status == JobStatus.FINISHED:
                break
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                latest = job.latest_result()
                reason = latest.exc_string.strip().splitlines()[-1] if latest and latest.exc_string else status
                raise click.ClickException(f"bulk job {identifier} {status}: {reason}")
            time.sleep(0.5)
    finally:
        bar.close()
    click.echo(_summary(job.meta))
