"""Webhook events into the loop: parsing, idempotent recording, the trigger (threshold, cool-down, single flight,
forced), dead runs, cancel, and the /webhook endpoint — against a real Redis and real RQ workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from flask import Flask
from loop_fixtures import restart_redis, throwaway_redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from werkzeug.serving import make_server

from ml_backend.app import create_app
from ml_backend.events import DECIDE_JOB, TRAIN_JOB, EventError, Loop, parse_event
from ml_backend.jobs.train import use_settings
from ml_backend.registry import RegistryError, RunStatus
from ml_backend.settings import Settings

CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="colour" toName="image"><Choice value="red"/><Choice value="blue"/></Choices>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices></View>"""


def event(aid: int, *, project: int = 3, verdict: str = "accept", action: str = "ANNOTATION_CREATED") -> dict:
    result = [
        {"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": ["red"]}},
        {"from_name": "review", "to_name": "image", "type": "choices", "value": {"choices": [verdict]}},
    ]
    return {
        "action": action,
        "annotation": {"id": aid, "task": aid, "project": project, "result": result, "was_cancelled": False},
        "task": {"id": aid, "data": {"image": "/data/upload/x.png"}},
        "project": {"id": project, "title": "t", "label_config": CONFIG},
    }


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        min_new_reviews=5, cooldown_seconds=0, train_retries=0, queue_name="loop-test", reconcile_after=0
    )


@pytest.fixture
def loop(settings: Settings, redis_client: redis.Redis) -> Loop:
    use_settings(settings)
    return Loop(settings, redis_client)


def jobs(client: redis.Redis, name: str, func: str) -> list[Job]:
    queue = Queue(name, connection=client)
    return [job for job in queue.jobs if job.func_name == func]


# --- parsing --------------------------------------------------------------------------------------------------


def test_an_annotation_event_parses_to_its_project_config_and_annotation() -> None:
    parsed = parse_event(event(9))
    assert (parsed.action, parsed.project, parsed.label_config) == ("ANNOTATION_CREATED", 3, CONFIG)
    assert [a["id"] for a in parsed.annotations] == [9]
    bulk = parse_event({"action": "ANNOTATIONS_CREATED", "project": {"id": 3},
                        "annotation": [event(1)["annotation"], event(2)["annotation"]]})  # fmt: skip
    assert [a["id"] for a in bulk.annotations] == [1, 2]
    deleted = parse_event({"action": "ANNOTATIONS_DELETED", "project": {"id": 3}, "annotations": [{"id": 4}]})
    assert deleted.deleted_ids == (4,)
    assert parse_event({"action": "START_TRAINING", "project": {"id": 3}}).project == 3
    assert parse_event({"action": "TASKS_CREATED", "tasks": []}).project is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "webhook: expected a JSON object, got list"),
        ({"project": {"id": 1}}, "webhook: 'action' must be a non-empty string, got None"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {"task": 1}},
         "webhook ANNOTATION_CREATED: 'annotation' must be an object with an id"),
        ({"action": "START_TRAINING"}, "webhook START_TRAINING: 'project' must carry the project id, got None"),
        ({"action": "START_TRAINING", "project": {"id": "x"}}, "webhook: project.id must be an integer id, got 'x'"),
        ({"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": 3},
         "webhook ANNOTATIONS_DELETED: 'annotations' must be a list, got 3"),
    ],
)  # fmt: skip
def test_malformed_payloads_say_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(payload)
    assert str(info.value).startswith(message)


# --- recording and deciding -------------------------------------------------------------------------------------


def test_the_same_webhook_three_times_counts_once(loop: Loop) -> None:
    outcomes = [loop.handle(parse_event(event(11))).status for _ in range(3)]
    assert outcomes == ["recorded", "unchanged", "unchanged"]
    assert loop.counter.pending(3) == 1
    assert loop.registry.projects() == [3]  # remembered durably for the reconciliation


def test_rejected_reviews_do_not_count_and_unrelated_actions_are_ignored(loop: Loop) -> None:
    assert loop.handle(parse_event(event(1, verdict="reject"))).status == "unchanged"
    assert loop.handle(parse_event({"action": "PROJECT_UPDATED", "project": {"id": 3}})).status == "ignored"
    assert loop.counter.pending(3) == 0


def test_crossing_the_threshold_queues_one_decision(loop: Loop, redis_client: redis.Redis) -> None:
    statuses = [loop.handle(parse_event(event(i))).status for i in range(1, 9)]
    assert statuses == ["recorded"] * 4 + ["queued"] + ["recorded"] * 3  # one decision queued at a time
    decisions = jobs(redis_client, "loop-test", DECIDE_JOB)
    assert [job.args for job in decisions] == [(3, False)]


