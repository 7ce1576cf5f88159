"""What counts as a review, and the per-project counts in a real Redis: idempotent, snapshot/commit/restore,
reconciliation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from converters.annotations import review_verdict
from converters.label_config import parse_label_config
from converters.tasks import parse_task
from ml_backend.reviews import ReviewCounter, ReviewRule, has_choices_control, is_reviewed
from ml_backend.settings import Settings

REVIEWED_CONFIG = """<View><Image name="image" value="$image"/>
  <Choices name="colour" toName="image"><Choice value="red"/><Choice value="blue"/></Choices>
  <Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices></View>"""
PLAIN_CONFIG = """<View><Image name="image" value="$image"/><TextArea name="caption" toName="image"/></View>"""


def annotation(aid: int, *, verdict: str | None = None, cancelled: bool = False) -> dict:
    result = [{"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": ["red"]}}]
    if verdict is not None:
        result.append({"from_name": "review", "to_name": "image", "type": "choices", "value": {"choices": [verdict]}})
    return {"id": aid, "was_cancelled": cancelled, "result": result}


@pytest.fixture
def counter(redis_client: redis.Redis) -> ReviewCounter:
    return ReviewCounter(redis_client, "ll-test")


def test_the_rule_gates_on_the_review_control_only_when_the_config_has_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    assert ReviewRule.from_label_config(REVIEWED_CONFIG, settings) == ReviewRule("review", "accept")
    assert ReviewRule.from_label_config(PLAIN_CONFIG, settings) == ReviewRule(None, "accept")
    assert ReviewRule.from_label_config("<View", settings) == ReviewRule(None, "accept")
    assert not has_choices_control(REVIEWED_CONFIG.replace('Choices name="review"', 'Choices name="r"'), "review")


@pytest.mark.parametrize(
    ("ann", "gated", "plain"),
    [
        (annotation(1, verdict="accept"), True, True),
        (annotation(2, verdict="reject"), False, True),
        (annotation(3), False, True),  # no verdict yet: not reviewed where a review exists
        (annotation(4, verdict="accept", cancelled=True), False, False),  # skipped never counts
    ],
)
def test_reviewed_means_submitted_not_cancelled_and_accepted(ann: dict, gated: bool, plain: bool) -> None:
    assert is_reviewed(ann, ReviewRule("review", "accept")) is gated
    assert is_reviewed(ann, ReviewRule(None, "accept")) is plain


def test_the_count_agrees_with_the_exporters_review_verdict() -> None:
    config = parse_label_config(REVIEWED_CONFIG)
    for verdict in ("accept", "reject", None):
        raw = annotation(9, verdict=verdict)
        task = parse_task({"id": 1, "data": {"image": "x.png"}, "annotations": [raw]})
        exporter_says = review_verdict(task.annotations[0], config) == config.review_accept
        assert is_reviewed(raw, ReviewRule("review", "accept")) is exporter_says


def test_redelivery_changes_nothing(counter: ReviewCounter) -> None:
    assert counter.record(5, 101, reviewed=True)
    for _ in range(3):
        assert not counter.record(5, 101, reviewed=True)
    assert counter.pending(5) == 1
    assert counter.add_project(5)
    assert not counter.add_project(5)
    assert counter.projects() == {5}


def test_an_annotation_that_stops_being_a_review_leaves_the_count(counter: ReviewCounter) -> None:
    counter.record(5, 1, reviewed=True)
    counter.record(5, 2, reviewed=True)
    assert counter.record(5, 1, reviewed=False)  # updated to reject
    assert counter.forget(5, [2, 99]) == 1  # deleted
    assert counter.pending(5) == 0


def test_a_training_takes_the_pending_reviews_and_new_ones_count_toward_the_next(counter: ReviewCounter) -> None:
    for aid in range(1, 6):
        counter.record(5, aid, reviewed=True)
    assert counter.take(5) == 5
    assert counter.pending(5) == 0
    counter.record(5, 3, reviewed=True)  # a redelivery of a reviewed annotation the run took: not new
    counter.record(5, 6, reviewed=True)  # arrived during training
    assert counter.pending(5) == 1
    assert counter.commit(5) == 5
    counter.record(5, 2, reviewed=True)  # trained on already
    assert counter.pending(5) == 1


def test_a_failed_training_gives_its_reviews_back(counter: ReviewCounter) -> None:
    for aid in range(1, 4):
        counter.record(5, aid, reviewed=True)
    counter.take(5)
    counter.record(5, 4, reviewed=True)
    assert counter.restore(5) == 3
    assert counter.pending(5) == 4
    assert counter.inflight(5) == 0


def test_reconcile_recovers_lost_events_and_ignores_trained_ones(counter: ReviewCounter) -> None:
    counter.record(5, 1, reviewed=True)
    counter.take(5)
    counter.commit(5)  # 1 trained
    counter.record(5, 2, reviewed=True)
    counter.record(5, 3, reviewed=True)  # 3 was deleted in LS since
    result = counter.reconcile(5, [1, 2, 4, 5])  # 4 and 5: their webhooks were lost
    assert (result.before, result.after, result.reviewed) == (2, 3, 4)
    assert counter.pending(5) == 3
    assert counter.reconcile(6, []).after == 0
    assert counter.projects() == {5, 6}


def test_reconcile_handles_large_projects(counter: ReviewCounter) -> None:
    assert counter.reconcile(7, range(1, 12_001)).after == 12_000
