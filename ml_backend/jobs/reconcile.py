"""RQ jobs that keep the review counts true and decide when a project trains.

- ``decide(project, force)``: enqueued by the webhook (at most one queued per project) when a project may be
  due or was not reconciled for ``reconcile_after`` seconds, or when Label Studio's Train button sent
  START_TRAINING. It reconciles the project's count from the
  Label Studio API first — webhooks can be lost — then asks the trigger
  (:meth:`ml_backend.events.Loop.maybe_train`). If Label Studio cannot be read it decides on the count it has.
- ``reconcile_all()``: every ``reconcile_interval`` seconds, scheduled with RQ's scheduler (``labelloop worker``
  runs one): reaps runs whose worker died, reconciles every known project and lets each train if due, then
  schedules the next tick. Ticks sit on wall-clock multiples of the interval and have deterministic job ids
  (``<prefix>-reconcile-<slot>``, enqueued with ``unique=True``), so several workers schedule one tick, not many.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from ml_backend.events import Loop
from ml_backend.exceptions import LabelloopError
from ml_backend.jobs.train import job_settings
from ml_backend.reviews import reconcile_project

log = logging.getLogger(__name__)

RECONCILE_JOB = "ml_backend.jobs.reconcile.reconcile_all"


def decide(project: int, force: bool = False) -> dict[str, Any]:
    """Reconcile ``project`` from Label Studio, then start a training if it is due (or ``force``d).

    Returns:
        ``{"project", "pending", "started", "reason", "run"}`` (plus ``reconcile_error`` when LS was unreadable).

    Raises:
        redis.RedisError: Redis is unreachable (RQ records the failure; the next event or tick decides again).
    """
    settings = job_settings()
    loop = Loop.from_settings(settings, timeout=30.0)
    loop.redis.delete(loop.decide_key(project, force=force))  # events from now on may queue another decision
    out: dict[str, Any] = {"project": project, "force": force}
    try:
        result = reconcile_project(settings, loop.counter, project)
        loop.mark_reconciled(project)
        out["reconciled"] = {"before": result.before, "after": result.after, "reviewed": result.reviewed}
    except LabelloopError as exc:  # LS down or not configured: the count we have is the best we know
        log.warning("decide: project %s: deciding on the recorded count: %s", project, exc)
        out["reconcile_error"] = str(exc)
    trigger = loop.maybe_train(project, force=force)
    out.update(
        pending=loop.counter.pending(project), started=trigger.started, reason=trigger.reason, run=trigger.run_id
    )
    log.info("decide: project %s: %s", project, trigger.reason if not trigger.started else f"run {trigger.run_id}")
    return out


def reconcile_all() -> dict[str, Any]:
    """The periodic tick: reap dead runs, reconcile and decide every known project, schedule the next tick.

    A project whose reconciliation fails is logged and skipped; the next tick tries again.
    """
    settings = job_settings()
    loop = Loop.from_settings(settings, timeout=30.0)
    out: dict[str, Any] = {"reaped": [], "projects": {}}
    try:
        out["reaped"] = loop.reap_stale_runs()
        projects = loop.counter.projects() | set(loop.registry.projects())
        for project in sorted(projects):
            entry: dict[str, Any] = {}
            try:
                result = reconcile_project(settings, loop.counter, project)
                loop.mark_reconciled(project)
                entry["pending"] = result.after
                trigger = loop.maybe_train(project)
                entry.update(started=trigger.started, reason=trigger.reason, run=trigger.run_id)
            except LabelloopError as exc:
                entry["error"] = str(exc)
                log.warning("reconcile: project %s skipped: %s", project, exc)
            out["projects"][project] = entry
    finally:
        schedule_reconcile(loop)
    return out


def schedule_reconcile(loop: Loop, *, now: float | None = None) -> str | None:
    """Schedule the next tick at the next wall-clock multiple of ``reconcile_interval``; None if already there.

    Needs a worker running with the scheduler (``labelloop worker`` does) to fire.
    """
    from rq.exceptions import DuplicateJobError

    interval = loop.settings.reconcile_interval
    slot = int((time.time() if now is None else now) // interval) + 1
    job_id = f"{loop.prefix}-reconcile-{slot}"
    at = dt.datetime.fromtimestamp(slot * interval, tz=dt.UTC)
    try:
        loop.queue().enqueue_at(
            at,
            RECONCILE_JOB,
            job_id=job_id,
            unique=True,
            job_timeout=max(600, interval),
            result_ttl=interval * 3,
            failure_ttl=7 * 86400,
            description="labelloop: reconcile review counts and decide",
        )
    except DuplicateJobError:
        return None
    log.info("reconcile: next tick %s at %s", job_id, at.isoformat())
    return job_id