def test_an_event_asks_for_a_reconciliation_when_the_last_one_is_old(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Reviews that sent no webhook (a bulk import) are counted soon after the next event."""
    loop = Loop(make_settings(min_new_reviews=50, queue_name="loop-test", reconcile_after=60), redis_client)
    assert loop.handle(parse_event(event(1))).status == "queued"  # never reconciled
    redis_client.delete(loop.decide_key(3))  # the decision ran ...
    loop.mark_reconciled(3)  # ... and reconciled
    assert loop.handle(parse_event(event(2))).status == "recorded"
    assert redis_client.ttl(loop.reconciled_key(3)) <= 60
    assert len(jobs(redis_client, "loop-test", DECIDE_JOB)) == 1


def test_start_training_queues_a_forced_decision(loop: Loop, redis_client: redis.Redis) -> None:
    assert loop.handle(parse_event({"action": "START_TRAINING", "project": {"id": 3}})).status == "queued"
    assert [job.args for job in jobs(redis_client, "loop-test", DECIDE_JOB)] == [(3, True)]


def test_the_trigger_needs_enough_reviews_unless_forced(loop: Loop, redis_client: redis.Redis) -> None:
    loop.counter.record(3, 1, reviewed=True)
    result = loop.maybe_train(3)
    assert (result.started, result.reason) == (False, "1 of 5 new reviews")
    forced = loop.maybe_train(3, force=True)
    assert forced.started and forced.run_id == "p3-r1"
    run = loop.registry.get_run("p3-r1")
    assert (run.status, run.trigger, run.reviews) == (RunStatus.QUEUED, "manual", 1)
    [job] = jobs(redis_client, "loop-test", TRAIN_JOB)
    assert job.args == ("p3-r1",) and job.id == run.job_id
    assert redis_client.get(loop.lock_key(3)) == b"p3-r1"


def test_the_cool_down_holds_a_due_project_back(make_settings: Callable[..., Settings], redis_client) -> None:
    loop = Loop(make_settings(min_new_reviews=1, cooldown_seconds=3600, queue_name="loop-test"), redis_client)
    loop.counter.record(3, 1, reviewed=True)
    first = loop.maybe_train(3)
    assert first.started
    loop.registry.update_run(first.run_id or "", status=RunStatus.PROMOTED)
    loop.release_lock(3, first.run_id or "")
    loop.counter.record(3, 2, reviewed=True)
    second = loop.maybe_train(3)
    assert not second.started and second.reason.startswith("cool-down: the next training can start in")
    assert redis_client.exists(loop.quiet_key(3))  # webhooks stop queueing decisions meanwhile
    assert not loop.request_decision(3)
    assert loop.maybe_train(3, force=True).started  # the Train button wins


def test_fifty_concurrent_triggers_start_one_training(loop: Loop, redis_client: redis.Redis) -> None:
    for aid in range(1, 51):
        loop.counter.record(3, aid, reviewed=True)
    barrier = threading.Barrier(50)

    def go(_: int) -> bool:
        racer = Loop(loop.settings, redis.Redis.from_url(loop.settings.redis_url))
        barrier.wait()
        return racer.maybe_train(3).started

    with ThreadPoolExecutor(50) as pool:
        started = list(pool.map(go, range(50)))
    assert started.count(True) == 1
    assert len(loop.registry.list_runs(3)) == 1
    assert len(jobs(redis_client, "loop-test", TRAIN_JOB)) == 1


def test_a_run_whose_worker_died_is_failed_and_frees_the_project(loop: Loop) -> None:
    for aid in range(1, 6):
        loop.counter.record(3, aid, reviewed=True)
    run_id = loop.maybe_train(3).run_id or ""
    loop.counter.take(3)
    loop.registry.update_run(run_id, status=RunStatus.TRAINING)
    loop.heartbeat(run_id, 3)
    assert loop.maybe_train(3, force=True).reason == f"run {run_id} is in flight"  # alive: single flight holds
    loop.redis.delete(loop.alive_key(run_id))  # the worker was SIGKILLed: no more heartbeats
    result = loop.maybe_train(3, force=True)
    assert result.started and result.run_id != run_id
    dead = loop.registry.get_run(run_id)
    assert dead.status is RunStatus.FAILED and "no heartbeat" in (dead.error or "")
    assert loop.counter.pending(3) == 5  # the reviews it took count again


def test_a_queued_run_whose_job_vanished_is_reaped(loop: Loop, redis_client: redis.Redis) -> None:
    run_id = loop.maybe_train(3, force=True).run_id or ""
    Job.fetch(loop.registry.get_run(run_id).job_id or "", connection=redis_client).delete()
    assert loop.reap_stale_runs() == [run_id]
    assert "is gone" in (loop.registry.get_run(run_id).error or "")
    assert not redis_client.exists(loop.lock_key(3))


def test_cancelling_a_queued_run(loop: Loop, redis_client: redis.Redis) -> None:
    run_id = loop.maybe_train(3, force=True).run_id or ""
    assert loop.cancel(run_id) == "cancelled"
    run = loop.registry.get_run(run_id)
    assert run.status is RunStatus.CANCELLED
    assert Job.fetch(run.job_id or "", connection=redis_client).get_status() == JobStatus.CANCELED
    assert not redis_client.exists(loop.lock_key(3))
    with pytest.raises(RegistryError, match="already cancelled"):
        loop.cancel(run_id)


# --- the endpoint ------------------------------------------------------------------------------------------------


@pytest.fixture
def app(make_settings: Callable[..., Settings], redis_client: redis.Redis) -> Flask:
    return create_app(
        make_settings(min_new_reviews=5, queue_name="loop-test", webhook_secret="s3cr3t", reconcile_after=0)
    )


def test_the_webhook_checks_the_shared_secret(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/webhook", json=event(1)).status_code == 401
    assert client.post("/webhook", json=event(1), headers={"X-Labelloop-Secret": "nope"}).status_code == 401
    ok = client.post("/webhook", json=event(1), headers={"X-Labelloop-Secret": "s3cr3t"})
    assert ok.status_code == 200
    assert ok.get_json() == {"action": "ANNOTATION_CREATED", "status": "recorded", "project": 3, "pending": 1}


def test_the_webhook_answers_other_actions_and_bad_bodies(app: Flask) -> None:
    client = app.test_client()
    headers = {"X-Labelloop-Secret": "s3cr3t"}
    ignored = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 3}, "tasks": []},
                          headers=headers)  # fmt: skip
    assert (ignored.status_code, ignored.get_json()["status"]) == (200, "ignored")
    bad = client.post("/webhook", data="not json", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"].startswith("webhook: expected a JSON object")


@pytest.fixture
def served(settings: Settings, redis_client: redis.Redis) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_fifty_concurrent_webhooks_crossing_the_threshold_train_once(
    served: str, settings: Settings, redis_client: redis.Redis
) -> None:
    use_settings(settings)
    with httpx.Client(timeout=10) as http, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: http.post(f"{served}/webhook", json=event(i)).status_code, range(1, 51)))
    assert answers == [200] * 50
    SimpleWorker([Queue("loop-test", connection=redis_client)], connection=redis_client).work(burst=True)
    from ml_backend.registry import Registry

    runs = Registry(settings.data_dir).list_runs(3)
    assert len(runs) == 1
    # No Label Studio is configured here, so the one training fails at its export, saying so.
    assert runs[0].status is RunStatus.FAILED
    assert "LABELLOOP_LS_URL and LABELLOOP_LS_API_KEY must be set" in (runs[0].error or "")
    assert Loop(settings, redis_client).counter.pending(3) == 50  # nothing was lost


def test_redis_down_answers_503_at_once_and_recording_resumes_when_it_returns(
    make_settings: Callable[..., Settings],
) -> None:
    with throwaway_redis() as (url, proc):
        settings = make_settings(redis_url=url, min_new_reviews=50)
        client = create_app(settings).test_client()
        assert client.post("/webhook", json=event(1)).status_code == 200
        proc.kill()
        proc.wait()
        started = time.monotonic()
        down = client.post("/webhook", json=event(2))
        took = time.monotonic() - started
        assert down.status_code == 503
        assert "Redis is unavailable" in down.get_json()["error"]
        print(f"503 after {took * 1000:.0f} ms")
        back = restart_redis(url)
        try:
            again = client.post("/webhook", json=event(3))
            assert again.status_code == 200
            # The restarted Redis kept nothing (no persistence): events 1 and 2 are gone until reconciled.
            assert again.get_json()["pending"] == 1
            assert Loop(settings, redis.Redis.from_url(url)).counter.reconcile(3, [1, 2, 3]).after == 3
        finally:
            back.kill()
            back.wait()


def test_a_redis_restart_between_two_webhooks_loses_neither(make_settings: Callable[..., Settings]) -> None:
    """The webhook records on a connection per thread: one that Redis closed while no event came (a restart) is
    replaced at once, not answered with a 503."""
    with throwaway_redis() as (url, proc):
        settings = make_settings(redis_url=url, min_new_reviews=50)
        client = create_app(settings).test_client()
        assert client.post("/webhook", json=event(1)).status_code == 200
        proc.kill()
        proc.wait()
        back = restart_redis(url)
        try:
            again = client.post("/webhook", json=event(2))
            assert again.status_code == 200, again.get_json()
            assert again.get_json()["pending"] == 1
        finally:
            back.kill()
            back.wait()
