"""`labelloop models list|show|rollback` and `labelloop runs list|show|cancel` on a real registry and Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from test_registry import trained_version

from ml_backend.cli import main
from ml_backend.events import Loop
from ml_backend.registry import Registry, RunStatus
from ml_backend.run_report import write_report
from ml_backend.settings import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = make_settings(queue_name="loop-cli")
    monkeypatch.setenv("LABELLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("LABELLOOP_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("LABELLOOP_QUEUE_NAME", "loop-cli")
    return settings


def labelloop(*args: str) -> tuple[int, str]:
    from ml_backend.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_models_list_show_and_rollback(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> None:
    registry = Registry(settings.data_dir)
    v1 = trained_version(registry, tmp_path, project=3, name="a")
    registry.promote(v1, metrics={"candidate": {"score": 0.5}, "gate": {"reason": "candidate 0.500 >= current"}})
    v2 = trained_version(registry, tmp_path, project=3, name="b")
    registry.promote(v2, metrics={"candidate": {"score": 0.9}})

    code, out = labelloop("models", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith(f"* {v2}") and "0.900" in lines[1] and v1 in lines[1]
    assert lines[2].startswith(f"  {v1}") and "promoted" in lines[2]

    code, out = labelloop("models", "show", v1)
    assert code == 0 and f"version     {v1}\n" in out and "gate        candidate 0.500 >= current" in out

    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("labelloop:events")
    assert pubsub.get_message(timeout=2) is None  # reads the subscription's confirmation
    code, out = labelloop("models", "rollback", "--project", "3")
    assert (code, out.strip()) == (0, f"project 3 now serves {v1}; backends notified")
    assert registry.active(3).id == v1  # type: ignore[union-attr]
    message = pubsub.get_message(timeout=2)
    assert message is not None and json.loads(message["data"])["version"] == v1

    code, out = labelloop("models", "rollback", "base", "--project", "3")
    assert code == 0 and "now serves base" in out
    code, out = labelloop("models", "rollback", v2)
    assert code == 0 and registry.active(3).id == v2  # type: ignore[union-attr]

    listed = [json.loads(line) for line in labelloop("models", "list", "--json")[1].splitlines()]
    assert {(row["id"], row["active"]) for row in listed} == {(v1, False), (v2, True)}


def test_user_errors_are_one_line_with_exit_code_2(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "show", "p1-v9"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "labelloop: error: version 'p1-v9': no such version (see `labelloop models list`)"
    )
    with pytest.raises(SystemExit) as info:
        main(["models", "rollback", "--project", "1"])
    assert info.value.code == 2
    assert "project 1: serves the base model; nothing to roll back" in capsys.readouterr().err


def test_runs_list_show_and_cancel(
    settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = Loop(settings, redis_client)
    queued = loop.maybe_train(5, force=True).run_id or ""
    registry = Registry(settings.data_dir)
    failed = registry.create_run(6, trigger="threshold", base_model="tiny")
    registry.update_run(failed.id, status=RunStatus.FAILED, error="swift sft exited with code 1 after 9 s",
                        log_tail="Traceback ...\nValueError: bad row")  # fmt: skip
    write_report(registry, registry.get_run(failed.id))

    code, out = labelloop("runs", "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == [failed.id, queued]

    code, out = labelloop("runs", "show", failed.id)
    assert code == 0
    assert "error       swift sft exited with code 1 after 9 s" in out
    assert "  ValueError: bad row" in out
    assert f"report      file://{registry.runs_dir / failed.id / 'report.html'}" in out

    code, out = labelloop("runs", "cancel", queued)
    assert (code, out.strip()) == (0, f"run {queued} cancelled")
    assert registry.get_run(queued).status is RunStatus.CANCELLED
    with pytest.raises(SystemExit) as info:
        main(["runs", "cancel", queued])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == f"labelloop: error: run {queued}: already cancelled; nothing to cancel"
