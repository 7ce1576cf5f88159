"""`labelloop models list|show|rollback`: the adapter versions of each project and which one it serves.

Rollback moves the registry's pointer (instant: the previous adapter is still on disk) and tells the running
backends on Redis; a backend that misses the message picks the change up at its next registry poll. If Redis is
down the rollback still happens and the command says the backends will follow within ``swap_poll_interval``.
"""

from __future__ import annotations

import datetime as dt
import json

import click

from ml_backend.registry import ModelVersion, Registry
from ml_backend.settings import Settings


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _score(version: ModelVersion) -> str:
    candidate = version.metrics.get("candidate") if isinstance(version.metrics, dict) else None
    return f"{candidate['score']:.3f}" if isinstance(candidate, dict) and "score" in candidate else "-"


@click.group("models")
def models() -> None:
    """Adapter versions per project: list, show, roll back."""


@models.command("list")
@click.option("--project", type=int, help="Only this Label Studio project.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def list_models(settings: Settings, project: int | None, as_json: bool) -> None:
    """List versions, newest first; `*` marks the one each project serves."""
    registry = Registry(settings.data_dir)
    active = {v.id for v in registry.active_map().values()}
    versions = registry.list_versions(project)
    if as_json:
        for v in versions:
            row = {"id": v.id, "project": v.project, "status": v.status.value, "active": v.id in active,
                   "parent": v.parent, "on_disk": v.is_on_disk, "created_at": v.created_at}  # fmt: skip
            click.echo(json.dumps(row))
        return
    if not versions:
        click.echo("no versions yet" + (f" for project {project}" if project is not None else ""))
        return
    click.echo(f"  {'version':<12} {'project':>7}  {'status':<10} {'score':>6}  {'parent':<12} {'created':<16} disk")
    for v in versions:
        mark = "*" if v.id in active else " "
        click.echo(
            f"{mark} {v.id:<12} {v.project:>7}  {v.status.value:<10} {_score(v):>6}  {v.parent or 'base':<12} "
            f"{_when(v.created_at):<16} {'yes' if v.is_on_disk else 'pruned'}"
        )


@models.command("show")
@click.argument("version")
@click.pass_obj
def show_model(settings: Settings, version: str) -> None:
    """Show one version: lineage, adapter, dataset, arguments, evaluation."""
    registry = Registry(settings.data_dir)
    v = registry.get_version(version)
    active = registry.active(v.project)
    click.echo(f"version     {v.id}{'  (active)' if active and active.id == v.id else ''}")
    click.echo(f"project     {v.project}")
    click.echo(f"status      {v.status.value}")
    click.echo(f"parent      {v.parent or 'base'}")
    click.echo(f"base model  {v.base_model}")
    click.echo(f"adapter     {v.adapter_path}{'' if v.is_on_disk else '  (pruned)'}")
    click.echo(f"run         {v.run_id or '-'}")
    click.echo(f"dataset     {v.dataset_size or 0} rows, sha256 {v.dataset_hash or '-'}")
    click.echo(f"created     {_when(v.created_at)}   promoted {_when(v.promoted_at)}")
    gate = v.metrics.get("gate") if isinstance(v.metrics, dict) else None
    if isinstance(gate, dict):
        click.echo(f"gate        {gate.get('reason')}")
    click.echo("args        " + json.dumps(v.args, sort_keys=True))


@models.command("rollback")
@click.argument("version", required=False)
@click.option("--project", type=int, help="The project (needed without VERSION).")
@click.pass_obj
def rollback(settings: Settings, version: str | None, project: int | None) -> None:
    """Serve an earlier version: VERSION, `base`, or (without it) the active version's parent."""
    import redis

    from ml_backend.events import Loop

    registry = Registry(settings.data_dir)
    if project is None:
        if version is None or version == "base":
            raise click.UsageError("give --project (rolling back to the parent or to base needs the project)")
        project = registry.get_version(version).project
    target = registry.rollback(project, version)
    shown = target.id if target else "base"
    try:
        Loop.from_settings(settings, timeout=2.0, fail_fast=True).publish_activation(
            project, target.id if target else None
        )
        click.echo(f"project {project} now serves {shown}; backends notified")
    except redis.RedisError:
        click.echo(f"project {project} now serves {shown}; Redis is unreachable, backends follow within "
                   f"{settings.swap_poll_interval:g} s")  # fmt: skip
