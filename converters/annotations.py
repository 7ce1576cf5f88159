"""Which annotation of a task counts as its label.

Rules, in order:

1. Cancelled (skipped) annotations never count.
2. When the label config has a review control (``<Choices name="review">``, see
   :attr:`~converters.label_config.LabelConfig.review`), only annotations whose review choice is the accept value
   count; an annotation without a verdict is not reviewed yet and does not count either.
3. Among what is left, a ground-truth annotation wins when ``prefer_ground_truth`` is set.
4. Otherwise the latest wins: by ``updated_at``, then ``created_at``, then id, then position.

Predictions are not annotations and are never considered.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from converters.errors import ConvertError
from converters.label_config import LabelConfig
from converters.tasks import Annotation, Task

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def review_verdict(annotation: Annotation, config: LabelConfig) -> str | None:
    """The review choice of ``annotation`` (e.g. ``accept``), or None when it has none or the config has no review."""
    if config.review is None:
        return None
    for region in annotation.regions_of(config.review.name):
        if region.choices:
            return region.choices[0]
    return None


def select_annotation(task: Task, config: LabelConfig, *, prefer_ground_truth: bool = True) -> Annotation:
    """The annotation that labels ``task`` (see the module rules).

    Raises:
        ConvertError: no annotation counts; ``reason`` is ``no_annotation``, ``cancelled`` or ``not_accepted``
            and the message says what the task had (e.g. ``task 7: no accepted annotation: 1 cancelled,
            1 review=reject``).
    """
    if not task.annotations:
        detail = f" ({task.prediction_count} predictions, which are never labels)" if task.prediction_count else ""
        raise ConvertError(f"task {task.id}: no annotation{detail}", reason="no_annotation")
    live = [annotation for annotation in task.annotations if not annotation.was_cancelled]
    if not live:
        raise ConvertError(
            f"task {task.id}: every annotation is cancelled ({len(task.annotations)})", reason="cancelled"
        )
    if config.review is not None:
        verdicts = Counter(review_verdict(annotation, config) for annotation in live)
        live = [annotation for annotation in live if review_verdict(annotation, config) == config.review_accept]
        if not live:
            cancelled = len(task.annotations) - sum(verdicts.values())
            parts = [f"{cancelled} cancelled"] if cancelled else []
            for verdict, count in sorted(verdicts.items(), key=lambda item: str(item[0])):
                parts.append(f"{count} not reviewed" if verdict is None else f"{count} {config.review.name}={verdict}")
            raise ConvertError(
                f"task {task.id}: no accepted annotation ({', '.join(parts)})",
                reason="not_accepted",
            )
    if prefer_ground_truth and any(annotation.ground_truth for annotation in live):
        live = [annotation for annotation in live if annotation.ground_truth]
    return max(live, key=_recency)


def _recency(annotation: Annotation) -> tuple[datetime, datetime, int, int]:
    return (
        _aware(annotation.updated_at or annotation.created_at),
        _aware(annotation.created_at),
        annotation.id if annotation.id is not None else -1,
        annotation.index,
    )


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return _EPOCH
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
