"""cache.py: predictions in a real Redis, keyed by task, task data, label config and model version."""

from __future__ import annotations

import logging

import pytest
import redis

from ml_backend.cache import PredictionCache, config_hash
from ml_backend.cache import redis_client as cache_client
from ml_backend.metrics import Metrics
from ml_backend.protocol import TaskInput, TaskPrediction
from ml_backend.regions import TextRegion

TASK = TaskInput(1, {"image": "a.png"})


def _prediction(task_id: int = 1) -> TaskPrediction:
    return TaskPrediction(task_id, (TextRegion("caption", "image", ("hi",), 0.5),), 0.5, "tiny@base", {"caption": 0.5})


def test_round_trip_with_ttl(redis_client: redis.Redis) -> None:
    metrics = Metrics()
    cache = PredictionCache(redis_client, prefix="t", ttl=60, metrics=metrics)
    key = cache.key(TASK, config_hash("<View/>"), "tiny@base")
    assert key.startswith("t:cache:")
    assert cache.get_many([key]) == [None]
    cache.put_many([(key, _prediction())])
    [hit] = cache.get_many([key])
    assert hit is not None and hit.cached and hit.to_ls() == _prediction().to_ls()
    assert 0 < redis_client.ttl(key) <= 60
    assert metrics.value("labelloop_cache_requests_total", {"result": "hit"}) == 1
    assert metrics.value("labelloop_cache_requests_total", {"result": "miss"}) == 1


@pytest.mark.parametrize(
    ("task", "config", "version"),
    [
        (TaskInput(2, {"image": "a.png"}), "<View/>", "tiny@base"),  # another task
        (TaskInput(1, {"image": "b.png"}), "<View/>", "tiny@base"),  # edited data
        (TASK, "<View></View>", "tiny@base"),  # edited label config
        (TASK, "<View/>", "tiny@v2"),  # a new adapter
    ],
)
def test_any_change_misses(redis_client: redis.Redis, task: TaskInput, config: str, version: str) -> None:
    cache = PredictionCache(redis_client, prefix="t", ttl=60)
    cache.put_many([(cache.key(TASK, config_hash("<View/>"), "tiny@base"), _prediction())])
    assert cache.get_many([cache.key(task, config_hash(config), version)]) == [None]


def test_errors_are_not_cached(redis_client: redis.Redis) -> None:
    cache = PredictionCache(redis_client, prefix="t", ttl=60)
    failed = TaskPrediction(1, model_version="tiny@base", error="image: 404")
    cache.put_many([("t:cache:x", failed), ("t:cache:y", TaskPrediction(2, deferred=True))])
    assert redis_client.keys("t:cache:*") == []


def test_ttl_zero_disables(redis_client: redis.Redis) -> None:
    cache = PredictionCache(redis_client, prefix="t", ttl=0)
    cache.put_many([("t:cache:x", _prediction())])
    assert not cache.enabled and cache.get_many(["t:cache:x"]) == [None]
    assert redis_client.keys("t:cache:*") == []


def test_redis_down_degrades_to_misses_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    dead = cache_client("redis://127.0.0.1:1/0")
    metrics = Metrics()
    cache = PredictionCache(dead, prefix="t", ttl=60, metrics=metrics, retry_after=0.0)
    with caplog.at_level(logging.WARNING, logger="ml_backend.cache"):
        assert cache.get_many(["a", "b"]) == [None, None]
        cache.put_many([("a", _prediction())])
        assert cache.get_many(["a"]) == [None]
    assert len([r for r in caplog.records if "predicting without the cache" in r.getMessage()]) == 1
    assert metrics.value("labelloop_cache_requests_total", {"result": "error"}) == 4


def test_after_a_failure_redis_is_left_alone_for_a_while() -> None:
    calls: list[str] = []

    class Flaky:
        def mget(self, keys: list[str]) -> list[None]:
            calls.append("mget")
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    cache = PredictionCache(Flaky(), prefix="t", ttl=60, retry_after=3600)  # type: ignore[arg-type]
    assert cache.get_many(["a"]) == [None]
    assert cache.get_many(["a"]) == [None]
    assert calls == ["mget"]  # the second lookup did not wait on a dead Redis
