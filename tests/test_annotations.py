"""Which annotation counts: cancelled never, review gate, ground truth first, then the latest."""

from __future__ import annotations

from typing import Any

import pytest

from converters.annotations import review_verdict, select_annotation
from converters.errors import ConvertError
from converters.label_config import parse_label_config
from converters.samples import LabelStudioExport
from converters.tasks import parse_task

WITH_REVIEW = parse_label_config(
    '<View><Image name="image" value="$image"/><TextArea name="caption" toName="image"/>'
    '<Choices name="review" toName="image"><Choice value="accept"/><Choice value="reject"/></Choices></View>'
)
WITHOUT_REVIEW = parse_label_config(
    '<View><Image name="image" value="$image"/><TextArea name="caption" toName="image"/></View>'
)


def task_with(*annotations: dict[str, Any], predictions: int = 0) -> Any:
    ls = LabelStudioExport()
    preds = [ls.prediction([ls.textarea("caption", "guess")]) for _ in range(predictions)]
    return parse_task(ls.task({"image": "a.png"}, list(annotations), preds))


def caption(ls: LabelStudioExport, text: str, verdict: str | None = None, **kwargs: Any) -> dict[str, Any]:
    result = [ls.textarea("caption", text)] + ([ls.choice("review", verdict)] if verdict else [])
    return ls.annotation(result, **kwargs)


def chosen_text(task: Any, config: Any, **kwargs: Any) -> str:
    return select_annotation(task, config, **kwargs).regions[0].text[0]


def test_the_latest_non_cancelled_annotation_counts_without_a_review_control() -> None:
    ls = LabelStudioExport()
    task = task_with(caption(ls, "old"), caption(ls, "new"), caption(ls, "skipped", cancelled=True))
    assert chosen_text(task, WITHOUT_REVIEW) == "new"


def test_only_accepted_annotations_count_when_the_config_has_a_review() -> None:
    ls = LabelStudioExport()
    task = task_with(caption(ls, "accepted", "accept"), caption(ls, "rejected later", "reject"), caption(ls, "pending"))
    assert chosen_text(task, WITH_REVIEW) == "accepted"
    assert review_verdict(task.annotations[1], WITH_REVIEW) == "reject"
    assert review_verdict(task.annotations[2], WITH_REVIEW) is None


def test_updated_at_decides_between_accepted_annotations() -> None:
    ls = LabelStudioExport()
    first, second = caption(ls, "first", "accept"), caption(ls, "second", "accept")
    first["updated_at"] = "2030-01-01T00:00:00Z"  # edited after the second one was made
    assert chosen_text(task_with(first, second), WITH_REVIEW) == "first"


def test_ground_truth_wins_unless_switched_off() -> None:
    ls = LabelStudioExport()
    task = task_with(caption(ls, "truth", "accept", ground_truth=True), caption(ls, "newer", "accept"))
    assert chosen_text(task, WITH_REVIEW) == "truth"
    assert chosen_text(task, WITH_REVIEW, prefer_ground_truth=False) == "newer"


@pytest.mark.parametrize(
    ("annotations", "config", "reason", "message"),
    [
        ([], WITHOUT_REVIEW, "no_annotation", "task 1: no annotation (2 predictions, which are never labels)"),
        ([("x", None, True), ("y", None, True)], WITHOUT_REVIEW, "cancelled", "task 1: every annotation is cancelled (2)"),
        ([("x", "reject", False), ("y", None, False), ("z", None, True)], WITH_REVIEW, "not_accepted",
         "task 1: no accepted annotation (1 cancelled, 1 not reviewed, 1 review=reject)"),
    ],
)  # fmt: skip
def test_tasks_without_a_counting_annotation_say_why(
    annotations: list[tuple[str, str | None, bool]], config: Any, reason: str, message: str
) -> None:
    ls = LabelStudioExport()
    task = task_with(
        *[caption(ls, text, verdict, cancelled=cancelled) for text, verdict, cancelled in annotations], predictions=2
    )
    with pytest.raises(ConvertError) as info:
        select_annotation(task, config)
    assert (info.value.reason, str(info.value)) == (reason, message)
