"""`labelloop worker`: the RQ worker of the retraining loop, with RQ's scheduler.

It listens on ``Settings.queue_name`` at ``Settings.redis_url`` and runs the loop's jobs (decisions, trainings,
the periodic reconciliation) plus any other labelloop job on that queue. At start it marks runs whose worker
died as failed and makes sure the periodic reconciliation is scheduled. Each job runs in a forked work horse
(RQ's default), so the memory of an evaluation is returned when the job ends; torch, transformers and peft
are imported once before forking (``--preload``), so horses start warm. ``swift sft`` runs in its own process
group and dies with the horse. SIGTERM/SIGINT stop it after the current job (RQ's warm shutdown).
"""

from __future__ import annotations

import logging

import click

from ml_backend.settings import Settings

log = logging.getLogger(__name__)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the queued jobs, then exit (tests, cron).")
@click.option("--name", help="Worker name (default: RQ's host.pid).")
@click.option("--no-scheduler", is_flag=True, help="Do not run RQ's scheduler (another worker runs it).")
@click.option(
    "--preload/--no-preload",
    default=True,
    show_default=True,
    help="Import torch, transformers and peft before forking work horses, so an evaluation starts warm.",
)
@click.pass_obj
def worker(settings: Settings, burst: bool, name: str | None, no_scheduler: bool, preload: bool) -> None:
    """Run the RQ worker (and scheduler) for training, reconciliation and decisions."""
    import redis
    from rq import Queue, Worker

    if preload:
        _preload()

    from ml_backend.events import Loop
    from ml_backend.jobs.reconcile import schedule_reconcile
    from ml_backend.jobs.train import use_settings

    use_settings(settings)
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at LABELLOOP_REDIS_URL is unreachable: {exc}") from exc
    loop = Loop(settings, connection)
    reaped = loop.reap_stale_runs()
    if reaped:
        log.warning("worker: marked %s run(s) failed whose worker died: %s", len(reaped), ", ".join(reaped))
    if not no_scheduler:
        schedule_reconcile(loop)
    queue = Queue(settings.queue_name, connection=connection)
    click.echo(f"labelloop: worker on queue {settings.queue_name!r} (scheduler {'off' if no_scheduler else 'on'})",
               err=True)  # fmt: skip
    Worker([queue], connection=connection, name=name).work(
        burst=burst, with_scheduler=not no_scheduler, logging_level=settings.log_level
    )


def _preload() -> None:
    """Import the evaluation's heavy modules once in the worker, before any fork (they start no threads on
    import; each work horse then shares them copy-on-write instead of importing them for ~5-10 s). Without the
    training extra installed this does nothing."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers

        for name in ("AutoModelForImageTextToText", "AutoProcessor", "Qwen2VLForConditionalGeneration",
                     "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration"):  # fmt: skip
            getattr(transformers, name, None)
        import converters.export  # noqa: F401
        import ml_backend.engines.transformers
        import ml_backend.predictor  # noqa: F401
    except ImportError as exc:
        log.info("worker: not preloading the inference stack (%s)", exc)
