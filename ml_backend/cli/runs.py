"""`labelloop runs list|show|cancel`: training runs, their progress, reports and cancellation."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from ml_backend.registry import Registry, RunStatus, TrainingRun
from ml_backend.settings import Settings


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _took(run: TrainingRun) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at or dt.datetime.now(tz=dt.UTC).timestamp()
    return f"{end - run.started_at:.0f} s"


@click.group("runs")
def runs() -> None:
    """Training runs: list, show, cancel."""


@runs.command("list")
@click.option("--project", type=int, help="Only this Label Studio project.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), multiple=True, help="Only these states.")
@click.option("--limit", type=int, default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def list_runs(settings: Settings, project: int | None, status: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    registry = Registry(settings.data_dir)
    found = registry.list_runs(project, statuses=[RunStatus(s) for s in status] or None, limit=limit)
    if as_json:
        for run in found:
            click.echo(json.dumps({"id": run.id, "project": run.project, "status": run.status.value,
                                   "trigger": run.trigger, "version": run.version_id, "error": run.error,
                                   "created_at": run.created_at, "finished_at": run.finished_at}))  # fmt: skip
        return
    if not found:
        click.echo("no runs yet")
        return
    click.echo(f"{'run':<10} {'project':>7}  {'status':<10} {'trigger':<9} {'version':<10} {'created':<19} {'took':>7}")
    for run in found:
        click.echo(
            f"{run.id:<10} {run.project:>7}  {run.status.value:<10} {run.trigger:<9} {run.version_id or '-':<10} "
            f"{_when(run.created_at):<19} {_took(run):>7}"
        )


@runs.command("show")
@click.argument("run_id")
@click.pass_obj
def show_run(settings: Settings, run_id: str) -> None:
    """Show one run: status and progress, dataset, evaluation, error and log tail, and its HTML report."""
    registry = Registry(settings.data_dir)
    run = registry.get_run(run_id)
    click.echo(f"run         {run.id}  (project {run.project}, {run.trigger})")
    click.echo(f"status      {run.status.value}" + (f"  attempt {run.attempts}" if run.attempts > 1 else ""))
    progress = _progress(settings, run)
    if progress:
        click.echo(f"progress    {progress}")
    click.echo(f"parent      {run.parent_version or 'base'}    version {run.version_id or '-'}")
    click.echo(f"created     {_when(run.created_at)}   started {_when(run.started_at)}   "
               f"finished {_when(run.finished_at)}   took {_took(run)}")  # fmt: skip
    if run.dataset_size is not None:
        click.echo(f"dataset     {run.dataset_size} rows, sha256 {run.dataset_hash}")
    metrics = run.metrics or {}
    candidate, current = metrics.get("candidate"), metrics.get("current")
    if isinstance(candidate, dict) and isinstance(current, dict):
        click.echo(f"evaluation  candidate {candidate['score']:.3f} vs current ({current['model']}) "
                   f"{current['score']:.3f} on {candidate['tasks']} held-out task(s)")  # fmt: skip
        for control in candidate.get("controls", []):
            other: dict[str, Any] = next(
                (c for c in current.get("controls", []) if c["control"] == control["control"]), {}
            )
            click.echo(f"            {control['control']} ({control['metric']}): {control['value']:.3f} vs "
                       f"{other.get('value', float('nan')):.3f}")  # fmt: skip
    if run.error:
        click.echo(f"{'gate' if run.status is RunStatus.REJECTED else 'error':<12}{run.error}")
    if run.log_tail and run.status in {RunStatus.FAILED, RunStatus.CANCELLED}:
        click.echo("log tail:")
        for line in run.log_tail.splitlines()[-15:]:
            click.echo(f"  {line}")
    report = run.report_path
    click.echo(f"run dir     {run.run_dir}")
    click.echo(f"report      {report.as_uri() if report.exists() else '(not written yet)'}")


def _progress(settings: Settings, run: TrainingRun) -> str | None:
    if run.status.is_terminal or not run.job_id:
        return None
    try:
        import redis
        from rq.job import Job

        job = Job.fetch(run.job_id, connection=redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0))
        meta = job.get_meta()
    except Exception:  # progress is a nicety: Redis away or the job expired
        return None
    parts = [str(meta.get("stage", run.status.value))]
    if meta.get("step") is not None:
        parts.append(f"step {meta['step']}/{meta.get('max_steps', '?')}")
    if meta.get("loss") is not None:
        parts.append(f"loss {meta['loss']:.4f}")
    return ", ".join(parts)


@runs.command("cancel")
@click.argument("run_id")
@click.pass_obj
def cancel_run(settings: Settings, run_id: str) -> None:
    """Cancel a queued or running run (the training's process group is killed within a second or two)."""
    from ml_backend.events import Loop

    outcome = Loop.from_settings(settings, timeout=5.0).cancel(run_id)
    messages = {
        "cancelled": f"run {run_id} cancelled",
        "cancelling": f"run {run_id}: cancel requested; the job stops within a few seconds "
        f"(`labelloop runs show {run_id}`)",
        "failed": f"run {run_id}: its worker was gone; marked failed",
    }
    click.echo(messages[outcome])
